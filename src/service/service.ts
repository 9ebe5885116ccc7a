import { setTimeout as sleep } from 'node:timers/promises'
import { DelayedError, type Job, Queue, UnrecoverableError } from 'bullmq'
import type { Kafka, KafkaMessage } from 'kafkajs'
import type { Logger } from 'pino'
import { createThrottledWorker, type ThrottledWorker } from '../adapters/bullmq/index.js'
import { createThrottledConsumer, type ThrottledConsumer } from '../adapters/kafka/index.js'
import {
  type ControlEvent,
  type ControlTable,
  createFileControlSource,
  createKafkaControlSource,
  describeChange,
  ensureControlTopic,
  type RateTarget,
} from '../control/index.js'
import { PermanentFailureError, RetryLaterError } from '../errors.js'
import { backoffMs } from '../limiter/backoff.js'
import {
  type BreakerChange,
  type BreakerState,
  CircuitBreakers,
  formatRate,
  InFlightTable,
  KeyedLimiter,
  monotonicClock,
  ratePerSec,
} from '../limiter/index.js'
import { ActivityTracker, type MerchantActivity } from './activity.js'
import type { Config } from './config.js'
import { createConnections } from './connections.js'
import { createHandlers, type JobHandler } from './handlers.js'
import { type Readiness, type RunningHttpServer, startHttpServer } from './http.js'
import { ServiceMetrics } from './metrics.js'
import { resolveSecret } from './secrets.js'
import { statusPageRoutes } from './status-page.js'

type SourceConfig = Config['sources'][number]

/** RETRIES_FIELD counts a BullMQ job's retries when its producer set no `attempts`. */
export const RETRIES_FIELD = '__retries'

/** StatusSnapshot is what /status.json serves; the status page draws it. */
export interface StatusSnapshot {
  generatedAt: string
  uptimeS: number
  readiness: Readiness
  limiter: {
    defaultRate: string
    keys: number
    maxKeys: number
    evictions: number
    tableFull: number
    skewTolerated: number
    skewRebased: number
    penalties: number
  }
  merchants: Array<
    MerchantActivity & {
      rate: string
      limitPerSec: number
      tokens: number | null
      /** waiting: units reserved ahead of time and not yet run (the bucket's debt). */
      waiting: number
      capacity: number | null
      penaltyFactor: number
      /** maxInFlight is the merchant's in-flight cap; null: no cap. */
      maxInFlight: number | null
      /** inFlight is how many of the merchant's jobs this worker has in flight. */
      inFlight: number
      /** breaker is the merchant's circuit breaker: its state, failures in the window, openings, ms until a probe. */
      breaker: { state: BreakerState; recentFailures: number; openings: number; retryInMs: number }
      /** lastChange is the change that set the rate in force: the merchant's own (`scope: 'merchant'`) or the default's. */
      lastChange: {
        description: string
        version: number
        atIso: string
        scope: 'merchant' | 'default'
      } | null
    }
  >
  control: {
    source: 'kafka' | 'file'
    caughtUp: boolean
    applied: number
    stale: number
    rejected: number
    recentChanges: Array<{ atIso: string; description: string }>
    recentRejections: Array<{ atIso: string; reason: string; error: string }>
  }
  sources: Array<{ kind: string; name: string; concurrency: number }>
  /** slow is the in-flight caps and circuit breakers over every merchant. */
  slow: {
    defaultMaxInFlight: number | null
    inFlight: number
    breakersOpen: number
    breakersHalfOpen: number
    /** breakers lists the merchants whose breaker is not closed. */
    breakers: Array<{ merchantKey: string; state: BreakerState; openings: number; retryInMs: number }>
  }
}

/** RunningService is a started worker. */
export interface RunningService {
  readonly url: string
  readonly limiter: KeyedLimiter
  /** inFlight counts each merchant's jobs in flight and holds its `maxInFlight`. */
  readonly inFlight: InFlightTable
  readonly breakers: CircuitBreakers
  readiness(): Readiness
  status(): StatusSnapshot
  /** stop stops taking work, lets in-flight work finish within the deadline, and closes everything. */
  stop(): Promise<void>
}

interface Source {
  kind: 'bullmq' | 'kafka'
  name: string
  concurrency: number
  ready(): boolean
  close(deadlineMs: number): Promise<void>
}

interface ControlSource {
  table(): ControlTable
  caughtUp(): boolean
  stats(): { applied: number; stale: number; rejected: number }
  stop(): Promise<void>
}

const RECENT_EVENTS = 20

/**
 * startService wires the worker: limiter, control source (Kafka when brokers are set,
 * else the rates file), the HTTP endpoints, then — once the rates have caught up — the
 * configured sources, each with its handler.
 */
export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const startedAtMs = Date.now()
  const log = logger.child({ component: 'service' })
  const limiter = new KeyedLimiter({
    rate: config.limiter.defaultRate,
    clockSkewToleranceMs: config.limiter.clockSkewToleranceMs,
    maxKeys: config.limiter.maxKeys,
    horizonMs: config.limiter.horizonMs,
    onClockSkew: (event) => log.warn({ skew: event }, 'clock stepped backwards'),
  })
  const inFlight = new InFlightTable(config.limiter.maxInFlight ?? Number.POSITIVE_INFINITY)
  const breakerLog = logger.child({ component: 'breaker' })
  let onBreakerChange: (change: BreakerChange) => void = () => {}
  const breakers = new CircuitBreakers({
    ...config.breaker,
    onChange: (change) => onBreakerChange(change),
  })
  const metrics = new ServiceMetrics(limiter, config.metrics.merchantLabels, { inFlight, breakers })
  onBreakerChange = (change) => {
    metrics.breakerChange(change)
    const fields = { merchantKey: change.key, from: change.from, to: change.to, openings: change.openings }
    if (change.to === 'open')
      breakerLog.warn({ ...fields, retryInMs: change.retryInMs }, 'circuit breaker opened')
    else breakerLog.info(fields, `circuit breaker ${change.to}`)
  }
  const activity = new ActivityTracker(monotonicClock)
  const sources: Source[] = []
  const recentChanges: StatusSnapshot['control']['recentChanges'] = []
  const recentRejections: StatusSnapshot['control']['recentRejections'] = []
  let stopping = false

  const useKafkaControl =
    config.control.source === 'kafka' || (config.control.source === 'auto' && config.kafka.brokers.length > 0)
  const connections = createConnections(config, logger)
  const kafka = connections.kafka
  if (useKafkaControl && kafka === undefined) {
    throw new TypeError("config field 'control.source': 'kafka' needs kafka.brokers (or KAFKA_BROKERS)")
  }
  await connections.check({
    kafka: useKafkaControl || config.sources.some((source) => source.kind === 'kafka'),
    redis: config.sources.some((source) => source.kind === 'bullmq'),
  })

  const onControlEvent = (event: ControlEvent) => {
    const atIso = new Date().toISOString()
    if (event.kind === 'applied') {
      metrics.controlMessage('applied')
      pushBounded(recentChanges, { atIso, description: describeChange(event.change) })
    } else if (event.kind === 'stale') {
      metrics.controlMessage('stale')
    } else if (event.kind === 'rejected') {
      metrics.controlMessage('rejected', event.reason)
      pushBounded(recentRejections, { atIso, reason: event.reason, error: event.error })
    }
  }
  // Rates and in-flight caps of one control change are applied in one synchronous step.
  const controlTarget: RateTarget = {
    apply({ maxInFlight, ...rates }) {
      const result = limiter.apply(rates)
      if (result.applied && maxInFlight !== undefined) inFlight.apply(maxInFlight)
      return result
    },
  }
  const control: ControlSource = await startControl(onControlEvent)

  const readiness = (): Readiness => {
    const checks: Record<string, boolean> = { control: control.caughtUp(), accepting: !stopping }
    for (const source of sources) checks[`${source.kind}:${source.name}`] = source.ready()
    return { ready: Object.values(checks).every(Boolean), checks }
  }
  const status = (): StatusSnapshot => snapshot()

  const http: RunningHttpServer = await startHttpServer({
    host: config.http.host,
    port: config.http.port,
    authToken:
      config.http.authToken === undefined
        ? undefined
        : resolveSecret(config.http.authToken, 'http.authToken'),
    registry: metrics.registry,
    readiness,
    status,
    publicRoutes: statusPageRoutes(),
    logger,
  })

  const handlers = createHandlers(config, logger)
  for (const sourceConfig of config.sources) {
    const { handle, keyOf } = await handlers.forSource(sourceConfig)
    sources.push(
      sourceConfig.kind === 'bullmq'
        ? startBullmq(sourceConfig, handle, keyOf)
        : await startKafka(sourceConfig, handle, keyOf),
    )
  }
  log.info({ sources: sources.map((s) => `${s.kind}:${s.name}`), url: http.url }, 'worker started')

  return {
    url: http.url,
    limiter,
    inFlight,
    breakers,
    readiness,
    status,
    async stop() {
      if (stopping) return
      stopping = true
      const deadlineMs = config.shutdown.deadlineMs
      log.info({ deadlineMs }, 'stopping: no new work, letting in-flight work finish')
      await Promise.all(sources.map((source) => source.close(deadlineMs)))
      await handlers.close()
      await control.stop()
      await http.close()
      log.info('stopped')
    },
  }

  async function startControl(listener: (event: ControlEvent) => void): Promise<ControlSource> {
    if (useKafkaControl && kafka !== undefined) {
      const admin = kafka.admin()
      await admin.connect()
      try {
        await ensureControlTopic(admin, { topic: config.control.topic })
      } finally {
        await admin.disconnect()
      }
      const source = createKafkaControlSource({
        kafka,
        topic: config.control.topic,
        limiter: controlTarget,
        signingKeys: Object.entries(config.control.signingKeys).map(([id, secret]) => ({
          id,
          secret: resolveSecret(secret, `control.signingKeys.${id}`),
        })),
        deadLetterTopic: config.control.deadLetterTopic,
        logger,
      })
      source.subscribe(listener)
      await source.start()
      await source.ready
      return source
    }
    const source = createFileControlSource({
      path: config.control.file,
      limiter: controlTarget,
      logger,
    })
    source.subscribe(listener)
    await source.start()
    let started = true
    return {
      table: () => source.table(),
      caughtUp: () => started,
      stats: () => source.stats(),
      stop: async () => {
        started = false
        await source.stop()
      },
    }
  }

  function startBullmq(
    source: Extract<SourceConfig, { kind: 'bullmq' }>,
    handler: JobHandler,
    keyOfData: ((data: unknown) => unknown) | undefined,
  ): Source {
    const connection = connections.redis()
    const sourceLabel = `bullmq:${source.queue}`
    const keyOf = (job: Job<unknown, void>) =>
      keyOfData !== undefined
        ? keyOfData(job.data)
        : (job.data as Record<string, unknown> | undefined)?.[source.keyField]
    // Errors thrown for a retryable outcome (timeout, connection error, 5xx): the breaker counts them.
    const endpointFailures = new WeakSet<object>()
    const endpointFailure = (error: Error): Error => {
      endpointFailures.add(error)
      return error
    }
    const processor = async (job: Job<unknown, void>, token?: string): Promise<void> => {
      const merchantKey = String(keyOf(job))
      const retries = retriesOf(job.data)
      try {
        await handler({ id: String(job.id), data: job.data, attempt: job.attemptsMade + retries + 1 })
        metrics.handlerOutcome(sourceLabel, 'delivered', merchantKey)
        activity.delivered(merchantKey)
      } catch (error) {
        if (error instanceof RetryLaterError) {
          metrics.handlerOutcome(sourceLabel, 'retry-later', merchantKey)
          throw error
        }
        if (error instanceof PermanentFailureError) {
          metrics.handlerOutcome(sourceLabel, 'dead-lettered', merchantKey)
          throw new UnrecoverableError(`${error.reason}: ${error.message}`)
        }
        metrics.handlerOutcome(sourceLabel, 'retryable', merchantKey)
        if ((job.opts.attempts ?? 1) > 1) throw endpointFailure(error as Error)
        const attempt = retries + 1
        if (attempt >= source.attempts || token === undefined) {
          metrics.handlerOutcome(sourceLabel, 'dead-lettered', merchantKey)
          throw endpointFailure(
            new UnrecoverableError(`gave up after ${attempt} attempts: ${(error as Error).message}`),
          )
        }
        await job.updateData({ ...(job.data as Record<string, unknown>), [RETRIES_FIELD]: attempt })
        await job.moveToDelayed(Date.now() + backoffMs(attempt), token)
        throw endpointFailure(new DelayedError())
      }
    }
    const worker: ThrottledWorker<unknown, void> = createThrottledWorker<unknown, void>(
      source.queue,
      processor,
      {
        connection,
        limiter,
        keyOf,
        concurrency: source.concurrency,
        instances: source.instances,
        logger: logger.child({ source: sourceLabel }),
        removeOnFail: { count: 100_000 },
        autorun: false,
        inFlight,
        breakers,
        isEndpointFailure: (error) =>
          typeof error === 'object' && error !== null && endpointFailures.has(error),
        onEvent: (event) => {
          metrics.decision(sourceLabel, event.outcome, event.merchantKey ?? 'invalid', event.delayMs)
          if (event.merchantKey !== undefined) activity.seen(event.merchantKey)
        },
      },
    )
    worker.on('error', (error) => log.error({ err: error, source: sourceLabel }, 'worker error'))
    void worker.run()
    const queue = new Queue(source.queue, { connection })
    // Without a listener BullMQ prints the error to stderr whole, with ioredis's command.args (AUTH's password).
    queue.on('error', (error) => log.error({ err: error, source: sourceLabel }, 'queue error'))
    metrics.addDepthReader(async () => {
      const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed')
      return Object.entries(counts).map(([state, value]) => ({ source: sourceLabel, state, value }))
    })
    return {
      kind: 'bullmq',
      name: source.queue,
      concurrency: source.concurrency,
      ready: () => connection.status === 'ready' && worker.isRunning(),
      async close(deadlineMs) {
        const closed = worker.close()
        const timedOut = await Promise.race([closed.then(() => false), sleep(deadlineMs).then(() => true)])
        if (timedOut) {
          log.warn(
            { source: sourceLabel },
            'in-flight jobs passed the shutdown deadline; they stay active and are recovered as stalled',
          )
          await worker.close(true)
        }
        await queue.close()
        await connection.quit()
      },
    }
  }

  async function startKafka(
    source: Extract<SourceConfig, { kind: 'kafka' }>,
    handler: JobHandler,
    keyOfData: ((data: unknown) => unknown) | undefined,
  ): Promise<Source> {
    if (kafka === undefined)
      throw new TypeError(`config field 'sources': kafka source '${source.topic}' needs kafka.brokers`)
    const sourceLabel = `kafka:${source.topic}`
    const deadLetterTopic = source.deadLetterTopic ?? `${source.topic}.dead-letter`
    await ensureDeadLetterTopic(kafka, source.topic, deadLetterTopic)
    const keyOf =
      keyOfData !== undefined
        ? (message: KafkaMessage) => keyOfData(parseJson(message.value))
        : source.keyFrom === 'key'
          ? undefined
          : keySourceOf(source.keyFrom)
    const consumer: ThrottledConsumer = createThrottledConsumer({
      kafka,
      groupId: source.groupId,
      topics: [source.topic],
      limiter,
      ...(keyOf === undefined ? {} : { keyOf }),
      concurrency: source.concurrency,
      maxAttempts: source.attempts,
      deadLetterTopic,
      stopTimeoutMs: config.shutdown.deadlineMs,
      inFlight,
      breakers,
      // As on BullMQ: every retryable outcome (timeouts, connection errors, 5xx, a module's own errors) counts.
      isEndpointFailure: (error) =>
        !(error instanceof RetryLaterError || error instanceof PermanentFailureError),
      logger: logger.child({ source: sourceLabel }),
      handler: async (message) => {
        const data = parseJson(message.message.value)
        // listed on the status page from its first call, not only once a call succeeds
        activity.seen(message.merchantKey)
        try {
          await handler({
            id: `${message.topic}/${message.partition}/${message.offset}`,
            data,
            attempt: message.attempt,
          })
          metrics.handlerOutcome(sourceLabel, 'delivered', message.merchantKey)
          activity.delivered(message.merchantKey)
        } catch (error) {
          const outcome =
            error instanceof RetryLaterError
              ? 'retry-later'
              : error instanceof PermanentFailureError
                ? 'dead-lettered'
                : 'retryable'
          metrics.handlerOutcome(sourceLabel, outcome, message.merchantKey)
          throw error
        }
      },
    })
    let running = false
    consumer.on('crash', ({ restart }) => {
      if (!restart) running = false
    })
    await consumer.run()
    running = true
    return {
      kind: 'kafka',
      name: source.topic,
      concurrency: source.concurrency,
      ready: () => running,
      close: async () => {
        running = false
        await consumer.stop()
      },
    }
  }

  function snapshot(): StatusSnapshot {
    const stats = limiter.stats()
    const table = control.table()
    const changeOf = new Map(table.overrides.map((o) => [o.merchant, o]))
    const merchants = activity.snapshot(100).map((row) => {
      const inspection = limiter.inspect(row.merchantKey)
      const rate = inspection?.rate ?? limiter.rateOf(row.merchantKey)
      const own = changeOf.get(row.merchantKey)
      const change = own ?? table.default
      return {
        ...row,
        rate: formatRate(rate),
        limitPerSec: ratePerSec(rate),
        tokens: inspection?.tokens ?? null,
        waiting: inspection === undefined ? 0 : Math.max(0, Math.ceil(-inspection.tokens - 1e-9)),
        capacity: inspection?.capacity ?? null,
        penaltyFactor: inspection?.penaltyFactor ?? 1,
        maxInFlight: finiteOrNull(inFlight.capOf(row.merchantKey)),
        inFlight: inFlight.count(row.merchantKey),
        breaker: breakers.view(row.merchantKey),
        lastChange:
          change === undefined
            ? null
            : {
                description: formatRate(change.rate),
                version: change.version,
                atIso: new Date(change.changedAtMs).toISOString(),
                scope: own === undefined ? ('default' as const) : ('merchant' as const),
              },
      }
    })
    const controlStats = control.stats()
    const breakerStats = breakers.stats()
    return {
      generatedAt: new Date().toISOString(),
      uptimeS: Math.round((Date.now() - startedAtMs) / 1_000),
      readiness: readiness(),
      limiter: {
        defaultRate: formatRate(limiter.rates().default),
        keys: stats.keys,
        maxKeys: stats.maxKeys,
        evictions: stats.evictions,
        tableFull: stats.tableFull,
        skewTolerated: stats.skewTolerated,
        skewRebased: stats.skewRebased,
        penalties: stats.penalties,
      },
      merchants,
      control: {
        source: useKafkaControl ? 'kafka' : 'file',
        caughtUp: control.caughtUp(),
        applied: controlStats.applied,
        stale: controlStats.stale,
        rejected: controlStats.rejected,
        recentChanges: [...recentChanges].reverse(),
        recentRejections: [...recentRejections].reverse(),
      },
      sources: sources.map((s) => ({ kind: s.kind, name: s.name, concurrency: s.concurrency })),
      slow: {
        defaultMaxInFlight: finiteOrNull(inFlight.defaultCapValue),
        inFlight: inFlight.size,
        breakersOpen: breakerStats.open,
        breakersHalfOpen: breakerStats.halfOpen,
        breakers: breakers
          .notClosed()
          .slice(0, 100)
          .map((row) => ({
            merchantKey: row.key,
            state: row.state,
            openings: row.openings,
            retryInMs: row.retryInMs,
          })),
      },
    }
  }
}

function finiteOrNull(value: number): number | null {
  return Number.isFinite(value) ? value : null
}

function pushBounded<T>(list: T[], item: T): void {
  list.push(item)
  if (list.length > RECENT_EVENTS) list.shift()
}

function retriesOf(data: unknown): number {
  const value = (data as Record<string, unknown> | undefined)?.[RETRIES_FIELD]
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : 0
}

function parseJson(value: Buffer | null): unknown {
  if (value === null) return null
  try {
    return JSON.parse(value.toString('utf8'))
  } catch {
    return value.toString('utf8')
  }
}

function keySourceOf(keyFrom: string): { header: string } | { field: string } {
  const [kind, ...rest] = keyFrom.split(':')
  const name = rest.join(':')
  return kind === 'header' ? { header: name } : { field: name }
}

/**
 * ensureDeadLetterTopic checks that the source topic exists (a worker never creates the
 * topic it consumes: a typo would otherwise consume an empty new one) and creates the
 * dead-letter topic when missing, with the source's partition count.
 */
async function ensureDeadLetterTopic(kafka: Kafka, topic: string, deadLetterTopic: string): Promise<void> {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const topics = await admin.listTopics()
    if (!topics.includes(topic)) {
      throw new TypeError(`config field 'sources': Kafka topic '${topic}' does not exist; create it first`)
    }
    if (topics.includes(deadLetterTopic)) return
    const metadata = await admin.fetchTopicMetadata({ topics: [topic] })
    const partitions = metadata.topics[0]?.partitions.length ?? 1
    // kafkajs's waitForLeaders gives up on a KRaft broker still creating the topic; the producer retries
    await admin.createTopics({
      waitForLeaders: false,
      topics: [{ topic: deadLetterTopic, numPartitions: partitions }],
    })
  } finally {
    await admin.disconnect()
  }
}
