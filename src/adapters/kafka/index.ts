export { BACKLOG_MERCHANTS, type MerchantBacklog } from './backlog.js'
export { createThrottledConsumer } from './consumer.js'
export type {
  AssignmentEvent,
  DeadLetterEvent,
  ThrottledConsumer,
  ThrottledConsumerEvents,
  ThrottledConsumerStats,
} from './consumer-api.js'
export { DEAD_LETTER_HEADERS, type DeadLetterReason } from './dead-letter.js'
export { FAIR_SCAN_LANES, LATE_TOLERANCE_MS } from './dispatcher.js'
export type { LaneBreakers, LaneSlots } from './gate.js'
export { jsonDecoder, type MerchantKeySource } from './message-key.js'
export type {
  ConsumerLimiter,
  KafkaClients,
  ParkingOptions,
  RetryBackoff,
  ThrottledConsumerOptions,
  ThrottledMessage,
} from './options.js'
export { PARK_HEADERS } from './parking.js'
