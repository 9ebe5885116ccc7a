import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { Consumer, Kafka, KafkaMessage } from 'kafkajs'
import { type Logger, pino } from 'pino'
import { backoffMs } from '../limiter/backoff.js'
import { CatchUp, type PartitionOffsets } from './catch-up.js'
import { DeadLetterForwarder } from './dead-letter.js'
import { logControlEvents } from './log.js'
import { ReadOnce } from './read-once.js'
import { handleControlRecord, type RecordHandling } from './record.js'
import { type ControlLimits, resolveLimits } from './schema.js'
import { createSignatureVerifier, type SigningKey } from './signing.js'
import {
  type ControlEvent,
  ControlState,
  type ControlStats,
  type ControlTable,
  type RateTarget,
} from './state.js'
import { DEFAULT_CONTROL_TOPIC } from './topic.js'

export { REJECT_ERROR_HEADER, REJECT_REASON_HEADER } from './dead-letter.js'

/** KafkaControlSourceOptions configure createKafkaControlSource. */
export interface KafkaControlSourceOptions {
  /** kafka is the client the source makes its admin, consumer and (for dead letters) producer from. */
  kafka: Kafka
  /** topic: the compacted control topic (DEFAULT_CONTROL_TOPIC by default). */
  topic?: string
  /** limiter receives each accepted change as one synchronous `apply`; without one the source only keeps the table (throttlectl). */
  limiter?: RateTarget
  /** signingKeys: when any are given, every record must be signed by one of them. */
  signingKeys?: readonly SigningKey[]
  /**
   * deadLetterTopic receives a copy of every rejected record, keyed `topic:partition:offset`
   * so that the copies several workers make collapse when the topic is compacted.
   */
  deadLetterTopic?: string
  limits?: Partial<ControlLimits>
  /** groupIdPrefix names the consumer group, which is unique per source: `<prefix>-<host>-<pid>-<random>`. */
  groupIdPrefix?: string
  /**
   * maxWaitTimeInMs is how long the broker holds a fetch that has no data (100 ms by
   * default; kafkajs's own default is 5000). A new record answers a waiting fetch at
   * once either way; the shorter wait bounds how long stop() and reconnects take.
   */
  maxWaitTimeInMs?: number
  /**
   * maxRetryTimeMs caps the backoff between reconnect attempts, kafkajs's own and the
   * source's restarts of a crashed consumer (5000 ms by default; kafkajs's is 30 000).
   */
  maxRetryTimeMs?: number
  /**
   * sessionTimeoutMs is the consumer's group session (10 000 ms by default; kafkajs's own
   * is 30 000; at least 6000, the broker's default minimum). A group that outlives its
   * member (a broker restart keeps it) holds a new join until the old member times out.
   */
  sessionTimeoutMs?: number
  /** wallNow is the wall clock for the table's change times, in ms since the epoch. */
  wallNow?: () => number
  logger?: Logger
}

/** KafkaControlStats add the source's own counters to the ordering counters. */
export interface KafkaControlStats extends ControlStats {
  caughtUp: boolean
  /** reread counts records read again after a rebalance or a restart and passed over (see ReadOnce). */
  reread: number
  /** deadLettered counts records copied to the dead-letter topic; deadLetterFailures the copies that failed. */
  deadLettered: number
  deadLetterFailures: number
  /** crashes counts kafkajs consumer crashes; restarts the new consumers that replaced a crashed one. */
  crashes: number
  restarts: number
}

/** KafkaControlSource reads the control topic and keeps the limiter's rates in step with it. */
export interface KafkaControlSource {
  /**
   * start reads the high-water marks, then starts consuming from the beginning. Resolves
   * once the consumer runs; `ready` says when it has caught up. Rejects when the topic
   * does not exist or the broker cannot be reached. A source starts once.
   */
  start(): Promise<void>
  /** stop disconnects; rates in force stay. `ready`, if still pending, rejects. */
  stop(): Promise<void>
  /** ready resolves once every partition has been read up to its high-water mark at start. */
  readonly ready: Promise<void>
  caughtUp(): boolean
  stats(): KafkaControlStats
  table(): ControlTable
  /** subscribe calls `listener` with every applied, stale, rejected or forgotten record. */
  subscribe(listener: (event: ControlEvent) => void): () => void
  /** state is the ordering state, for callers that need versions (throttlectl). */
  readonly state: ControlState
}

/**
 * createKafkaControlSource reads the compacted control topic from the beginning at every
 * start, under a consumer group of its own with auto-commit off: nothing is ever
 * committed, so no commit can skip history, and every worker arrives at the same table.
 * Each record is applied in one synchronous step. A bad record is logged with its
 * reason, counted, optionally copied to a dead-letter topic, and never stops the source.
 * A crashed consumer is replaced (see RestartingConsumer).
 */
export function createKafkaControlSource(options: KafkaControlSourceOptions): KafkaControlSource {
  const topic = options.topic ?? DEFAULT_CONTROL_TOPIC
  const timing = {
    maxWaitTimeInMs: durationOption('maxWaitTimeInMs', options.maxWaitTimeInMs, 100, 0),
    maxRetryTimeMs: durationOption('maxRetryTimeMs', options.maxRetryTimeMs, 5_000, 300),
    sessionTimeoutMs: durationOption('sessionTimeoutMs', options.sessionTimeoutMs, 10_000, 6_000),
  }
  const logger = (options.logger ?? pino({ level: 'silent' })).child({
    component: 'control',
    source: 'kafka',
    topic,
  })
  const state = new ControlState({ target: options.limiter, wallNow: options.wallNow, logger })
  logControlEvents(state, logger)
  const deadLetters = new DeadLetterForwarder(options.kafka, topic, options.deadLetterTopic, logger)
  state.subscribe((event) => {
    if (event.kind === 'rejected') deadLetters.forward(event)
  })
  const handling: RecordHandling = {
    limits: resolveLimits(options.limits),
    verify: createSignatureVerifier(options.signingKeys ?? []),
  }
  const catchUp = new CatchUp((partitions) =>
    logger.info({ partitions, ...state.stats() }, 'control topic read up to its high-water marks: caught up'),
  )
  // Whoever awaits `ready` sees a rejection; this keeps one nobody awaits from crashing the process.
  catchUp.ready.catch((error: Error) =>
    logger.debug({ err: error }, 'control source stopped before it caught up'),
  )
  const readOnce = new ReadOnce()
  const consumer = new RestartingConsumer({
    kafka: options.kafka,
    topic,
    groupPrefix: `${options.groupIdPrefix ?? 'merchant-throttle-control'}-${hostname()}-${process.pid}`,
    ...timing,
    logger,
    onBatchEnd: (partition, lastOffset) => catchUp.advance(partition, lastOffset),
    onMessage: (partition, message) => {
      if (!readOnce.first(partition, message.offset)) return
      deadLetters.handling(partition, message, () => {
        handleControlRecord(state, message, handling, { source: 'kafka', partition, offset: message.offset })
      })
      catchUp.advance(partition, message.offset)
    },
  })
  let started = false

  return {
    state,
    ready: catchUp.ready,
    async start() {
      if (started) {
        throw new TypeError('KafkaControlSource.start: expected a new source, got one already started')
      }
      started = true
      const offsets = await readHighWaterMarks(options.kafka, topic)
      await deadLetters.start()
      logger.info({ partitions: offsets.length }, 'reading the control topic from the beginning')
      catchUp.target(offsets)
      await consumer.start()
    },
    async stop() {
      catchUp.abandon(new Error('control source stopped before it caught up'))
      await consumer.stop()
      await deadLetters.stop()
    },
    caughtUp: () => catchUp.caughtUp(),
    stats: () => ({
      ...state.stats(),
      caughtUp: catchUp.caughtUp(),
      reread: readOnce.reread(),
      ...deadLetters.stats(),
      ...consumer.stats(),
    }),
    table: () => state.table(),
    subscribe: (listener) => state.subscribe(listener),
  }
}

/** durationOption is `value` (or `fallback` when absent), checked to be a finite number of ms >= `min`. */
function durationOption(name: string, value: number | undefined, fallback: number, min: number): number {
  const ms = value ?? fallback
  if (!Number.isFinite(ms) || ms < min) {
    throw new TypeError(
      `createKafkaControlSource: expected ${name} to be a finite number >= ${min}, got ${ms}`,
    )
  }
  return ms
}

/**
 * readHighWaterMarks reads the offsets of every partition of `topic` as they are now; it
 * rejects, saying how to create it, when the topic does not exist.
 */
async function readHighWaterMarks(kafka: Kafka, topic: string): Promise<PartitionOffsets[]> {
  const admin = kafka.admin()
  await admin.connect()
  try {
    // Listed first: fetching the offsets of a missing topic retries for seconds before it fails.
    if (!(await admin.listTopics()).includes(topic)) {
      throw new Error(
        `control topic ${topic} does not exist; create it with ensureControlTopic or \`throttlectl create-topic\``,
      )
    }
    return await admin.fetchTopicOffsets(topic)
  } finally {
    await admin.disconnect()
  }
}

/** RestartingConsumerOptions configure RestartingConsumer: where to read, its timing, and what to call per record. */
interface RestartingConsumerOptions {
  kafka: Kafka
  topic: string
  /** groupPrefix starts every group id; each consumer adds a random suffix of its own. */
  groupPrefix: string
  maxWaitTimeInMs: number
  maxRetryTimeMs: number
  sessionTimeoutMs: number
  logger: Logger
  /** onMessage handles one record, synchronously; onBatchEnd gets a batch's last offset, which may be past the last record (compaction, transaction markers). */
  onMessage: (partition: number, message: KafkaMessage) => void
  onBatchEnd: (partition: number, lastOffset: string) => void
}

/**
 * RestartingConsumer reads a topic from the beginning, with auto-commit off, under a group
 * of its own. kafkajs rides out short broker outages by retrying. When it crashes anyway,
 * the consumer is replaced by a new one, under a new group, after a backoff that doubles up
 * to maxRetryTimeMs: kafkajs gives some crashes up for good (a group coordinator not found
 * while a broker restarts), and the one it restarts rejoins a group whose old member the
 * restarted broker remembers, which holds the join for a session timeout. A new consumer
 * reads the topic again from the beginning; the replayed records are stale and change nothing.
 */
class RestartingConsumer {
  readonly #options: RestartingConsumerOptions
  readonly #stats = { crashes: 0, restarts: 0 }
  #consumer: Consumer | undefined
  #stopping = false
  #restartTimer: NodeJS.Timeout | undefined
  /** restartAttempt counts restarts since the last successful group join, which resets it. */
  #restartAttempt = 0
  #restartDelayMs = 0

  constructor(options: RestartingConsumerOptions) {
    this.#options = options
  }

  /** start resolves once the first consumer runs; rejects if it cannot connect or subscribe. */
  start(): Promise<void> {
    return this.#run()
  }

  /** stop cancels a pending restart and disconnects the consumer. */
  async stop(): Promise<void> {
    this.#stopping = true
    clearTimeout(this.#restartTimer)
    await this.#consumer?.disconnect()
    this.#consumer = undefined
  }

  /** stats: kafkajs consumer crashes, and the new consumers that replaced a crashed one. */
  stats(): { crashes: number; restarts: number } {
    return { ...this.#stats }
  }

  async #run(): Promise<void> {
    const { kafka, topic, maxWaitTimeInMs, maxRetryTimeMs, sessionTimeoutMs, logger } = this.#options
    const groupId = `${this.#options.groupPrefix}-${randomUUID().slice(0, 8)}`
    const next = kafka.consumer({
      groupId,
      maxWaitTimeInMs,
      allowAutoTopicCreation: false,
      sessionTimeout: sessionTimeoutMs,
      rebalanceTimeout: sessionTimeoutMs,
      heartbeatInterval: Math.floor(sessionTimeoutMs / 10),
      retry: { initialRetryTime: 300, maxRetryTime: maxRetryTimeMs, restartOnFailure: async () => false },
    })
    this.#consumer = next
    next.on(next.events.END_BATCH_PROCESS, ({ payload }) =>
      this.#options.onBatchEnd(payload.partition, payload.lastOffset),
    )
    next.on(next.events.GROUP_JOIN, () => {
      this.#restartAttempt = 0
    })
    next.on(next.events.CRASH, ({ payload }) => {
      this.#stats.crashes++
      logger.error({ err: payload.error, groupId }, 'control consumer crashed; a new one replaces it')
      if (this.#consumer === next) this.#scheduleRestart()
    })
    await next.connect()
    await next.subscribe({ topic, fromBeginning: true })
    logger.debug({ groupId }, 'control consumer running')
    await next.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => this.#options.onMessage(partition, message),
    })
  }

  #scheduleRestart(): void {
    if (this.#stopping || this.#restartTimer !== undefined) return
    const { maxRetryTimeMs, logger } = this.#options
    this.#restartAttempt++
    this.#restartDelayMs = backoffMs(this.#restartAttempt, { baseMs: 300, maxMs: maxRetryTimeMs, jitter: 0 })
    this.#restartTimer = setTimeout(async () => {
      this.#restartTimer = undefined
      const crashed = this.#consumer
      this.#consumer = undefined
      await crashed
        ?.disconnect()
        .catch((error: unknown) =>
          logger.warn({ err: error }, 'disconnecting the crashed control consumer failed'),
        )
      if (this.#stopping) return
      this.#stats.restarts++
      try {
        await this.#run()
      } catch (error) {
        logger.warn(
          { err: error, retryInMs: this.#restartDelayMs },
          'control consumer could not start; trying again',
        )
        this.#scheduleRestart()
      }
    }, this.#restartDelayMs)
  }
}
