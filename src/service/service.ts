import type { Logger } from 'pino'
import { ConfigError } from '../errors.js'
import {
  type BreakerChange,
  CircuitBreakers,
  InFlightTable,
  KeyedLimiter,
  monotonicClock,
} from '../limiter/index.js'
import { ActivityTracker } from './activity.js'
import type { Config } from './config.js'
import { type Connections, createConnections } from './connections.js'
import { startControl } from './control.js'
import { createHandlers, type HandlerSet } from './handlers.js'
import { type Readiness, startHttpServer } from './http.js'
import { ServiceMetrics } from './metrics.js'
import { resolveSecret } from './secrets.js'
import { resolveReservationKey, startBullmqSource } from './sources/bullmq.js'
import { startKafkaSource } from './sources/kafka.js'
import type { Source, SourceHandler, SourceWiring } from './sources/source.js'
import { bindingCounts, buildStatus, STATUS_LIST_LIMIT, type StatusSnapshot } from './status.js'
import { statusPageRoutes } from './status-page.js'

export type { StatusSnapshot } from './status.js'

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

/**
 * startService wires the worker. Before anything starts it loads the sources' handlers
 * (module handlers included) and checks the connections; then it starts the control
 * source (Kafka when brokers are set, else the rates file), the HTTP endpoints, and —
 * once the rates have caught up — the configured sources.
 */
export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const startedAtMs = Date.now()
  const log = logger.child({ component: 'service' })
  const useKafkaControl =
    config.control.source === 'kafka' || (config.control.source === 'auto' && config.kafka.brokers.length > 0)
  const handlers = createHandlers({ webhook: config.webhook, psp: config.psp }, logger)
  const sourceHandlers = await loadSourceHandlers(handlers, config, useKafkaControl)
  const connections = createConnections({ kafka: config.kafka, redis: config.redis }, logger)
  await connections.check({
    kafka: useKafkaControl || config.sources.some((source) => source.kind === 'kafka'),
    redis: config.sources.some((source) => source.kind === 'bullmq'),
  })

  const limiter = new KeyedLimiter({
    rate: config.limiter.defaultRate,
    clockSkewToleranceMs: config.limiter.clockSkewToleranceMs,
    maxKeys: config.limiter.maxKeys,
    maxOverrides: config.limiter.maxOverrides,
    horizonMs: config.limiter.horizonMs,
    onClockSkew: (event) => log.warn({ skew: event }, 'clock stepped backwards'),
  })
  const inFlight = new InFlightTable(config.limiter.maxInFlight ?? Number.POSITIVE_INFINITY)
  const metrics = new ServiceMetrics(limiter, config.metrics.merchantLabels)
  const breakers = new CircuitBreakers({
    ...config.breaker,
    onChange: reportBreakerChange(metrics, logger.child({ component: 'breaker' })),
  })
  metrics.watchSlowMerchants({ inFlight, breakers })
  const sources: Source[] = []
  metrics.watchLayers({ limiter, bindings: () => bindingCounts(limiter, sources) })
  const activity = new ActivityTracker(monotonicClock)
  const kafka = useKafkaControl ? connections.kafka : undefined
  const ratesChanged = (merchantKeys?: readonly string[]) => {
    for (const source of sources) source.ratesChanged(merchantKeys)
  }
  const control = await startControl({
    config: config.control,
    kafka,
    limiter,
    inFlight,
    metrics,
    logger,
    ratesChanged,
  })

  let stopping = false
  const readiness = (): Readiness => {
    const checks: Record<string, boolean> = { control: control.caughtUp(), accepting: !stopping }
    for (const source of sources) checks[`${source.kind}:${source.name}`] = source.ready()
    return { ready: Object.values(checks).every(Boolean), checks }
  }
  const status = (): StatusSnapshot =>
    buildStatus({
      nowMs: Date.now(),
      startedAtMs,
      readiness: readiness(),
      limiter,
      inFlight,
      breakers,
      activity: activity.snapshot(STATUS_LIST_LIMIT),
      control: control.status(),
      sources,
    })
  const http = await startHttpServer({
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

  const wiring: SourceWiring = { limiter, inFlight, breakers, metrics, activity, logger }
  for (const [i, sourceConfig] of config.sources.entries()) {
    sources.push(
      await startSource(sourceConfig, sourceHandlers[i]!, wiring, connections, config.shutdown.deadlineMs),
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
}

/**
 * loadSourceHandlers builds every source's handler (resolving its secrets, loading its
 * module) and checks that Kafka is configured where it is needed, so that a bad config
 * stops start-up before anything connects, with every problem in one ConfigError.
 */
async function loadSourceHandlers(
  handlers: HandlerSet,
  config: Config,
  useKafkaControl: boolean,
): Promise<SourceHandler[]> {
  const problems: string[] = []
  const noBrokers = config.kafka.brokers.length === 0
  if (useKafkaControl && noBrokers) {
    problems.push("config field 'control.source': 'kafka' needs kafka.brokers (or KAFKA_BROKERS)")
  }
  const loaded: SourceHandler[] = []
  for (const [i, source] of config.sources.entries()) {
    if (source.kind === 'kafka' && noBrokers) {
      problems.push(`config field 'sources': kafka source '${source.topic}' needs kafka.brokers`)
    }
    try {
      if (source.kind === 'bullmq') resolveReservationKey(source, `sources[${i}].reservationKey`)
      loaded.push(await handlers.forSource(source))
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error
      problems.push(...error.problems)
    }
  }
  if (problems.length === 0) return loaded
  await handlers.close()
  throw new ConfigError(problems)
}

function startSource(
  sourceConfig: Config['sources'][number],
  handler: SourceHandler,
  wiring: SourceWiring,
  connections: Connections,
  stopTimeoutMs: number,
): Promise<Source> | Source {
  if (sourceConfig.kind === 'bullmq')
    return startBullmqSource(sourceConfig, handler, wiring, connections.redis())
  // loadSourceHandlers refused a Kafka source without brokers, so the client is there.
  return startKafkaSource(sourceConfig, handler, wiring, connections.kafka!, stopTimeoutMs)
}

/** reportBreakerChange counts a breaker's state change and logs it: an opening as a warning. */
function reportBreakerChange(metrics: ServiceMetrics, log: Logger): (change: BreakerChange) => void {
  return (change) => {
    metrics.breakerChange(change)
    const fields = { merchantKey: change.key, from: change.from, to: change.to, openings: change.openings }
    if (change.to === 'open') log.warn({ ...fields, retryInMs: change.retryInMs }, 'circuit breaker opened')
    else log.info(fields, `circuit breaker ${change.to}`)
  }
}
