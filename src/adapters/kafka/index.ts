export {
  type AssignmentEvent,
  BACKLOG_MERCHANTS,
  createThrottledConsumer,
  type DeadLetterEvent,
  type MerchantBacklog,
  type ThrottledConsumer,
  type ThrottledConsumerEvents,
  type ThrottledConsumerStats,
} from './consumer.js'
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
