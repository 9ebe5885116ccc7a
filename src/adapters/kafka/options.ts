import type { Admin, Consumer, ConsumerConfig, KafkaMessage, Producer, ProducerConfig } from 'kafkajs'
import type { Logger } from 'pino'
import { backoffMs } from '../../limiter/backoff.js'
import type { LimitKeys } from '../../limiter/index.js'
import type { LaneLimiter } from './dispatcher.js'
import type { LaneBreakers, LaneSlots } from './gate.js'
import type { MerchantKeySource } from './message-key.js'

/**
 * KafkaClients makes the consumer, the dead-letter producer and, with parking, the
 * transactional producer and an admin (to read the parking state kept in the group's
 * commit metadata); a `Kafka` instance is one.
 */
export interface KafkaClients {
  consumer(config: ConsumerConfig): Consumer
  producer(config?: ProducerConfig): Producer
  admin?(): Admin
}

/**
 * ParkingOptions turn on the parking path: a merchant whose lane is full has its further
 * messages moved, in order, to a parking topic, so its partition keeps flowing for the
 * other merchants on it. See the README's "Standing backlogs on Kafka".
 */
export interface ParkingOptions {
  /**
   * topics maps each source topic to its parking topic. A parking topic must exist (the
   * consumer never creates topics), with a multiple of the source topic's partitions:
   * perSource = parking partitions / source partitions parking partitions per source
   * partition (16 or more keeps two hot merchants of one partition apart, 15 times in 16).
   */
  topics: Record<string, string>
  /**
   * maxBufferedPerMerchant bounds one merchant's lane on a parking partition. A fetched
   * batch is taken whole, then the parking partition pauses while one of its lanes holds
   * more, until that lane is down to half. Large enough to hold a merchant's rate for the
   * time a resumed partition takes to fetch again (about 0.5 s). Default 2 000.
   */
  maxBufferedPerMerchant?: number
  /** maxBatch is the most messages moved in one transaction. Default 500. */
  maxBatch?: number
  /**
   * transactionTimeoutMs is the parking transactions' timeout: after a crash in the middle
   * of a move the broker aborts it after this long, and until then the parking partition's
   * readers wait. Default 10 000.
   */
  transactionTimeoutMs?: number
}

/**
 * ConsumerLimiter is what the consumer needs of a KeyedLimiter: reservations, penalties
 * for Retry-After, its clock (waits are timed on it) and, when the limit is shared across
 * the group's members, setShare.
 */
export interface ConsumerLimiter extends LaneLimiter {
  setShare(instances: number): void
  /**
   * inspect tells a merchant's tokens: a full lane is parked only when they are fewer than
   * its messages (without inspect, every full lane is parked).
   */
  inspect?(key: string): { readonly tokens: number } | undefined
}

/** ThrottledMessage is what the handler gets: one message, its merchant and its decoded value. */
export interface ThrottledMessage<T> {
  merchantKey: string
  topic: string
  partition: number
  /** offset of the message in its partition, as kafkajs gives it (a decimal string). */
  offset: string
  /** message is the raw kafkajs message: key, value, headers, timestamp. */
  message: KafkaMessage
  /** value is the decoded value (the raw Buffer or null without a decoder). */
  value: T
  /** attempt is 1 on the first call, 2 on the first retry, and so on. */
  attempt: number
  /**
   * signal aborts when the result can no longer count: the partition was revoked, or the
   * consumer is stopping and its deadline passed. The message will be delivered again.
   */
  signal: AbortSignal
}

/** RetryBackoff shapes the wait between failed attempts: initialMs, doubling, capped at maxMs. */
export interface RetryBackoff {
  /** initialMs is the wait after the first failure. Default 200. */
  initialMs?: number
  /** maxMs caps the wait. Default 30 000. */
  maxMs?: number
}

/** ThrottledConsumerOptions configure createThrottledConsumer. */
export interface ThrottledConsumerOptions<T = Buffer | null> {
  /** kafka makes the kafkajs consumer and the dead-letter producer (a `Kafka` instance). */
  kafka: KafkaClients
  groupId: string
  topics: string[]
  /** fromBeginning: where a group with no committed offset starts. Default false (latest). */
  fromBeginning?: boolean
  limiter: ConsumerLimiter
  /**
   * handler does the work for one message. It resolves when done; RetryLaterError asks for
   * a retry after its delay (no attempt spent; the merchant's rate is lowered for a while);
   * any other error is retried with backoff up to maxAttempts, then dead-lettered.
   */
  handler: (message: ThrottledMessage<T>) => Promise<void>
  /**
   * inFlight counts each merchant's jobs in flight and holds it to its `maxInFlight`
   * (an InFlightTable; share one per process). A lane whose merchant is at its cap waits
   * without a slot, a token or an attempt, and is scheduled when one of the merchant's jobs
   * ends; the next lane to start is the one whose merchant has the fewest in flight.
   */
  inFlight?: LaneSlots
  /**
   * breakers: per-merchant circuit breakers (CircuitBreakers). While a merchant's breaker
   * is open its lanes wait, not attempted; each attempt's outcome is reported to it.
   */
  breakers?: LaneBreakers
  /** isEndpointFailure says whether a handler error counts against the breaker. Default: RetryableFailureError. */
  isEndpointFailure?: (error: unknown) => boolean
  /** keyOf says where the merchant key is. Default: the message key. */
  keyOf?: MerchantKeySource<T>
  /**
   * limitKeys gives the keys a message's tokens are taken from, outermost first (e.g.
   * `['psp:adyen', 'psp:adyen:m_42']`), from its merchant key and its decoded value (as the
   * handler gets it): one decision charges every key or none. Default: the merchant key
   * alone. Only the limiter's decisions take them; lanes, order, parking, in-flight caps and
   * breakers stay per merchant, and a Retry-After penalizes the innermost key. A throw or a
   * bad list (empty, more than 4, a repeat, a bad key) dead-letters the message as
   * `invalid-key`, as a bad merchant key does.
   */
  limitKeys?: (merchantKey: string, value: T) => LimitKeys
  /**
   * decode turns the raw value into what the handler gets; a throw dead-letters the
   * message as `undecodable`. Default: the raw Buffer, or JSON when keyOf is a `field`.
   */
  decode?: (value: Buffer | null, message: KafkaMessage) => T
  /** deadLetterTopic receives messages that cannot be handled, with headers saying why. */
  deadLetterTopic: string
  /** concurrency is the most handlers running at once, over all partitions. Default 100. */
  concurrency?: number
  /**
   * maxBufferedPerMerchant bounds one merchant's lane on a source partition (messages held,
   * the running one included) when the merchant is behind: its bucket holds fewer tokens
   * than its lane messages, or it waits for a retry, its breaker or its in-flight cap. A
   * merchant whose limit does not bind may hold a whole fetch, up to maxBufferedPerPartition.
   * With parking on, a merchant behind has its further messages parked;
   * without, the partition pauses until the lane is down to half (the last resort: every
   * merchant on the partition waits). Default 100 with parking, maxBufferedPerPartition without.
   */
  maxBufferedPerMerchant?: number
  /**
   * maxBufferedBytes bounds the bytes of the messages held over all partitions (key, value
   * and headers, plus a fixed 128 per message). Past it, source messages are parked (with
   * parking on) and partitions are paused (parking partitions, or all without parking) until
   * the buffer is below 90% of it. Default 64 MiB.
   */
  maxBufferedBytes?: number
  /** parking turns on the parking path (see ParkingOptions). Default: off. */
  parking?: ParkingOptions
  /**
   * maxBufferedPerPartition bounds the messages held per partition (waiting, running or
   * being dead-lettered; messages on their way to the parking topic count only against
   * maxBufferedBytes). It is checked after each fetched batch, which is taken whole: at
   * the bound the partition is paused (so it holds at most the bound plus one fetch, see
   * consumerConfig.maxBytesPerPartition); it resumes when half are done. While a partition
   * is paused, every merchant on it waits. Default 5 000.
   */
  maxBufferedPerPartition?: number
  /** commitIntervalMs is how often watermarks are committed. Default 1 000. */
  commitIntervalMs?: number
  /** maxAttempts is the most handler calls per message before dead-lettering. Default 5. */
  maxAttempts?: number
  backoff?: RetryBackoff
  /** stopTimeoutMs is how long stop() waits for in-flight handlers. Default 10 000. */
  stopTimeoutMs?: number
  /**
   * shareLimitAcrossMembers makes each member enforce 1/members of every rate (limiter
   * setShare, updated on each rebalance). Use it when a merchant's messages are spread over
   * partitions. Default: true when keyOf is not the message key.
   */
  shareLimitAcrossMembers?: boolean
  /**
   * consumerConfig is passed to kafkajs (groupId aside). maxWaitTimeInMs defaults to 250
   * here, not 5 000: while every partition of a broker is paused kafkajs sleeps that long
   * between fetches, so it bounds how long a resumed partition (and stop()) waits.
   */
  consumerConfig?: Omit<ConsumerConfig, 'groupId'>
  /** producerConfig is passed to kafkajs for the dead-letter producer. */
  producerConfig?: ProducerConfig
  /** maxKeyLength bounds a merchant key. Default 128 (as the limiter). */
  maxKeyLength?: number
  logger?: Logger
}

/** ResolvedOptions are the options after defaults and checks. */
export interface ResolvedOptions<T> extends ThrottledConsumerOptions<T> {
  keyOf: MerchantKeySource<T>
  concurrency: number
  maxBufferedPerMerchant: number
  maxBufferedBytes: number
  parking: Required<ParkingOptions> | undefined
  maxBufferedPerPartition: number
  commitIntervalMs: number
  maxAttempts: number
  stopTimeoutMs: number
  shareLimitAcrossMembers: boolean
  retryDelayMs: (attempt: number) => number
}

/** WHERE names the caller in every option error. */
const WHERE = 'createThrottledConsumer'

/** resolveOptions checks `options` and fills in defaults; a bad option throws TypeError. */
export function resolveOptions<T>(options: ThrottledConsumerOptions<T>): ResolvedOptions<T> {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`${WHERE}: expected an options object, got ${typeof options}`)
  }
  if (typeof options.kafka?.consumer !== 'function' || typeof options.kafka.producer !== 'function') {
    throw new TypeError(
      `${WHERE}: expected kafka to make consumers and producers, got ${typeof options.kafka}`,
    )
  }
  checkText(options.groupId, 'groupId')
  checkText(options.deadLetterTopic, 'deadLetterTopic')
  if (!Array.isArray(options.topics) || options.topics.length === 0) {
    throw new TypeError(`${WHERE}: expected topics to be a non-empty array, got ${String(options.topics)}`)
  }
  for (const topic of options.topics) checkText(topic, 'topics[]')
  if (options.topics.includes(options.deadLetterTopic)) {
    throw new TypeError(`${WHERE}: expected deadLetterTopic outside topics, got ${options.deadLetterTopic}`)
  }
  if (typeof options.handler !== 'function') {
    throw new TypeError(`${WHERE}: expected handler to be a function, got ${typeof options.handler}`)
  }
  const limiter = options.limiter
  if (
    typeof limiter?.reserveIn !== 'function' ||
    typeof limiter.cancelIn !== 'function' ||
    typeof limiter.tryAcquire !== 'function' ||
    typeof limiter.penalize !== 'function'
  ) {
    throw new TypeError(`${WHERE}: expected limiter to be a KeyedLimiter, got ${typeof limiter}`)
  }
  const keyOf = options.keyOf ?? 'message-key'
  checkKeySource(keyOf)
  if (options.limitKeys !== undefined && typeof options.limitKeys !== 'function') {
    throw new TypeError(`${WHERE}: expected limitKeys to be a function, got ${typeof options.limitKeys}`)
  }
  const initialMs = options.backoff?.initialMs ?? 200
  const maxMs = options.backoff?.maxMs ?? 30_000
  checkNumber(initialMs, 'backoff.initialMs', 0)
  checkNumber(maxMs, 'backoff.maxMs', initialMs)
  const resolved: ResolvedOptions<T> = {
    ...options,
    keyOf,
    concurrency: options.concurrency ?? 100,
    maxBufferedPerMerchant:
      options.maxBufferedPerMerchant ??
      (options.parking === undefined ? (options.maxBufferedPerPartition ?? 5_000) : 100),
    maxBufferedBytes: options.maxBufferedBytes ?? 64 * 1024 * 1024,
    parking: resolveParking(options),
    maxBufferedPerPartition: options.maxBufferedPerPartition ?? 5_000,
    commitIntervalMs: options.commitIntervalMs ?? 1_000,
    maxAttempts: options.maxAttempts ?? 5,
    stopTimeoutMs: options.stopTimeoutMs ?? 10_000,
    shareLimitAcrossMembers: options.shareLimitAcrossMembers ?? keyOf !== 'message-key',
    retryDelayMs: (attempt) => backoffMs(attempt, { baseMs: initialMs, maxMs, jitter: 0 }),
  }
  checkInteger(resolved.concurrency, 'concurrency', 1)
  checkInteger(resolved.maxBufferedPerPartition, 'maxBufferedPerPartition', 1)
  checkInteger(resolved.maxBufferedPerMerchant, 'maxBufferedPerMerchant', 1)
  checkInteger(resolved.maxBufferedBytes, 'maxBufferedBytes', 1024)
  checkNumber(resolved.commitIntervalMs, 'commitIntervalMs', 1)
  checkInteger(resolved.maxAttempts, 'maxAttempts', 1)
  checkNumber(resolved.stopTimeoutMs, 'stopTimeoutMs', 0)
  if (resolved.shareLimitAcrossMembers && typeof limiter.setShare !== 'function') {
    throw new TypeError(`${WHERE}: expected a limiter with setShare to share limits, got none`)
  }
  return resolved
}

/** resolveParking checks the parking options, if any, and fills in their defaults. */
function resolveParking<T>(options: ThrottledConsumerOptions<T>): Required<ParkingOptions> | undefined {
  const parking = options.parking
  if (parking === undefined) return undefined
  if (typeof options.kafka.admin !== 'function') {
    throw new TypeError(`${WHERE}: expected kafka to make admins for parking, got none`)
  }
  const topics = parking.topics
  if (typeof topics !== 'object' || topics === null || Object.keys(topics).length === 0) {
    throw new TypeError(
      `${WHERE}: expected parking.topics to map source topics to parking topics, got ${String(topics)}`,
    )
  }
  const parkingTopics = new Set<string>()
  for (const [source, target] of Object.entries(topics)) {
    if (!options.topics.includes(source)) {
      throw new TypeError(`${WHERE}: expected parking.topics keys among topics, got ${source}`)
    }
    checkText(target, `parking.topics.${source}`)
    if (options.topics.includes(target) || target === options.deadLetterTopic || parkingTopics.has(target)) {
      throw new TypeError(`${WHERE}: expected parking topics apart from the others, got ${target} twice`)
    }
    parkingTopics.add(target)
  }
  const resolved = {
    topics,
    maxBufferedPerMerchant: parking.maxBufferedPerMerchant ?? 2_000,
    maxBatch: parking.maxBatch ?? 500,
    transactionTimeoutMs: parking.transactionTimeoutMs ?? 10_000,
  }
  checkInteger(resolved.maxBufferedPerMerchant, 'parking.maxBufferedPerMerchant', 1)
  checkInteger(resolved.maxBatch, 'parking.maxBatch', 1)
  checkInteger(resolved.transactionTimeoutMs, 'parking.transactionTimeoutMs', 1_000)
  return resolved
}

function checkText(value: unknown, name: string): void {
  if (typeof value !== 'string' || value.length === 0) {
    throw new TypeError(`${WHERE}: expected ${name} to be a non-empty string, got ${String(value)}`)
  }
}

function checkNumber(value: unknown, name: string, min: number): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new TypeError(`${WHERE}: expected ${name} to be a number >= ${min}, got ${String(value)}`)
  }
}

function checkInteger(value: unknown, name: string, min: number): void {
  if (!Number.isSafeInteger(value) || (value as number) < min) {
    throw new TypeError(`${WHERE}: expected ${name} to be an integer >= ${min}, got ${String(value)}`)
  }
}

function checkKeySource(source: unknown): void {
  if (source === 'message-key' || typeof source === 'function') return
  if (typeof source === 'object' && source !== null) {
    const header = (source as { header?: unknown }).header
    const field = (source as { field?: unknown }).field
    if (typeof header === 'string' && header.length > 0) return
    if (typeof field === 'string' && field.length > 0) return
  }
  throw new TypeError(
    `${WHERE}: expected keyOf to be 'message-key', { header }, { field } or a function, got ${JSON.stringify(source)}`,
  )
}
