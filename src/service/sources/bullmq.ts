import { setTimeout as sleep } from 'node:timers/promises'
import { type Job, Queue, UnrecoverableError } from 'bullmq'
import type { Redis } from 'ioredis'
import {
  createThrottledWorker,
  type MerchantWaiting,
  type ThrottledWorker,
  type ThrottleStats,
} from '../../adapters/bullmq/index.js'
import { ConfigError, PermanentFailureError, RetryLaterError } from '../../errors.js'
import { backoffMs } from '../../limiter/index.js'
import type { Config } from '../config.js'
import { compileKeyTemplates } from '../limit-keys.js'
import { resolveSecret } from '../secrets.js'
import type { SourceBacklog } from '../status.js'
import {
  reportDelivered,
  reportFailure,
  type Source,
  type SourceHandler,
  type SourceWiring,
} from './source.js'

type BullmqSourceConfig = Extract<Config['sources'][number], { kind: 'bullmq' }>

/** BACKOFF_TYPE is the `backoff.type` of the worker's retries: backoffMs, through BullMQ's custom strategy. */
export const BACKOFF_TYPE = 'merchant-throttle'

/**
 * startBullmqSource runs a throttled BullMQ worker on `config.queue` with the source's
 * handler, and reads the queue's depth for the metrics. Failed attempts are retried by
 * BullMQ itself (see useSourceRetries); a job that ran out of attempts, or whose failure
 * retrying cannot help, ends in the queue's failed set, its reason in `failedReason`.
 */
export function startBullmqSource(
  config: BullmqSourceConfig,
  handler: SourceHandler,
  wiring: SourceWiring,
  connection: Redis,
): Source {
  const sourceLabel = `bullmq:${config.queue}`
  const log = wiring.logger.child({ source: sourceLabel })
  const keyOf = (job: Job<unknown, void>) =>
    handler.keyOf !== undefined
      ? handler.keyOf(job.data)
      : (job.data as Record<string, unknown> | undefined)?.[config.keyField]
  // Errors thrown for a retryable outcome (timeout, connection error, 5xx): the breaker counts them.
  const endpointFailures = new WeakSet<object>()
  const processor = async (job: Job<unknown, void>): Promise<void> => {
    const merchantKey = String(keyOf(job))
    const attempts = useSourceRetries(job, config.attempts)
    try {
      await handler.handle({ id: String(job.id), data: job.data, attempt: job.attemptsMade + 1 })
      reportDelivered(wiring, sourceLabel, merchantKey)
    } catch (error) {
      if (error instanceof RetryLaterError) {
        reportFailure(wiring, sourceLabel, merchantKey, error, false)
        throw error
      }
      if (error instanceof PermanentFailureError) {
        reportFailure(wiring, sourceLabel, merchantKey, error, true)
        throw new UnrecoverableError(`${error.reason}: ${error.message}`)
      }
      const lastAttempt = job.attemptsMade + 1 >= attempts
      reportFailure(wiring, sourceLabel, merchantKey, error, lastAttempt)
      const message = error instanceof Error ? error.message : String(error)
      const failure = lastAttempt
        ? new Error(`gave up after ${attempts} attempts: ${message}`, { cause: error })
        : error instanceof Error
          ? error
          : new Error(message)
      endpointFailures.add(failure)
      throw failure
    }
  }
  // compiled once; config validation has already refused bad templates
  const limitKeys = config.keys === undefined ? undefined : compileKeyTemplates(config.keys)
  const reservationKey = resolveReservationKey(config, 'sources[].reservationKey')
  const warning = unsignedReservationsWarning(reservationKey)
  if (warning !== undefined) log.error(warning)
  const worker: ThrottledWorker<unknown, void> = createThrottledWorker<unknown, void>(
    config.queue,
    processor,
    {
      connection,
      limiter: wiring.limiter,
      keyOf,
      ...(limitKeys === undefined ? {} : { limitKeys }),
      concurrency: config.concurrency,
      instances: config.instances,
      logger: log,
      removeOnFail: { count: 100_000 },
      settings: { backoffStrategy },
      autorun: false,
      horizonMs: config.horizonMs,
      lateToleranceMs: config.lateToleranceMs,
      safetyNetMs: config.safetyNetMs,
      ...(reservationKey === undefined ? {} : { reservationKey }),
      inFlight: wiring.inFlight,
      breakers: wiring.breakers,
      isEndpointFailure: (error) =>
        typeof error === 'object' && error !== null && endpointFailures.has(error),
      onEvent: (event) => {
        wiring.metrics.decision(sourceLabel, event.outcome, event.merchantKey ?? 'invalid', event.delayMs)
        if (event.merchantKey !== undefined) wiring.activity.seen(event.merchantKey)
      },
    },
  )
  worker.on('error', (error) => log.error({ err: error }, 'worker error'))
  void worker.run()
  const queue = new Queue(config.queue, { connection })
  // Without a listener BullMQ prints the error to stderr whole, with ioredis's command.args (AUTH's password).
  queue.on('error', (error) => log.error({ err: error }, 'queue error'))
  wiring.metrics.addDepthReader(async () => {
    const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed')
    return Object.entries(counts).map(([state, value]) => ({ source: sourceLabel, state, value }))
  })
  wiring.metrics.addBacklogReader(sourceLabel, () => bullmqBacklog(worker.throttleStats()).totals)
  return {
    kind: 'bullmq',
    name: config.queue,
    concurrency: config.concurrency,
    ready: () => connection.status === 'ready' && worker.isRunning(),
    ratesChanged: (merchantKeys) => worker.ratesChanged(merchantKeys),
    backlog: () => bullmqBacklog(worker.throttleStats()),
    async close(deadlineMs) {
      const closed = worker.close()
      const timedOut = await Promise.race([closed.then(() => false), sleep(deadlineMs).then(() => true)])
      if (timedOut) {
        log.warn('in-flight jobs passed the shutdown deadline; they stay active and are recovered as stalled')
        await worker.close(true)
      }
      await queue.close()
      await connection.quit()
    },
  }
}

/**
 * useSourceRetries gives a job whose producer set no retries of its own (`attempts`
 * unset or 1) the source's: `attempts`, and backoffMs between them. BullMQ reads
 * `job.opts` when the processor throws, so it counts the attempts (`attemptsMade`), waits
 * the backoff and moves the job to the failed set once they are spent. They are set on
 * the job in hand, not saved: each run sets them again. Returns the job's attempts.
 */
export function useSourceRetries(job: Pick<Job, 'opts'>, attempts: number): number {
  const own = job.opts.attempts ?? 0
  if (own > 1) return own
  job.opts.attempts = attempts
  job.opts.backoff = { type: BACKOFF_TYPE }
  return attempts
}

/** backoffStrategy is the worker's custom BullMQ backoff: backoffMs after failed attempt `attemptsMade`. */
export function backoffStrategy(attemptsMade: number, type?: string): number {
  if (type !== BACKOFF_TYPE) {
    throw new TypeError(`BullMQ backoff: expected type '${BACKOFF_TYPE}' or a built-in one, got '${type}'`)
  }
  return backoffMs(attemptsMade)
}

/** RESERVATION_KEY_MIN_BYTES is the shortest reservationKey the adapter takes. */
export const RESERVATION_KEY_MIN_BYTES = 16

/**
 * resolveReservationKey reads the source's reservationKey (a secret reference) and checks
 * its length, so that a short key is a ConfigError naming `field`, never the key.
 */
export function resolveReservationKey(
  config: Pick<BullmqSourceConfig, 'reservationKey'>,
  field: string,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (config.reservationKey === undefined) return undefined
  const key = resolveSecret(config.reservationKey, field, env)
  const bytes = Buffer.byteLength(key, 'utf8')
  if (bytes < RESERVATION_KEY_MIN_BYTES) {
    throw new ConfigError(
      `config field '${field}': expected at least ${RESERVATION_KEY_MIN_BYTES} bytes, got ${bytes}`,
    )
  }
  return key
}

/**
 * unsignedReservationsWarning is what start-up logs at error level when a production worker
 * has no reservationKey; undefined otherwise. It still starts: producers are inside the
 * trust boundary by default, and the adapter ignores a carried time beyond the horizon.
 */
export function unsignedReservationsWarning(
  reservationKey: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (reservationKey !== undefined || env.NODE_ENV !== 'production') return undefined
  return 'sources[].reservationKey is not set: carried reservations are unsigned, so a producer that writes job data can forge one up to horizonMs ahead; set it to a secret shared by every worker of the queue'
}

/** bullmqBacklog is a worker's waiting jobs (throttleStats) as the status and metrics read them. */
export function bullmqBacklog(
  stats: ThrottleStats & { waiting: Record<string, MerchantWaiting> },
): SourceBacklog {
  const merchants: SourceBacklog['merchants'][number][] = []
  let parked = 0
  let buffered = 0
  let parkedMerchants = 0
  for (const [merchantKey, waiting] of Object.entries(stats.waiting)) {
    merchants.push({
      merchantKey,
      jobs: waiting.jobs,
      parked: waiting.parked,
      oldestAgeMs: waiting.oldestAgeMs,
      ...(waiting.limitKeys === undefined ? {} : { limitKeys: waiting.limitKeys }),
    })
    parked += waiting.parked
    buffered += waiting.delayed
    if (waiting.parked > 0) parkedMerchants++
  }
  return {
    merchants,
    totals: {
      parked,
      buffered,
      bufferedBytes: 0,
      parkedMerchants,
      parkTransactions: 0,
      parkFailures: 0,
      lateGrants: stats.late,
    },
  }
}
