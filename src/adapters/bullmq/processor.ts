import { setTimeout as sleep } from 'node:timers/promises'
import { DelayedError, type Job, type Processor, UnrecoverableError } from 'bullmq'
import { type Logger, pino } from 'pino'
import { InvalidMerchantKeyError, RetryableFailureError, RetryLaterError } from '../../errors.js'
import {
  type CircuitBreakers,
  type Clock,
  checkMerchantKey,
  type Granted,
  InFlightTable,
  type KeyedLimiter,
  wallClock,
} from '../../limiter/index.js'
import { readCarried, withCarried } from './carried.js'
import { decideCarried, decideReservation, type Timing } from './decision.js'
import { ParkedJobs } from './parked.js'
import { type SlotTable, takeSlot } from './slots.js'
import { ThrottleCounters, type ThrottleEvent, type ThrottleOutcome, type ThrottleStats } from './stats.js'

/** ThrottleLimiter is the part of KeyedLimiter the processor uses. */
export type ThrottleLimiter = Pick<KeyedLimiter, 'reserve' | 'penalize'>

/** DEFAULT_LEAD_MS covers BullMQ's lateness in starting delayed jobs (0 to ~110 ms measured) with room to spare. */
export const DEFAULT_LEAD_MS = 200

/**
 * DEFAULT_PARK_MS is how long a job parked for its merchant's in-flight cap stays delayed
 * when no job of the merchant finishes in this process to promote it sooner.
 */
export const DEFAULT_PARK_MS = 1_000

/** BreakerGate is the part of CircuitBreakers the processor uses. */
export type BreakerGate = Pick<CircuitBreakers, 'admit' | 'release' | 'success' | 'failure'>

/** DEFAULT_CLOCK_SKEW_TOLERANCE_MS matches the limiter's default tolerance. */
export const DEFAULT_CLOCK_SKEW_TOLERANCE_MS = 100

/** ThrottleOptions configure the throttled processor. */
export interface ThrottleOptions<D = unknown, R = unknown, N extends string = string> {
  /** limiter decides when each merchant's jobs may run. One per process, shared by its workers. */
  limiter: ThrottleLimiter
  /**
   * keyOf returns the merchant key of a job. Default: `job.data.merchantId`. A key that
   * checkMerchantKey refuses fails the job unrecoverably with the reason.
   */
  keyOf?: (job: Job<D, R, N>) => unknown
  /** cost returns the tokens a job takes, above 0 and at most the merchant's burst. Default: 1. */
  cost?: (job: Job<D, R, N>) => number
  /**
   * leadMs: a delayed job is due back from BullMQ this long before its reserved time and
   * waits the rest in the process; shorter delays are waited in the process from the
   * start. Default 200. Each waiting job holds a concurrency slot meanwhile.
   */
  leadMs?: number
  /**
   * clockSkewToleranceMs: how much earlier than expected a delayed job may come back
   * (clocks differ between hosts) and still run on its reservation after an in-process
   * wait, instead of being delayed again. Default 100, the limiter's default.
   */
  clockSkewToleranceMs?: number
  /**
   * wallClock reads wall time in ms. Default: Date.now, which BullMQ also reads to time its
   * delays; a clock that disagrees with it moves jobs to delayed at the wrong times.
   */
  wallClock?: Clock
  /**
   * inFlight counts each merchant's jobs in flight and holds them to their `maxInFlight`.
   * Share one table between the workers of a process for a process-wide cap. Default: a
   * table of its own without caps (it still counts, for fair slots).
   */
  inFlight?: SlotTable
  /**
   * concurrency is the worker's number of slots, for fair slots: a job that would take the
   * last free slot while its merchant holds its fair share is parked. Default: no fair slots.
   */
  concurrency?: number
  /** parkMs: how long a parked job stays delayed unless promoted sooner, in ms. Default 1 000. */
  parkMs?: number
  /**
   * breakers: per-merchant circuit breakers. An open breaker delays the merchant's jobs
   * to its retry time without attempting them; the processor reports each attempt's
   * outcome (see isEndpointFailure). Default: none.
   */
  breakers?: BreakerGate
  /**
   * isEndpointFailure says whether an error thrown by the handler counts against the
   * merchant's breaker. Default: a RetryableFailureError (timeout, connection error, 5xx).
   * Anything else the handler settles (a result, RetryLaterError, a permanent failure)
   * shows the endpoint answering and counts as a success.
   */
  isEndpointFailure?: (error: unknown) => boolean
  /** logger for decisions (debug), invalid keys (warn) and retry-later (info). Default: silent. */
  logger?: Logger
  /** onEvent is called once per outcome, synchronously; it must not throw. */
  onEvent?: (event: ThrottleEvent) => void
}

/** ThrottledProcessor is a BullMQ processor with its outcome counters. */
export type ThrottledProcessor<D = unknown, R = unknown, N extends string = string> = ((
  job: Job<D, R, N>,
  token?: string,
  signal?: AbortSignal,
) => Promise<R>) & {
  /** stats counts outcomes since the processor was created. */
  stats(): ThrottleStats
  /** inFlight is the number of this processor's jobs counted in flight now. */
  inFlight(): number
}

/**
 * createThrottledProcessor wraps `handler` so that each merchant's jobs run at the
 * merchant's rate. A job that may run now runs; one that must wait a little waits in the
 * process; one that must wait longer is moved to BullMQ's delayed set with its
 * reservation on the job and DelayedError (no attempt spent), and runs on that
 * reservation, not charged again, on whichever worker fetches it. Every run of a job is
 * charged once. A handler that throws RetryLaterError penalizes the merchant and delays
 * the job by the asked time; other errors go to BullMQ's attempts and backoff.
 *
 * Pass it to a BullMQ Worker as its processor: it needs the lock token BullMQ passes.
 * When `handler` takes a third parameter, it gets BullMQ's AbortSignal (worker.cancelJob),
 * which also ends an in-process wait.
 */
export function createThrottledProcessor<D = unknown, R = unknown, N extends string = string>(
  handler: Processor<D, R, N>,
  options: ThrottleOptions<D, R, N>,
): ThrottledProcessor<D, R, N> {
  if (typeof handler !== 'function') {
    throw new TypeError(`createThrottledProcessor: expected a handler function, got ${typeof handler}`)
  }
  checkOptions(options)
  const limiter = options.limiter
  const keyOf = options.keyOf ?? merchantIdOf
  const keySource = options.keyOf === undefined ? 'job.data.merchantId' : 'keyOf(job)'
  const costOf = options.cost
  const clock = options.wallClock ?? wallClock
  const timing: Timing = {
    leadMs: options.leadMs ?? DEFAULT_LEAD_MS,
    clockSkewToleranceMs: options.clockSkewToleranceMs ?? DEFAULT_CLOCK_SKEW_TOLERANCE_MS,
  }
  const log = (options.logger ?? pino({ level: 'silent' })).child({ component: 'bullmq-throttle' })
  // Per-decision logs cost an object per job: decided once, when the processor is made.
  const debug = log.isLevelEnabled('debug')
  const counters = new ThrottleCounters(options.onEvent)
  const slots: SlotTable = options.inFlight ?? new InFlightTable()
  const concurrency = options.concurrency ?? Number.POSITIVE_INFINITY
  const parkMs = options.parkMs ?? DEFAULT_PARK_MS
  const breakers = options.breakers
  const isEndpointFailure = options.isEndpointFailure ?? isRetryableFailure
  const parked = new ParkedJobs()
  let inFlight = 0

  const record = (
    outcome: ThrottleOutcome,
    job: Job<D, R, N>,
    merchantKey: string | undefined,
    delayMs = 0,
  ) => {
    counters.record({ outcome, jobId: job.id, merchantKey, delayMs })
    if (debug) log.debug({ jobId: job.id, merchantKey, outcome, delayMs }, 'throttle decision')
  }

  const merchantKeyOf = (job: Job<D, R, N>): string => {
    let check: ReturnType<typeof checkMerchantKey>
    try {
      check = checkMerchantKey(keyOf(job))
    } catch (error) {
      check = { ok: false, reason: `keyOf threw: ${error instanceof Error ? error.message : String(error)}` }
    }
    if (check.ok) return check.key
    const invalid = new InvalidMerchantKeyError(`${check.reason} (${keySource})`)
    record('invalid-key', job, undefined)
    log.warn({ jobId: job.id, reason: invalid.reason }, 'job failed: invalid merchant key')
    throw new UnrecoverableError(invalid.message)
  }

  const reserve = (job: Job<D, R, N>, merchantKey: string) => {
    try {
      const cost = costOf === undefined ? 1 : costOf(job)
      if (typeof cost !== 'number' || !Number.isFinite(cost) || cost <= 0) {
        throw new TypeError(`expected cost(job) to be a finite number above 0, got ${String(cost)}`)
      }
      return limiter.reserve(merchantKey, cost)
    } catch (error) {
      if (!(error instanceof TypeError || error instanceof RangeError)) throw error
      record('invalid-cost', job, merchantKey)
      log.warn({ jobId: job.id, merchantKey, reason: error.message }, 'job failed: invalid cost')
      throw new UnrecoverableError(`invalid cost: ${error.message}`)
    }
  }

  const delayJob = async (job: Job<D, R, N>, token: string, untilWallMs: number): Promise<never> => {
    await job.moveToDelayed(untilWallMs, token)
    throw new DelayedError()
  }

  const carryAndDelay = async (
    job: Job<D, R, N>,
    token: string,
    merchantKey: string,
    reservation: Granted,
    reservedAtWallMs: number,
    delayUntilWallMs: number,
  ): Promise<never> => {
    const data = withCarried(job.data, {
      reservedAtWallMs,
      attemptsMade: job.attemptsMade,
      attemptsStarted: job.attemptsStarted,
      cost: reservation.cost,
    })
    if (data === undefined) {
      // The job cannot carry the reservation, so it would be charged again on its
      // return: give the tokens back and let it ask again when they would be due.
      reservation.cancel()
      record('deferred', job, merchantKey, reservation.delayMs)
      return delayJob(job, token, reservedAtWallMs)
    }
    try {
      await job.updateData(data as D)
    } catch (error) {
      reservation.cancel()
      throw error
    }
    record('delayed', job, merchantKey, reservation.delayMs)
    return delayJob(job, token, delayUntilWallMs)
  }

  const run = async (
    job: Job<D, R, N>,
    token: string,
    signal: AbortSignal | undefined,
    merchantKey: string,
    attempt: { made: boolean },
  ) => {
    try {
      attempt.made = true
      const result = await handler(job, token, signal)
      breakers?.success(merchantKey)
      return result
    } catch (error) {
      if (isEndpointFailure(error)) breakers?.failure(merchantKey)
      else breakers?.success(merchantKey)
      if (!(error instanceof RetryLaterError)) throw error
      limiter.penalize(merchantKey, error.retryAfterMs)
      record('retry-later', job, merchantKey, error.retryAfterMs)
      log.info(
        { jobId: job.id, merchantKey, retryAfterMs: error.retryAfterMs },
        'merchant asked to retry later',
      )
      return delayJob(job, token, clock.now() + error.retryAfterMs)
    }
  }

  async function processJob(job: Job<D, R, N>, token?: string, signal?: AbortSignal): Promise<R> {
    if (typeof token !== 'string') {
      throw new TypeError(
        `throttled processor: expected the worker's lock token as second argument, got ${token}`,
      )
    }
    const merchantKey = merchantKeyOf(job)
    if (breakers !== undefined) {
      const admission = breakers.admit(merchantKey)
      if (!admission.allowed) {
        record('breaker-open', job, merchantKey, admission.retryInMs)
        return delayJob(job, token, clock.now() + admission.retryInMs)
      }
    }
    const slot = takeSlot(slots, merchantKey, inFlight, concurrency)
    if (slot !== 'start') {
      breakers?.release(merchantKey)
      record(slot === 'at-cap' ? 'parked' : 'parked-fair', job, merchantKey, parkMs)
      await job.moveToDelayed(clock.now() + parkMs, token)
      parked.park(merchantKey, job)
      // A job of the merchant may have finished while this one was being parked. (Not for a
      // fair-share park: promoting it now would only send it round the queue again.)
      if (slot === 'at-cap' && slots.count(merchantKey) < slots.capOf(merchantKey)) promoteParked(merchantKey)
      throw new DelayedError()
    }
    inFlight++
    const attempt = { made: false }
    try {
      return await processAdmitted(job, token, signal, merchantKey, attempt)
    } finally {
      inFlight--
      slots.finish(merchantKey)
      if (!attempt.made) breakers?.release(merchantKey)
      promoteParked(merchantKey)
    }
  }

  /** promoteParked promotes the oldest job of `merchantKey` parked by this process that is still delayed. */
  function promoteParked(merchantKey: string): void {
    const next = parked.takeOldest(merchantKey)
    if (next === undefined) return
    next.promote().then(
      () => {
        if (debug) log.debug({ jobId: next.id, merchantKey }, 'parked job promoted')
      },
      // Promoted already by its delay, or taken by another process: try the next one.
      () => promoteParked(merchantKey),
    )
  }

  async function processAdmitted(
    job: Job<D, R, N>,
    token: string,
    signal: AbortSignal | undefined,
    merchantKey: string,
    attempt: { made: boolean },
  ): Promise<R> {
    const nowWallMs = clock.now()
    const carried = readCarried(job.data)
    const back = decideCarried(carried, job, nowWallMs, timing)
    switch (back.action) {
      case 'run':
        record('reused', job, merchantKey)
        return run(job, token, signal, merchantKey, attempt)
      case 'wait':
        record('reused', job, merchantKey, back.waitMs)
        await sleep(back.waitMs, undefined, { signal })
        return run(job, token, signal, merchantKey, attempt)
      case 'redelay': {
        const again = { ...carried!, attemptsStarted: job.attemptsStarted }
        await job.updateData(withCarried(job.data, again) as D)
        record('redelayed', job, merchantKey, again.reservedAtWallMs - nowWallMs)
        return delayJob(job, token, back.delayUntilWallMs)
      }
      case 'none':
        break
    }
    const reservation = reserve(job, merchantKey)
    const decision = decideReservation(reservation, nowWallMs, timing)
    switch (decision.action) {
      case 'run':
        record('granted', job, merchantKey)
        return run(job, token, signal, merchantKey, attempt)
      case 'wait':
        record('waited', job, merchantKey, decision.waitMs)
        await sleep(decision.waitMs, undefined, { signal })
        return run(job, token, signal, merchantKey, attempt)
      case 'delay':
        // decideReservation answers 'delay' only for a granted reservation.
        return carryAndDelay(
          job,
          token,
          merchantKey,
          reservation as Granted,
          decision.reservedAtWallMs,
          decision.delayUntilWallMs,
        )
      case 'defer':
        record('deferred', job, merchantKey, reservation.delayMs)
        return delayJob(job, token, decision.delayUntilWallMs)
    }
  }

  // BullMQ gives a processor of three parameters an AbortSignal, at the cost of an
  // AbortController per job: ask for it only when the handler takes it.
  const processor =
    handler.length >= 3
      ? (job: Job<D, R, N>, token?: string, signal?: AbortSignal) => processJob(job, token, signal)
      : (job: Job<D, R, N>, token?: string) => processJob(job, token, undefined)
  return Object.assign(processor, { stats: () => counters.snapshot(), inFlight: () => inFlight })
}

function isRetryableFailure(error: unknown): boolean {
  return error instanceof RetryableFailureError
}

function merchantIdOf(job: { data: unknown }): unknown {
  const data = job.data
  return data !== null && typeof data === 'object' ? (data as { merchantId?: unknown }).merchantId : undefined
}

function checkOptions<D, R, N extends string>(options: ThrottleOptions<D, R, N>): void {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`throttle options: expected an object, got ${String(options)}`)
  }
  const { limiter } = options
  if (limiter === null || typeof limiter !== 'object' || typeof limiter.reserve !== 'function') {
    throw new TypeError(`throttle options: expected limiter to be a KeyedLimiter, got ${String(limiter)}`)
  }
  for (const name of ['keyOf', 'cost', 'onEvent', 'isEndpointFailure'] as const) {
    const value = options[name]
    if (value !== undefined && typeof value !== 'function') {
      throw new TypeError(`throttle options: expected ${name} to be a function, got ${typeof value}`)
    }
  }
  if (
    options.concurrency !== undefined &&
    !(Number.isInteger(options.concurrency) && options.concurrency >= 1)
  ) {
    throw new TypeError(
      `throttle options: expected concurrency to be a whole number >= 1, got ${String(options.concurrency)}`,
    )
  }
  for (const name of ['leadMs', 'clockSkewToleranceMs', 'parkMs'] as const) {
    const value = options[name]
    if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
      throw new TypeError(
        `throttle options: expected ${name} to be a finite number >= 0, got ${String(value)}`,
      )
    }
  }
}
