import type { Kafka } from 'kafkajs'
import type { Logger } from 'pino'
import {
  type ControlChange,
  type ControlEvent,
  type ControlTable,
  createFileControlSource,
  createKafkaControlSource,
  describeChange,
  ensureControlTopic,
  type RateTarget,
} from '../control/index.js'
import type { InFlightTable, KeyedLimiter } from '../limiter/index.js'
import type { Config } from './config.js'
import type { ServiceMetrics } from './metrics.js'
import { resolveSecret } from './secrets.js'
import type { StatusParts } from './status.js'

/** RECENT_EVENTS is how many recent changes and rejections the status page lists. */
export const RECENT_EVENTS = 20

/** ServiceControl is the running control source, with what the status page shows of it. */
export interface ServiceControl {
  readonly kind: 'kafka' | 'file'
  table(): ControlTable
  caughtUp(): boolean
  /** status is the control part of a status snapshot's parts. */
  status(): StatusParts['control']
  stop(): Promise<void>
}

/** ControlWiring is what the control source changes and reports to. */
export interface ControlWiring {
  config: Config['control']
  /** kafka is the shared client; when set, rates come from the control topic, else from the rates file. */
  kafka: Kafka | undefined
  limiter: KeyedLimiter
  inFlight: InFlightTable
  metrics: ServiceMetrics
  logger: Logger
  /**
   * ratesChanged is called after each change applied to the limiter, with the merchants
   * it changed (none: every rate), so the sources move their standing backlogs at once.
   */
  ratesChanged(merchantKeys?: readonly string[]): void
}

/** changedMerchants is who a change applied to the limiter changed: a set or clear's merchant, or everyone. */
export function changedMerchants(change: ControlChange): readonly string[] | undefined {
  return change.type === 'snapshot' ? undefined : [change.merchant]
}

/**
 * startControl starts the control source and resolves once the rates in force have
 * caught up: the control topic read to its end (the topic created when missing), or the
 * rates file applied.
 */
export async function startControl(wiring: ControlWiring): Promise<ServiceControl> {
  const { config, kafka, logger } = wiring
  const recentChanges: StatusParts['control']['recentChanges'][number][] = []
  const recentRejections: StatusParts['control']['recentRejections'][number][] = []
  const listener = (event: ControlEvent) => {
    const atIso = new Date().toISOString()
    if (event.kind === 'applied') {
      wiring.metrics.controlMessage('applied')
      pushBounded(recentChanges, { atIso, description: describeChange(event.change) })
      wiring.ratesChanged(changedMerchants(event.change))
    } else if (event.kind === 'forgotten') {
      if (event.changed) wiring.ratesChanged()
    } else if (event.kind === 'stale') {
      wiring.metrics.controlMessage('stale')
    } else if (event.kind === 'rejected') {
      wiring.metrics.controlMessage('rejected', event.reason)
      pushBounded(recentRejections, { atIso, reason: event.reason, error: event.error })
    }
  }
  // Rates and in-flight caps of one control change are applied in one synchronous step.
  const target: RateTarget = {
    apply({ maxInFlight, ...rates }) {
      const result = wiring.limiter.apply(rates)
      if (result.applied && maxInFlight !== undefined) wiring.inFlight.apply(maxInFlight)
      return result
    },
  }
  const source =
    kafka === undefined
      ? await startFile(config, target, listener, logger)
      : await startKafka(config, kafka, target, listener, logger)
  return {
    kind: kafka === undefined ? 'file' : 'kafka',
    table: () => source.table(),
    caughtUp: () => source.caughtUp(),
    status: () => ({
      source: kafka === undefined ? 'file' : 'kafka',
      caughtUp: source.caughtUp(),
      stats: source.stats(),
      table: source.table(),
      recentChanges,
      recentRejections,
    }),
    stop: () => source.stop(),
  }
}

type Listener = (event: ControlEvent) => void

interface StartedSource {
  table(): ControlTable
  caughtUp(): boolean
  stats(): { applied: number; stale: number; rejected: number }
  stop(): Promise<void>
}

async function startKafka(
  config: Config['control'],
  kafka: Kafka,
  target: RateTarget,
  listener: Listener,
  logger: Logger,
): Promise<StartedSource> {
  const admin = kafka.admin()
  await admin.connect()
  try {
    await ensureControlTopic(admin, { topic: config.topic })
  } finally {
    await admin.disconnect()
  }
  const source = createKafkaControlSource({
    kafka,
    topic: config.topic,
    limiter: target,
    signingKeys: Object.entries(config.signingKeys).map(([id, secret]) => ({
      id,
      secret: resolveSecret(secret, `control.signingKeys.${id}`),
    })),
    deadLetterTopic: config.deadLetterTopic,
    logger,
  })
  source.subscribe(listener)
  await source.start()
  await source.ready
  return source
}

async function startFile(
  config: Config['control'],
  target: RateTarget,
  listener: Listener,
  logger: Logger,
): Promise<StartedSource> {
  const source = createFileControlSource({ path: config.file, limiter: target, logger })
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

function pushBounded<T>(list: T[], item: T): void {
  list.push(item)
  if (list.length > RECENT_EVENTS) list.shift()
}
