import type { Logger } from 'pino'
import type { Clock, KeyedLimiter, LimitKeys } from '../../limiter/index.js'
import { checkLimitKeys } from '../limit-keys.js'
import type { CarriedReservation } from './carried.js'
import { DueQueue, type Timers } from './due-queue.js'

/** BacklogEntry is one job parked in its merchant's backlog, as its FIFO in Redis holds it. */
export interface BacklogEntry {
  jobId: string
  /** attemptsMade and attemptsStarted as the job was parked; a job fetched since is found changed. */
  attemptsMade: number
  attemptsStarted: number
  /** cost is the tokens the job takes. */
  cost: number
  /** addedAtWallMs is when the job was added to the queue (job.timestamp). */
  addedAtWallMs: number
  /** limitKeys are the keys its tokens are taken from when not its merchant's key alone (ThrottleOptions.limitKeys). */
  limitKeys?: LimitKeys
}

/** Promotion moves one parked job from its merchant's backlog to delayed, due at `dueAtWallMs`, carrying `carried`. */
export interface Promotion {
  entry: BacklogEntry
  carried: CarriedReservation
  dueAtWallMs: number
}

/**
 * PromoteResult says what a promote call did, in the order given: the first `promoted`
 * were promoted; then, when `dropped` is 1, the next entry was taken off the backlog
 * because its job is no longer parked (its safety-net delay came, or it was removed);
 * the rest were left, because the backlog's head was not what was given (another
 * process promoted it first). `length` is the backlog's length after.
 */
export interface PromoteResult {
  promoted: number
  dropped: number
  length: number
}

/** BacklogStore keeps each merchant's parked jobs in order, in Redis beside the queue. */
export interface BacklogStore {
  /**
   * append adds `entry` to `merchantKey`'s backlog in add order (by `addedAtWallMs`, then
   * job id), so that a job parked again after coming back late takes its old place, and
   * returns the backlog's length.
   */
  append(merchantKey: string, entry: BacklogEntry): Promise<number>
  /** head reads up to `count` entries from the front of `merchantKey`'s backlog, and its length. */
  head(merchantKey: string, count: number): Promise<{ entries: BacklogEntry[]; length: number }>
  /** promote takes entries off the front, atomically per call (see PromoteResult). */
  promote(merchantKey: string, promotions: readonly Promotion[], nowWallMs: number): Promise<PromoteResult>
  /** merchants lists every merchant with a backlog. */
  merchants(): Promise<string[]>
}

/** BacklogLimiter is the part of KeyedLimiter the backlog uses. */
export type BacklogLimiter = Pick<KeyedLimiter, 'reserve'>

/** BacklogOptions configure a Backlog. */
export interface BacklogOptions {
  store: BacklogStore
  limiter: BacklogLimiter
  /** wallClock is the clock BullMQ's delays are read on. */
  wallClock: Clock
  timers: Timers
  /** horizonMs: jobs are promoted while their tokens are at most this far ahead. */
  horizonMs: number
  /** leadMs: a promoted job is due this long before its reserved time (see Timing.leadMs). */
  leadMs: number
  /** batchSize bounds the jobs one promote call moves. */
  batchSize: number
  /** sign adds the workers' mac to a reservation carried by job `jobId`. */
  sign: (jobId: string, carried: CarriedReservation) => CarriedReservation
  logger: Logger
  /** onPromoted is told of each job promoted, for the outcome counters. */
  onPromoted?: (merchantKey: string, entry: BacklogEntry, reservedAtWallMs: number) => void
}

/** MerchantBacklog is what this process knows of one merchant's backlog. */
export interface MerchantBacklog {
  /** parked is the backlog's length as last read from Redis. */
  parked: number
  /** oldestAddedAtWallMs is when the job at its front was added, as last read; undefined before the first read. */
  oldestAddedAtWallMs: number | undefined
  /** limitKeys of the job last parked or read at its front here; undefined when its merchant's key alone. */
  limitKeys: LimitKeys | undefined
}

/** RETRY_AFTER_ERROR_MS is how soon a promotion that failed (Redis unreachable) is tried again. */
const RETRY_AFTER_ERROR_MS = 1_000

/**
 * Backlog promotes each merchant's parked jobs, in order, as the merchant's tokens come
 * within the horizon. Promotion is driven by one timer for all merchants (DueQueue): a
 * merchant comes due when its next tokens come within the horizon, or half a horizon
 * later when the last call filled it, so each promote call moves up to half a horizon of
 * the merchant's jobs and the work is per delivered job, not per merchant parked or per
 * tick of time. Every process that has seen a merchant's backlog promotes from it at its
 * own share of the rate; the store's script takes entries off the front atomically, so no
 * job is promoted twice. The tokens are reserved in this process before the call and
 * given back for whatever the call did not promote.
 */
export class Backlog {
  private readonly held = new Map<string, MerchantBacklog>()
  private readonly due: DueQueue
  private readonly busy = new Set<string>()
  private readonly again = new Set<string>()
  private readonly log: Logger

  constructor(private readonly options: BacklogOptions) {
    this.log = options.logger.child({ component: 'bullmq-backlog' })
    this.due = new DueQueue(
      () => options.wallClock.now(),
      options.timers,
      (merchantKey) => void this.promoteDue(merchantKey),
    )
  }

  /** holds says whether this process knows `merchantKey` to have parked jobs: its new jobs go behind them. */
  holds(merchantKey: string): boolean {
    return this.held.has(merchantKey)
  }

  /**
   * add appends a parked job to `merchantKey`'s backlog (at the front when it was ahead of
   * every parked job: back late from a reservation, or from its safety-net delay), and
   * makes the merchant due in `dueInMs` (when its tokens come within the horizon).
   */
  async add(merchantKey: string, entry: BacklogEntry, dueInMs: number): Promise<void> {
    const state = this.hold(merchantKey)
    const length = await this.options.store.append(merchantKey, entry)
    state.parked = length
    state.limitKeys = entry.limitKeys
    state.oldestAddedAtWallMs = Math.min(
      state.oldestAddedAtWallMs ?? entry.addedAtWallMs,
      entry.addedAtWallMs,
    )
    this.due.schedule(merchantKey, this.options.wallClock.now() + Math.max(0, dueInMs))
  }

  /** wake makes `merchantKey` due now: its backlog may have jobs this process did not park. */
  wake(merchantKey: string): void {
    this.hold(merchantKey)
    this.due.schedule(merchantKey, this.options.wallClock.now())
  }

  /**
   * ratesChanged makes every merchant with a backlog (or those of `merchantKeys`) due now,
   * so that a raised rate reaches the backlog at once instead of at the next due time
   * computed at the old rate.
   */
  ratesChanged(merchantKeys?: Iterable<string>): void {
    const now = this.options.wallClock.now()
    for (const key of merchantKeys ?? this.held.keys()) {
      if (this.held.has(key)) this.due.schedule(key, now)
    }
  }

  /** start finds the merchants whose backlogs are in Redis (parked by processes that are gone) and makes them due. */
  async start(): Promise<void> {
    for (const merchantKey of await this.options.store.merchants()) this.wake(merchantKey)
  }

  /** stop ends promotion. Parked jobs stay parked; they come back by their safety-net delay or another process. */
  stop(): void {
    this.due.stop()
  }

  /** merchants is what this process knows of each merchant's backlog. */
  merchants(): ReadonlyMap<string, MerchantBacklog> {
    return this.held
  }

  private hold(merchantKey: string): MerchantBacklog {
    let state = this.held.get(merchantKey)
    if (state === undefined) {
      state = { parked: 0, oldestAddedAtWallMs: undefined, limitKeys: undefined }
      this.held.set(merchantKey, state)
    }
    return state
  }

  /**
   * keysOf is the keys a parked entry is charged to: those it was parked with, checked
   * again, since Redis may hold a member no worker wrote (by hand, or from a worker with a
   * longer key bound); such a member is charged to its merchant's key alone rather than
   * stopping the backlog behind it.
   */
  private keysOf(merchantKey: string, entry: BacklogEntry): LimitKeys {
    if (entry.limitKeys === undefined) return merchantKey
    const check = checkLimitKeys(entry.limitKeys)
    if (check.ok) return check.keys
    this.log.warn(
      { merchantKey, jobId: entry.jobId, reason: check.reason },
      'parked job has bad limit keys; charging its merchant key',
    )
    return merchantKey
  }

  private async promoteDue(merchantKey: string): Promise<void> {
    if (this.busy.has(merchantKey)) {
      this.again.add(merchantKey)
      return
    }
    this.busy.add(merchantKey)
    let nextInMs: number | undefined
    try {
      nextInMs = await this.promoteOnce(merchantKey)
    } catch (error) {
      this.log.warn({ err: error, merchantKey }, 'promoting parked jobs failed; trying again')
      nextInMs = RETRY_AFTER_ERROR_MS
    } finally {
      this.busy.delete(merchantKey)
    }
    if (this.again.delete(merchantKey)) nextInMs = 0
    if (nextInMs !== undefined) this.due.schedule(merchantKey, this.options.wallClock.now() + nextInMs)
  }

  /**
   * promoteOnce promotes what fits within the horizon from the front of `merchantKey`'s
   * backlog and returns when to come back (ms from now), or undefined when the backlog is empty.
   */
  private async promoteOnce(merchantKey: string): Promise<number | undefined> {
    const { store, limiter, horizonMs, leadMs, batchSize, wallClock } = this.options
    const state = this.hold(merchantKey)
    const { entries, length } = await store.head(merchantKey, batchSize)
    state.parked = length
    state.oldestAddedAtWallMs = entries[0]?.addedAtWallMs
    if (entries.length > 0) state.limitKeys = entries[0]!.limitKeys
    if (entries.length === 0) {
      this.held.delete(merchantKey)
      return undefined
    }
    const now = wallClock.now()
    const reservations = []
    let tokensInMs = 0
    let deferred = false
    for (const entry of entries) {
      // A deferral (beyond the limiter's horizon, the table full, the parent's share taken)
      // ends the batch: the merchant comes back when it says.
      const reservation = limiter.reserve(this.keysOf(merchantKey, entry), entry.cost)
      if (!reservation.ok) {
        tokensInMs = reservation.delayMs
        deferred = true
        break
      }
      if (reservation.delayMs > horizonMs) {
        reservation.cancel()
        tokensInMs = reservation.delayMs - horizonMs
        break
      }
      reservations.push(reservation)
    }
    if (reservations.length === 0) return Math.max(tokensInMs, 1)
    const promotions = reservations.map((reservation, i): Promotion => {
      const entry = entries[i]!
      const reservedAtWallMs = now + reservation.delayMs
      const carried = this.options.sign(entry.jobId, {
        reservedAtWallMs,
        attemptsMade: entry.attemptsMade,
        attemptsStarted: entry.attemptsStarted,
        cost: entry.cost,
      })
      return { entry, carried, dueAtWallMs: Math.max(now, reservedAtWallMs - leadMs) }
    })
    const result = await store.promote(merchantKey, promotions, now)
    // Latest first, so that each is the latest when given back and returns all its tokens.
    for (let i = reservations.length - 1; i >= result.promoted; i--) reservations[i]!.cancel()
    for (const promotion of promotions.slice(0, result.promoted)) {
      this.options.onPromoted?.(merchantKey, promotion.entry, promotion.carried.reservedAtWallMs)
    }
    state.parked = result.length
    if (result.length === 0) {
      this.held.delete(merchantKey)
      return undefined
    }
    if (result.promoted < reservations.length || reservations.length === entries.length) return 0
    // Deferred (a key list whose merchant's own limit binds is granted only at its time,
    // never ahead, see decideReservation): back when the limiter says, however soon.
    if (deferred) return Math.max(tokensInMs, 1)
    // Stopped at the horizon: come back when the next tokens are within it, but no
    // sooner than half a horizon, so that each call moves a batch.
    return Math.max(tokensInMs, horizonMs / 2)
  }
}
