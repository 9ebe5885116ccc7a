import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { Consumer, Kafka, KafkaMessage, Producer } from 'kafkajs'
import { type Logger, pino } from 'pino'
import { backoffMs } from '../limiter/backoff.js'
import { logControlEvents } from './log.js'
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

/** REJECT_REASON_HEADER and REJECT_ERROR_HEADER say why a record was copied to the dead-letter topic. */
export const REJECT_REASON_HEADER = 'mt-reject-reason'
export const REJECT_ERROR_HEADER = 'mt-reject-error'

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
 *
 * kafkajs rides out short broker outages by retrying. When it crashes anyway, the source
 * replaces the consumer with a new one, under a new group, with backoff: kafkajs gives
 * some crashes up for good (a group coordinator not found while a broker restarts), and
 * the one it restarts rejoins a group whose old member the restarted broker remembers,
 * which holds the join for a session timeout. A new consumer reads the topic again from
 * the beginning; the replayed records are stale and change nothing.
 */
export function createKafkaControlSource(options: KafkaControlSourceOptions): KafkaControlSource {
  const topic = options.topic ?? DEFAULT_CONTROL_TOPIC
  const maxWaitTimeInMs = options.maxWaitTimeInMs ?? 100
  if (!Number.isFinite(maxWaitTimeInMs) || maxWaitTimeInMs < 0) {
    throw new TypeError(
      `createKafkaControlSource: expected maxWaitTimeInMs to be a finite number >= 0, got ${maxWaitTimeInMs}`,
    )
  }
  const maxRetryTimeMs = options.maxRetryTimeMs ?? 5_000
  if (!Number.isFinite(maxRetryTimeMs) || maxRetryTimeMs < 300) {
    throw new TypeError(
      `createKafkaControlSource: expected maxRetryTimeMs to be a finite number >= 300, got ${maxRetryTimeMs}`,
    )
  }
  const sessionTimeoutMs = options.sessionTimeoutMs ?? 10_000
  if (!Number.isFinite(sessionTimeoutMs) || sessionTimeoutMs < 6_000) {
    throw new TypeError(
      `createKafkaControlSource: expected sessionTimeoutMs to be a finite number >= 6000, got ${sessionTimeoutMs}`,
    )
  }
  const logger = (options.logger ?? pino({ level: 'silent' })).child({
    component: 'control',
    source: 'kafka',
    topic,
  })
  const state = new ControlState({ target: options.limiter, wallNow: options.wallNow, logger })
  logControlEvents(state, logger)
  state.subscribe((event) => {
    if (event.kind === 'rejected') deadLetter(event)
  })
  const handling: RecordHandling = {
    limits: resolveLimits(options.limits),
    verify: createSignatureVerifier(options.signingKeys ?? []),
  }
  const groupPrefix = `${options.groupIdPrefix ?? 'merchant-throttle-control'}-${hostname()}-${process.pid}`
  const counters = { deadLettered: 0, deadLetterFailures: 0, crashes: 0, restarts: 0 }
  /** Per partition: the offset to reach (the high-water mark at start) and the next offset to read. */
  const progress = new Map<number, { targetOffset: bigint; nextOffset: bigint }>()
  const deadLetters = new Set<Promise<void>>()
  let consumer: Consumer | undefined
  let deadLetterProducer: Producer | undefined
  let started = false
  let stopping = false
  let restartTimer: NodeJS.Timeout | undefined
  /** restartAttempt counts restarts since the last successful group join, which resets it. */
  let restartAttempt = 0
  let restartDelayMs = 0
  let isCaughtUp = false
  let resolveReady!: () => void
  let rejectReady!: (error: Error) => void
  const ready = new Promise<void>((resolve, reject) => {
    resolveReady = resolve
    rejectReady = reject
  })
  // Whoever awaits `ready` sees a rejection; this keeps one nobody awaits from crashing the process.
  ready.catch((error: Error) => logger.debug({ err: error }, 'control source stopped before it caught up'))

  const advance = (partition: number, offset: string): void => {
    const at = progress.get(partition)
    if (at === undefined) return
    const next = BigInt(offset) + 1n
    if (next > at.nextOffset) at.nextOffset = next
    checkCaughtUp()
  }

  const checkCaughtUp = (): void => {
    if (isCaughtUp) return
    for (const at of progress.values()) if (at.nextOffset < at.targetOffset) return
    isCaughtUp = true
    logger.info(
      { partitions: progress.size, ...state.stats() },
      'control topic read up to its high-water marks: caught up',
    )
    resolveReady()
  }

  /** current is the record being handled, so that a rejection of it can be copied whole. */
  let current: { partition: number; message: KafkaMessage } | undefined

  const deadLetter = (event: Extract<ControlEvent, { kind: 'rejected' }>): void => {
    if (deadLetterProducer === undefined || options.deadLetterTopic === undefined || current === undefined) {
      return
    }
    const { partition, message } = current
    const offset = message.offset
    const sent = deadLetterProducer
      .send({
        topic: options.deadLetterTopic,
        messages: [
          {
            key: `${topic}:${partition}:${offset}`,
            value: message.value,
            headers: {
              ...message.headers,
              'mt-source-key': message.key ?? '',
              [REJECT_REASON_HEADER]: event.reason,
              [REJECT_ERROR_HEADER]: event.error.slice(0, 1_000),
            },
          },
        ],
      })
      .then(
        () => {
          counters.deadLettered++
        },
        (error: unknown) => {
          counters.deadLetterFailures++
          logger.error(
            { err: error, partition, offset },
            'copying a rejected control record to the dead-letter topic failed',
          )
        },
      )
      .finally(() => deadLetters.delete(sent))
    deadLetters.add(sent)
  }

  /** runConsumer starts a consumer under a group of its own, reading from the beginning. */
  const runConsumer = async (): Promise<void> => {
    const groupId = `${groupPrefix}-${randomUUID().slice(0, 8)}`
    const next = options.kafka.consumer({
      groupId,
      maxWaitTimeInMs,
      allowAutoTopicCreation: false,
      sessionTimeout: sessionTimeoutMs,
      rebalanceTimeout: sessionTimeoutMs,
      heartbeatInterval: Math.floor(sessionTimeoutMs / 10),
      retry: { initialRetryTime: 300, maxRetryTime: maxRetryTimeMs, restartOnFailure: async () => false },
    })
    consumer = next
    next.on(next.events.END_BATCH_PROCESS, ({ payload }) => advance(payload.partition, payload.lastOffset))
    next.on(next.events.GROUP_JOIN, () => {
      restartAttempt = 0
    })
    next.on(next.events.CRASH, ({ payload }) => {
      counters.crashes++
      logger.error({ err: payload.error, groupId }, 'control consumer crashed; a new one replaces it')
      if (consumer === next) scheduleRestart()
    })
    await next.connect()
    await next.subscribe({ topic, fromBeginning: true })
    logger.debug({ groupId }, 'control consumer running')
    await next.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        current = { partition, message }
        try {
          handleControlRecord(state, message, handling, {
            source: 'kafka',
            partition,
            offset: message.offset,
          })
        } finally {
          current = undefined
        }
        advance(partition, message.offset)
      },
    })
  }

  /** scheduleRestart replaces the consumer after a backoff that doubles up to maxRetryTimeMs. */
  const scheduleRestart = (): void => {
    if (stopping || restartTimer !== undefined) return
    restartAttempt++
    restartDelayMs = backoffMs(restartAttempt, { baseMs: 300, maxMs: maxRetryTimeMs, jitter: 0 })
    restartTimer = setTimeout(async () => {
      restartTimer = undefined
      const crashed = consumer
      consumer = undefined
      await crashed
        ?.disconnect()
        .catch((error: unknown) =>
          logger.warn({ err: error }, 'disconnecting the crashed control consumer failed'),
        )
      if (stopping) return
      counters.restarts++
      try {
        await runConsumer()
      } catch (error) {
        logger.warn(
          { err: error, retryInMs: restartDelayMs },
          'control consumer could not start; trying again',
        )
        scheduleRestart()
      }
    }, restartDelayMs)
  }

  return {
    state,
    ready,
    async start() {
      if (started) {
        throw new TypeError('KafkaControlSource.start: expected a new source, got one already started')
      }
      started = true
      const admin = options.kafka.admin()
      await admin.connect()
      try {
        // Listed first: fetching the offsets of a missing topic retries for seconds before it fails.
        if (!(await admin.listTopics()).includes(topic)) {
          throw new Error(
            `control topic ${topic} does not exist; create it with ensureControlTopic or \`throttlectl create-topic\``,
          )
        }
        const offsets = await admin.fetchTopicOffsets(topic)
        // A partition is read up to the high-water mark of now; an empty one (high == low) has nothing to read.
        for (const { partition, high, low } of offsets) {
          progress.set(partition, { targetOffset: BigInt(high), nextOffset: BigInt(low) })
        }
      } finally {
        await admin.disconnect()
      }
      if (options.deadLetterTopic !== undefined) {
        deadLetterProducer = options.kafka.producer({ allowAutoTopicCreation: false })
        await deadLetterProducer.connect()
      }
      logger.info({ partitions: progress.size }, 'reading the control topic from the beginning')
      checkCaughtUp()
      await runConsumer()
    },
    async stop() {
      stopping = true
      clearTimeout(restartTimer)
      rejectReady(new Error('control source stopped before it caught up'))
      await consumer?.disconnect()
      consumer = undefined
      await Promise.all(deadLetters)
      await deadLetterProducer?.disconnect()
      deadLetterProducer = undefined
    },
    caughtUp: () => isCaughtUp,
    stats: () => ({ ...state.stats(), caughtUp: isCaughtUp, ...counters }),
    table: () => state.table(),
    subscribe: (listener) => state.subscribe(listener),
  }
}
