export {
  type AssignmentEvent,
  createThrottledConsumer,
  type DeadLetterEvent,
  type ThrottledConsumer,
  type ThrottledConsumerEvents,
  type ThrottledConsumerStats,
} from './consumer.js'
export { DEAD_LETTER_HEADERS } from './dead-letter.js'
export type { DeadLetterReason } from './dispatcher.js'
export { jsonDecoder, type KeySource } from './message-key.js'
export type {
  Backoff,
  ConsumerLimiter,
  KafkaClients,
  ThrottledConsumerOptions,
  ThrottledMessage,
} from './options.js'
