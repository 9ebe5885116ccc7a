export {
  type AssignmentEvent,
  createThrottledConsumer,
  type DeadLetterEvent,
  type ThrottledConsumer,
  type ThrottledConsumerEvents,
  type ThrottledConsumerStats,
} from './consumer.js'
export { DEAD_LETTER_HEADERS } from './dead-letter.js'
export { type DeadLetterReason, FAIR_SCAN_LANES, type LaneBreakers, type LaneSlots } from './dispatcher.js'
export { jsonDecoder, type MerchantKeySource } from './message-key.js'
export type {
  ConsumerLimiter,
  KafkaClients,
  RetryBackoff,
  ThrottledConsumerOptions,
  ThrottledMessage,
} from './options.js'
