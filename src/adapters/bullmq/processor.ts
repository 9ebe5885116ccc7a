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
  type LimitKeys,
  type Reservation,
  wallClock,
} from '../../limiter/index.js'
import { innermostKey, keyList, limitKeysOf } from '../limit-keys.js'
import { Backlog, type BacklogEntry } from './backlog.js'
import { RedisBacklogStore } from './backlog-store.js'
import {
  type CarriedReservation,
  readCarried,
  readParked,
  signCarried,
  verifyCarried,
  withCarried,
} from './carried.js'
import {
  type CarriedDecision,
  decideCarried,
  decideReservation,
  MIN_DEFER_MS,
  type Timing,
} from './decision.js'
import { nodeTimers, type Timers } from './due-queue.js'
import { type JobQueue, moveToDelayed, queueOf } from './moves.js'
import { ParkedJobs } from './parked.js'
import { type SlotTable, takeSlot } from './slots.js'
import { ThrottleCounters, type ThrottleEvent, type ThrottleOutcome, type ThrottleStats } from './stats.js'
import { DelayedJobs, type MerchantWaiting } from './waiting.js'

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

/**
 * DEFAULT_HORIZON_MS is the furthest ahead a job is given a reservation; past it, it is
 * parked in its merchant's backlog. It is also how long a rate cut takes to reach the
 * backlog (reservations made stand), and about how long a raise does.
 */
export const DEFAULT_HORIZON_MS = 1_000

/** DEFAULT_LATE_TOLERANCE_MS: a job back later than this after its reservation is charged again. */
export const DEFAULT_LATE_TOLERANCE_MS = 250

/** DEFAULT_SAFETY_NET_MS is how long a parked job stays delayed if no worker promotes it. */
export const DEFAULT_SAFETY_NET_MS = 15 * 60_000

/**
 * MAX_ASKS_IN_PROCESS bounds how many times in a row a job whose key list is deferred
 * within the lead waits in the process and asks again (other merchants under the same
 * parent may take each next unit); after that it is parked in its merchant's backlog.
 */
const MAX_ASKS_IN_PROCESS = 8

/** DEFAULT_PROMOTE_BATCH bounds the jobs one promotion call moves. */
export const DEFAULT_PROMOTE_BATCH = 100

/** ThrottleOptions configure the throttled processor. */
export interface ThrottleOptions<D = unknown, R = unknown, N extends string = string> {
  /** limiter decides when each merchant's jobs may run. One per process, shared by its workers. */
  limiter: ThrottleLimiter
  /**
   * keyOf returns the merchant key of a job. Default: `job.data.merchantId`. A key that
   * checkMerchantKey refuses fails the job unrecoverably with the reason.
   */
  keyOf?: (job: Job<D, R, N>) => unknown
  /**
   * limitKeys gives the keys a job's tokens are taken from, outermost first (e.g.
   * `['psp:adyen', 'psp:adyen:m_42']`): one decision charges every key or none. Default:
   * the merchant key alone. Only the limiter's decisions take them; order, the backlog,
   * in-flight caps, breakers and fair slots stay per merchant, and a Retry-After penalizes
   * the innermost key. A throw or a bad list (empty, more than 4, a repeat, a bad key)
   * fails the job unrecoverably, as a bad merchant key does.
   */
  limitKeys?: (merchantKey: string, data: D) => LimitKeys
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
   * horizonMs: the furthest ahead a job is given a reservation, in ms. A job whose tokens
   * are further ahead is parked in its merchant's backlog (a list in Redis under the
   * queue's prefix) and promoted in order as the tokens come within the horizon. Default 1 000.
   */
  horizonMs?: number
  /**
   * lateToleranceMs: a delayed job that comes back more than this after its reserved time
   * is charged again in the window in which it runs, so that a pause of every worker does
   * not end in all the missed slots at once. Default 250.
   */
  lateToleranceMs?: number
  /**
   * safetyNetMs: how long a parked job stays delayed in BullMQ if no worker promotes it
   * (every worker gone): it then comes back as an ordinary job. Default 900 000 (15 min).
   */
  safetyNetMs?: number
  /**
   * reservationKey: a secret the workers of a queue share. Each carried reservation is
   * signed with it (HMAC-SHA256 over the job's id, reserved time, attempts and cost), and
   * one without a valid signature is charged as if absent, so a producer that writes a
   * forged reservation into job data gains nothing. Without it only a bound holds: a
   * carried time further ahead than the horizon is ignored. Default: none.
   */
  reservationKey?: string | Buffer
  /** timers schedule promotions; a fake for tests. Default: Node's. */
  timers?: Timers
  /**
   * sharedOrder says whether other processes take jobs of the same queue (the worker sets
   * it from `instances`). Then a job whose tokens are further than the lead is parked in
   * its merchant's backlog instead of delayed on this process's own reservation, so that
   * the jobs every process fetches take their turns from the one ordered backlog. Default:
   * never.
   */
  sharedOrder?: () => boolean
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
  /** jobsInFlight is the number of this processor's jobs holding a slot now. */
  jobsInFlight(): number
  /** waiting is each merchant's jobs waiting (delayed on a reservation + parked) and the age of the oldest. */
  waiting(): Record<string, MerchantWaiting>
  /**
   * attach binds the processor to its queue before its first job: merchants with a
   * backlog left in Redis (by processes that are gone) are promoted from at once.
   */
  attach(queue: JobQueue): Promise<void>
  /** ratesChanged tells the processor that rates changed (all, or those of `merchantKeys`): backlogs feel it at once. */
  ratesChanged(merchantKeys?: Iterable<string>): void
  /** close stops promoting. */
  close(): void
}

/**
 * createThrottledProcessor wraps `handler` so that each merchant's jobs run at the
 * merchant's rate. A job that may run now runs; one that must wait a little waits in the
 * process; one whose tokens are within the horizon is moved to BullMQ's delayed set with
 * its reservation on the job and DelayedError (no attempt spent), and runs on that
 * reservation, not charged again, on whichever worker fetches it. A job whose tokens are
 * further than the horizon is parked in its merchant's backlog (kept in order in Redis,
 * the job delayed by the safety net meanwhile) and promoted in order as the merchant's
 * tokens come within the horizon. Every run of a job is charged once. A handler that
 * throws RetryLaterError penalizes the merchant and delays the job by the asked time;
 * other errors go to BullMQ's attempts and backoff.
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
  const throttle = new Throttle(handler, options)
  // BullMQ gives a processor of three parameters an AbortSignal, at the cost of an
  // AbortController per job: ask for it only when the handler takes it.
  const processor =
    handler.length >= 3
      ? (job: Job<D, R, N>, token?: string, signal?: AbortSignal) => throttle.process(job, token, signal)
      : (job: Job<D, R, N>, token?: string) => throttle.process(job, token, undefined)
  return Object.assign(processor, {
    stats: () => throttle.counters.snapshot(),
    jobsInFlight: () => throttle.jobsInFlight,
    waiting: () => throttle.waiting(),
    attach: (queue: JobQueue) => throttle.attach(queue),
    ratesChanged: (merchantKeys?: Iterable<string>) => throttle.backlog?.ratesChanged(merchantKeys),
    close: () => throttle.close(),
  })
}

/** JobKeys are a job's merchant key (its order, slots, breaker) and the keys its tokens are taken from. */
interface JobKeys {
  merchantKey: string
  limitKeys: LimitKeys
}

/** Attempt records whether the handler was called, for the breaker's bookkeeping. */
interface Attempt {
  made: boolean
}

/** Throttle holds one throttled processor's state; its `process` is the processor. */
class Throttle<D, R, N extends string> {
  readonly counters: ThrottleCounters
  jobsInFlight = 0
  backlog: Backlog | undefined
  private readonly limiter: ThrottleLimiter
  private readonly keyOf: (job: Job<D, R, N>) => unknown
  private readonly keySource: string
  private readonly clock: Clock
  private readonly timing: Timing
  private readonly log: Logger
  private readonly debug: boolean
  /** inFlight counts each merchant's jobs in flight (the `inFlight` option), for caps and fair slots. */
  private readonly inFlight: SlotTable
  private readonly concurrency: number
  private readonly parkMs: number
  private readonly safetyNetMs: number
  private readonly reservationKey: Buffer | undefined
  private readonly isEndpointFailure: (error: unknown) => boolean
  private readonly parked = new ParkedJobs()
  private readonly delayed: DelayedJobs
  /**
   * askingAgain holds the merchants with a job waiting in the process to ask again (a key
   * list's short deferral): their later jobs park behind it, so that none runs before it.
   */
  private readonly askingAgain = new Set<string>()
  private closed = false

  constructor(
    private readonly handler: Processor<D, R, N>,
    private readonly options: ThrottleOptions<D, R, N>,
  ) {
    this.limiter = options.limiter
    this.keyOf = options.keyOf ?? merchantIdOf
    this.keySource = options.keyOf === undefined ? 'job.data.merchantId' : 'keyOf(job)'
    this.clock = options.wallClock ?? wallClock
    this.timing = {
      leadMs: options.leadMs ?? DEFAULT_LEAD_MS,
      clockSkewToleranceMs: options.clockSkewToleranceMs ?? DEFAULT_CLOCK_SKEW_TOLERANCE_MS,
      lateToleranceMs: options.lateToleranceMs ?? DEFAULT_LATE_TOLERANCE_MS,
      horizonMs: options.horizonMs ?? DEFAULT_HORIZON_MS,
    }
    this.log = (options.logger ?? pino({ level: 'silent' })).child({ component: 'bullmq-throttle' })
    // Per-decision logs cost an object per job: decided once, when the processor is made.
    this.debug = this.log.isLevelEnabled('debug')
    this.counters = new ThrottleCounters(options.onEvent)
    this.inFlight = options.inFlight ?? new InFlightTable()
    this.concurrency = options.concurrency ?? Number.POSITIVE_INFINITY
    this.parkMs = options.parkMs ?? DEFAULT_PARK_MS
    this.safetyNetMs = options.safetyNetMs ?? DEFAULT_SAFETY_NET_MS
    this.reservationKey = reservationKeyOf(options.reservationKey)
    this.isEndpointFailure = options.isEndpointFailure ?? isRetryableFailure
    this.delayed = new DelayedJobs(this.timing.horizonMs + this.timing.leadMs)
  }

  async process(job: Job<D, R, N>, token?: string, signal?: AbortSignal): Promise<R> {
    if (typeof token !== 'string') {
      throw new TypeError(
        `throttled processor: expected the worker's lock token as second argument, got ${token}`,
      )
    }
    const merchantKey = this.merchantKeyOf(job)
    const limitKeys = this.limitKeysOf(job, merchantKey)
    const carried = this.carriedOf(job)
    const back = decideCarried(carried, job, this.clock.now(), this.timing)
    // A job back on time for its reservation has its tokens spent on it: if it cannot
    // start now, it keeps them (held) instead of being charged again when it comes back.
    const paid = back.action === 'run' || back.action === 'wait' ? carried : undefined
    const breakers = this.options.breakers
    if (breakers !== undefined) {
      const admission = breakers.admit(merchantKey)
      if (!admission.allowed) {
        this.record('breaker-open', job, merchantKey, admission.retryInMs)
        return this.delayHolding(job, token, this.clock.now() + admission.retryInMs, paid)
      }
    }
    let slot = takeSlot(this.inFlight, merchantKey, this.jobsInFlight, this.concurrency)
    // Paid for already: parking it for fairness would only waste its tokens.
    if (slot === 'over-share' && paid !== undefined && this.inFlight.tryStart(merchantKey)) slot = 'start'
    if (slot !== 'start') {
      breakers?.release(merchantKey)
      return this.parkForSlot(job, token, merchantKey, slot, paid)
    }
    this.jobsInFlight++
    const attempt: Attempt = { made: false }
    try {
      const keys: JobKeys = { merchantKey, limitKeys }
      return await this.reserveAndRun(job, token, signal, keys, back, carried, attempt)
    } finally {
      this.jobsInFlight--
      this.inFlight.finish(merchantKey)
      if (!attempt.made) breakers?.release(merchantKey)
      this.promoteParked(merchantKey)
    }
  }

  /** attach binds the backlog to `queue` and promotes from the backlogs left in Redis. */
  async attach(queue: JobQueue): Promise<void> {
    await this.backlogOf(queue).start()
  }

  close(): void {
    this.closed = true
    this.backlog?.stop()
  }

  waiting(): Record<string, MerchantWaiting> {
    const now = this.clock.now()
    const result: Record<string, MerchantWaiting> = {}
    const delayed = this.delayed.byMerchant(now)
    for (const [merchantKey, state] of this.backlog?.merchants() ?? []) {
      const mine = delayed.get(merchantKey)
      const oldest = Math.min(state.oldestAddedAtWallMs ?? now, mine?.oldestAddedAtWallMs ?? now)
      const count = (mine?.delayed ?? 0) + state.parked
      const limitKeys = mine?.limitKeys ?? state.limitKeys ?? merchantKey
      result[merchantKey] = {
        jobs: count,
        delayed: mine?.delayed ?? 0,
        parked: state.parked,
        oldestAgeMs: now - oldest,
        limitKeys: keyList(limitKeys),
      }
    }
    for (const [merchantKey, mine] of delayed) {
      if (result[merchantKey] !== undefined) continue
      const oldestAgeMs = now - mine.oldestAddedAtWallMs
      const limitKeys = keyList(mine.limitKeys)
      result[merchantKey] = { jobs: mine.delayed, delayed: mine.delayed, parked: 0, oldestAgeMs, limitKeys }
    }
    return result
  }

  private record(outcome: ThrottleOutcome, job: Job<D, R, N>, merchantKey: string | undefined, delayMs = 0) {
    this.counters.record({ outcome, jobId: job.id, merchantKey, delayMs })
    if (this.debug) this.log.debug({ jobId: job.id, merchantKey, outcome, delayMs }, 'throttle decision')
  }

  private merchantKeyOf(job: Job<D, R, N>): string {
    let check: ReturnType<typeof checkMerchantKey>
    try {
      check = checkMerchantKey(this.keyOf(job))
    } catch (error) {
      check = { ok: false, reason: `keyOf threw: ${error instanceof Error ? error.message : String(error)}` }
    }
    if (check.ok) return check.key
    const invalid = new InvalidMerchantKeyError(`${check.reason} (${this.keySource})`)
    this.record('invalid-key', job, undefined)
    this.log.warn({ jobId: job.id, reason: invalid.reason }, 'job failed: invalid merchant key')
    throw new UnrecoverableError(invalid.message)
  }

  /** limitKeysOf is the keys `job` is limited by (see ThrottleOptions.limitKeys); a bad answer fails it as a bad merchant key. */
  private limitKeysOf(job: Job<D, R, N>, merchantKey: string): LimitKeys {
    const { limitKeys } = this.options
    if (limitKeys === undefined) return merchantKey
    const check = limitKeysOf(limitKeys, merchantKey, job.data)
    if (check.ok) return check.keys
    const invalid = new InvalidMerchantKeyError(`${check.reason} (limitKeys(merchantKey, job.data))`)
    this.record('invalid-key', job, merchantKey)
    this.log.warn({ jobId: job.id, merchantKey, reason: invalid.reason }, 'job failed: invalid limit keys')
    throw new UnrecoverableError(invalid.message)
  }

  /** carriedOf is the reservation `job` carries, when it is one the workers made (signed with their key, when set). */
  private carriedOf(job: Job<D, R, N>): CarriedReservation | undefined {
    const carried = readCarried(job.data)
    if (carried === undefined || this.reservationKey === undefined) return carried
    if (verifyCarried(this.reservationKey, job.id!, carried)) return carried
    this.log.warn({ jobId: job.id }, 'job carries a reservation without a valid signature; charging it')
    return undefined
  }

  private sign(jobId: string, carried: CarriedReservation): CarriedReservation {
    return this.reservationKey === undefined ? carried : signCarried(this.reservationKey, jobId, carried)
  }

  private backlogOf(queue: JobQueue): Backlog {
    this.backlog ??= new Backlog({
      store: new RedisBacklogStore(() => queue.client, queue),
      limiter: this.limiter,
      wallClock: this.clock,
      timers: this.options.timers ?? nodeTimers,
      horizonMs: this.timing.horizonMs,
      leadMs: this.timing.leadMs,
      batchSize: DEFAULT_PROMOTE_BATCH,
      sign: (jobId, carried) => this.sign(jobId, carried),
      logger: this.log,
      onPromoted: (merchantKey, entry, reservedAtWallMs) => {
        const now = this.clock.now()
        this.delayed.add(
          merchantKey,
          entry.limitKeys ?? merchantKey,
          now,
          reservedAtWallMs,
          entry.addedAtWallMs,
        )
        this.counters.record({
          outcome: 'promoted',
          jobId: entry.jobId,
          merchantKey,
          delayMs: reservedAtWallMs - now,
        })
      },
    })
    if (this.closed) this.backlog.stop()
    return this.backlog
  }

  private costOf(job: Job<D, R, N>, merchantKey: string): number {
    const cost = this.options.cost === undefined ? 1 : this.options.cost(job)
    if (typeof cost !== 'number' || !Number.isFinite(cost) || cost <= 0) {
      this.invalidCost(
        job,
        merchantKey,
        `expected cost(job) to be a finite number above 0, got ${String(cost)}`,
      )
    }
    return cost
  }

  private reserve(job: Job<D, R, N>, keys: JobKeys, cost: number) {
    try {
      return this.limiter.reserve(keys.limitKeys, cost)
    } catch (error) {
      if (!(error instanceof TypeError || error instanceof RangeError)) throw error
      return this.invalidCost(job, keys.merchantKey, error.message)
    }
  }

  private invalidCost(job: Job<D, R, N>, merchantKey: string, reason: string): never {
    this.record('invalid-cost', job, merchantKey)
    this.log.warn({ jobId: job.id, merchantKey, reason }, 'job failed: invalid cost')
    throw new UnrecoverableError(`invalid cost: ${reason}`)
  }

  private async delayJob(
    job: Job<D, R, N>,
    token: string,
    untilWallMs: number,
    data?: Record<string, unknown>,
  ): Promise<never> {
    await moveToDelayed(job as Job, token, this.clock.now(), untilWallMs, data)
    throw new DelayedError()
  }

  /** delayHolding delays `job`, keeping `paid` on it as a held reservation when it has one. */
  private delayHolding(
    job: Job<D, R, N>,
    token: string,
    untilWallMs: number,
    paid: CarriedReservation | undefined,
  ): Promise<never> {
    if (paid === undefined) return this.delayJob(job, token, untilWallMs)
    const held = this.sign(job.id!, { ...paid, attemptsStarted: job.attemptsStarted, held: true })
    return this.delayJob(job, token, untilWallMs, withCarried(job.data, held))
  }

  private async parkForSlot(
    job: Job<D, R, N>,
    token: string,
    merchantKey: string,
    slot: 'at-cap' | 'over-share',
    paid: CarriedReservation | undefined,
  ): Promise<never> {
    this.record(slot === 'at-cap' ? 'parked' : 'parked-fair', job, merchantKey, this.parkMs)
    try {
      await this.delayHolding(job, token, this.clock.now() + this.parkMs, paid)
    } catch (error) {
      if (!(error instanceof DelayedError)) throw error
    }
    this.parked.park(merchantKey, job)
    // A job of the merchant may have finished while this one was being parked. (Not for a
    // fair-share park: promoting it now would only send it round the queue again.)
    const { inFlight } = this
    if (slot === 'at-cap' && inFlight.count(merchantKey) < inFlight.capOf(merchantKey)) {
      this.promoteParked(merchantKey)
    }
    throw new DelayedError()
  }

  /** promoteParked promotes the oldest job of `merchantKey` parked for its cap by this process that is still delayed. */
  private promoteParked(merchantKey: string): void {
    const next = this.parked.takeOldest(merchantKey)
    if (next === undefined) return
    next.promote().then(
      () => {
        if (this.debug) this.log.debug({ jobId: next.id, merchantKey }, 'parked job promoted')
      },
      // Promoted already by its delay, or taken by another process: try the next one.
      () => this.promoteParked(merchantKey),
    )
  }

  private async run(
    job: Job<D, R, N>,
    token: string,
    signal: AbortSignal | undefined,
    keys: JobKeys,
    attempt: Attempt,
  ): Promise<R> {
    const { merchantKey } = keys
    const breakers = this.options.breakers
    try {
      attempt.made = true
      const result = await this.handler(job, token, signal)
      breakers?.success(merchantKey)
      return result
    } catch (error) {
      if (this.isEndpointFailure(error)) breakers?.failure(merchantKey)
      else breakers?.success(merchantKey)
      if (!(error instanceof RetryLaterError)) throw error
      this.limiter.penalize(innermostKey(keys.limitKeys), error.retryAfterMs)
      this.record('retry-later', job, merchantKey, error.retryAfterMs)
      this.log.info(
        { jobId: job.id, merchantKey, retryAfterMs: error.retryAfterMs },
        'merchant asked to retry later',
      )
      return this.delayJob(job, token, this.clock.now() + error.retryAfterMs)
    }
  }

  /**
   * reserveAndRun runs `job` on the reservation it carries, or charges it: runs it now,
   * after a short wait, delays it on a reservation, or parks it in its merchant's backlog.
   */
  private async reserveAndRun(
    job: Job<D, R, N>,
    token: string,
    signal: AbortSignal | undefined,
    keys: JobKeys,
    back: CarriedDecision,
    carried: CarriedReservation | undefined,
    attempt: Attempt,
  ): Promise<R> {
    const { merchantKey } = keys
    switch (back.action) {
      case 'run':
        this.record('reused', job, merchantKey)
        return this.run(job, token, signal, keys, attempt)
      case 'wait':
        this.record('reused', job, merchantKey, back.waitMs)
        await sleep(back.waitMs, undefined, { signal })
        return this.run(job, token, signal, keys, attempt)
      case 'redelay': {
        const again = this.sign(job.id!, { ...carried!, attemptsStarted: job.attemptsStarted })
        this.record('redelayed', job, merchantKey, again.reservedAtWallMs - this.clock.now())
        return this.delayJob(job, token, back.delayUntilWallMs, withCarried(job.data, again))
      }
      case 'none':
        return this.charge(job, token, signal, keys, back, attempt)
    }
  }

  private async charge(
    job: Job<D, R, N>,
    token: string,
    signal: AbortSignal | undefined,
    keys: JobKeys,
    back: CarriedDecision,
    attempt: Attempt,
    asks = 0,
  ): Promise<R> {
    const { merchantKey } = keys
    const nowWallMs = this.clock.now()
    const cost = this.costOf(job, merchantKey)
    const reservation = this.reserve(job, keys, cost)
    const decision = this.decide(reservation, nowWallMs, keys, asks)
    const backlog = this.backlog ?? this.backlogOf(queueOf(job as Job))
    // A job back late from its reservation, or from its safety-net delay, is older than the
    // jobs parked now: it is reserved for at once, or parked in its place among them.
    const fromSafetyNet = readParked(job.data) !== undefined
    const late = back.action === 'none' && back.reason === 'late'
    if (late && asks === 0) this.record('late', job, merchantKey)
    const ahead = fromSafetyNet || late
    if (fromSafetyNet && asks === 0) backlog.wake(merchantKey)
    const tableFull = !reservation.ok && reservation.reason === 'table-full'
    const behind = backlog.holds(merchantKey) || (asks === 0 && this.askingAgain.has(merchantKey))
    if (!tableFull && !ahead && behind) {
      // Behind the merchant's parked jobs, whatever its tokens say: order within a merchant.
      if (reservation.ok) reservation.cancel()
      return this.park(job, token, keys, cost, 0)
    }
    if (decision.action === 'delay' && !ahead && this.options.sharedOrder?.() === true) {
      ;(reservation as Granted).cancel()
      return this.park(job, token, keys, cost, 0)
    }
    switch (decision.action) {
      case 'run':
        this.record('granted', job, merchantKey)
        return this.run(job, token, signal, keys, attempt)
      case 'wait':
        this.record('waited', job, merchantKey, decision.waitMs)
        try {
          await sleep(decision.waitMs, undefined, { signal })
        } catch (error) {
          // Aborted before it ran: the tokens go back, so that its retry is its only charge.
          ;(reservation as Granted).cancel()
          throw error
        }
        return this.run(job, token, signal, keys, attempt)
      case 'ask-again':
        this.record('asked-again', job, merchantKey, decision.waitMs)
        this.askingAgain.add(merchantKey)
        try {
          await sleep(decision.waitMs, undefined, { signal })
        } finally {
          this.askingAgain.delete(merchantKey)
        }
        return this.charge(job, token, signal, keys, back, attempt, asks + 1)
      case 'delay':
        // decideReservation answers 'delay' only for a granted reservation.
        return this.carryAndDelay(job, token, keys, reservation as Granted, decision)
      case 'park':
        if (reservation.ok) reservation.cancel()
        return this.park(job, token, keys, cost, decision.dueInMs)
      case 'defer':
        this.record('deferred', job, merchantKey, reservation.delayMs)
        return this.delayJob(job, token, decision.delayUntilWallMs)
    }
  }

  /**
   * decide is decideReservation for `keys`. One job per merchant waits in the process to ask
   * again, at most MAX_ASKS_IN_PROCESS times; past that, or beside another, it is parked.
   */
  private decide(reservation: Reservation, nowWallMs: number, keys: JobKeys, asks: number) {
    const keyList = typeof keys.limitKeys !== 'string'
    const decision = decideReservation(reservation, nowWallMs, this.timing, keyList)
    if (decision.action !== 'ask-again') return decision
    if (asks < MAX_ASKS_IN_PROCESS && !this.askingAgain.has(keys.merchantKey)) return decision
    return { action: 'park', dueInMs: decision.waitMs } as const
  }

  private async carryAndDelay(
    job: Job<D, R, N>,
    token: string,
    keys: JobKeys,
    reservation: Granted,
    decision: { reservedAtWallMs: number; delayUntilWallMs: number },
  ): Promise<never> {
    const { merchantKey } = keys
    const { reservedAtWallMs, delayUntilWallMs } = decision
    const carried = this.sign(job.id!, {
      reservedAtWallMs,
      attemptsMade: job.attemptsMade,
      attemptsStarted: job.attemptsStarted,
      cost: reservation.cost,
    })
    const data = withCarried(job.data, carried)
    if (data === undefined) {
      // The job cannot carry the reservation, so it would be charged again on its
      // return: give the tokens back and let it ask again when they would be due.
      reservation.cancel()
      this.record('deferred', job, merchantKey, reservation.delayMs)
      return this.delayJob(job, token, reservedAtWallMs)
    }
    try {
      await moveToDelayed(job as Job, token, this.clock.now(), delayUntilWallMs, data)
    } catch (error) {
      // Data and move are one script: neither happened, so the tokens were not used.
      reservation.cancel()
      throw error
    }
    this.record('delayed', job, merchantKey, reservation.delayMs)
    this.delayed.add(merchantKey, keys.limitKeys, this.clock.now(), reservedAtWallMs, job.timestamp)
    throw new DelayedError()
  }

  /**
   * park parks `job` in its merchant's backlog: delayed by the safety net, its place (by
   * when it was added) kept in Redis, due for promotion in `dueInMs`. A job whose data cannot carry the mark is
   * deferred instead, to ask again when its tokens come within the horizon.
   */
  private async park(
    job: Job<D, R, N>,
    token: string,
    keys: JobKeys,
    cost: number,
    dueInMs: number,
  ): Promise<never> {
    const { merchantKey, limitKeys } = keys
    const now = this.clock.now()
    const data = withCarried(job.data, { parkedAtWallMs: now })
    if (data === undefined) {
      this.record('deferred', job, merchantKey, dueInMs)
      return this.delayJob(job, token, now + Math.max(dueInMs, MIN_DEFER_MS))
    }
    await moveToDelayed(job as Job, token, now, now + this.safetyNetMs, data)
    this.record('backlogged', job, merchantKey, dueInMs)
    const entry: BacklogEntry = {
      jobId: job.id!,
      attemptsMade: job.attemptsMade,
      attemptsStarted: job.attemptsStarted,
      cost,
      addedAtWallMs: job.timestamp,
      ...(limitKeys === merchantKey ? {} : { limitKeys }),
    }
    try {
      await this.backlogOf(queueOf(job as Job)).add(merchantKey, entry, dueInMs)
    } catch (error) {
      // Parked without its place: it comes back by its safety-net delay, not lost.
      this.log.warn({ err: error, jobId: job.id, merchantKey }, 'parked job not added to its backlog')
    }
    throw new DelayedError()
  }
}

function isRetryableFailure(error: unknown): boolean {
  return error instanceof RetryableFailureError
}

function merchantIdOf(job: { data: unknown }): unknown {
  const data = job.data
  return data !== null && typeof data === 'object' ? (data as { merchantId?: unknown }).merchantId : undefined
}

function reservationKeyOf(key: string | Buffer | undefined): Buffer | undefined {
  if (key === undefined) return undefined
  if (!(typeof key === 'string' || Buffer.isBuffer(key)) || key.length < 16) {
    throw new TypeError(
      `throttle options: expected reservationKey to be a string or Buffer of at least 16 bytes, got ${typeof key === 'string' || Buffer.isBuffer(key) ? `${key.length}` : typeof key}`,
    )
  }
  return Buffer.from(key)
}

function checkOptions<D, R, N extends string>(options: ThrottleOptions<D, R, N>): void {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`throttle options: expected an object, got ${String(options)}`)
  }
  const { limiter } = options
  if (limiter === null || typeof limiter !== 'object' || typeof limiter.reserve !== 'function') {
    throw new TypeError(`throttle options: expected limiter to be a KeyedLimiter, got ${String(limiter)}`)
  }
  for (const name of ['keyOf', 'limitKeys', 'cost', 'onEvent', 'isEndpointFailure'] as const) {
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
  for (const name of [
    'leadMs',
    'clockSkewToleranceMs',
    'parkMs',
    'horizonMs',
    'lateToleranceMs',
    'safetyNetMs',
  ] as const) {
    const value = options[name]
    if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
      throw new TypeError(
        `throttle options: expected ${name} to be a finite number >= 0, got ${String(value)}`,
      )
    }
  }
}
