import {
  BucketRate,
  BucketRates,
  type ExtraWindow,
  type Gcra,
  type Params,
  paramsOf,
  type WindowParams,
} from './bucket-rates.js'
import { type Clock, monotonicClock, SkewGuard } from './clock.js'
import { MAX_MERCHANT_KEY_LENGTH } from './key.js'
import {
  checkLimitKeys,
  LayeredDecision,
  type LayeredVerdict,
  type LayerPort,
  type LimitKeys,
} from './layered.js'
import type {
  ConfiguredRates,
  Explanation,
  KeyedLimiterOptions,
  KeyInspection,
  LimiterStats,
} from './limiter-types.js'
import { Penalties } from './penalties.js'
import { parseRate, type Rate, type RateInput } from './rate.js'
import {
  type ApplyResult,
  type CheckedChange,
  checkChange,
  checkNonNegative,
  checkPositiveInteger,
  describeKey,
  type Inheritance,
  type RateChange,
} from './rate-change.js'
import {
  type Deferred,
  GrantedReservation,
  type HeldReservation,
  LayeredReservation,
  type Reservation,
  type ReservationBook,
  reservedTime,
} from './reservation.js'
import { type ChildShare, FairShares } from './shares.js'
import { codeFor, KeyTable, rateIdOfCode, slotOfCode, OWN_RATE as TABLE_OWN_RATE } from './table.js'
import { UnheldBlocks } from './unheld-blocks.js'

export type { LimitKeys } from './layered.js'
export type {
  ConfiguredRates,
  ExplainReason,
  Explanation,
  KeyedLimiterOptions,
  KeyInspection,
  LimiterStats,
} from './limiter-types.js'
export type { PenaltyOptions } from './penalties.js'
export type { ApplyResult, Inheritance, RateChange } from './rate-change.js'
export type { DeferReason, Deferred, Granted, Reservation } from './reservation.js'
export { ReservationBook } from './reservation.js'
export type { ChildShare } from './shares.js'

/**
 * REBASE_AFTER_MS is how far from its epoch the limiter lets time run before it moves
 * the epoch to now: times are kept as ms since the epoch, so their rounding (below
 * 2^-30 ms) does not depend on where the clock started.
 */
const REBASE_AFTER_MS = 2 ** 22

/** DEFAULT_MAX_OVERRIDES bounds the keys with a rate override of their own (about 260 bytes each, beside the key). */
const DEFAULT_MAX_OVERRIDES = 100_000

/**
 * OWN_RATE is the table's first code of a key with a rate of its own, copied into a
 * binding of this module: the hot path compares with it on every decision, and a
 * transpiled import can be a getter call.
 */
const OWN_RATE = TABLE_OWN_RATE

/** Verdict is the outcome of the one decision step. */
const GRANTED = 0
const TOO_SOON = 1
const TABLE_FULL = 2
type Verdict = typeof GRANTED | typeof TOO_SOON | typeof TABLE_FULL

/**
 * KeyedLimiter is a token bucket per key, kept as GCRA: one theoretical arrival time per
 * key. Every decision is one synchronous call, so it is atomic on the event loop
 * however many jobs are in flight. Every method that reads the clock has a form ending
 * in `At` that takes the time in ms; the clock is read through a skew guard either way,
 * and kept inside as ms since the limiter's own epoch. With a clock that has a witness,
 * the guard reads the witness beside each new reading, so `nowMs` should be a reading
 * of that clock just taken.
 */
export class KeyedLimiter {
  private readonly clock: Clock
  private readonly guard: SkewGuard
  private readonly table: KeyTable
  /** codes is the table's Map, held here too: the hot path reads it without going through the table. */
  private readonly codes: ReadonlyMap<string, number>
  /** tatMs is the table's arrival times, the same array (refreshed after the table places a key, when it may grow). */
  private tatMs: Float64Array
  private readonly horizonMs: number
  private readonly maxKeyLength: number
  private readonly evictionScan: number
  private readonly maxOverrides: number
  /** overrideCount is the number of keys with a rate override of their own (not a penalty alone). */
  private overrideCount = 0
  private readonly penalty: Penalties
  /** unheld keeps the Retry-After of keys penalized while the table could not hold them. */
  private readonly unheld = new UnheldBlocks()
  private readonly bucketRates: BucketRates
  private readonly refundBound: (reservation: HeldReservation) => void
  /** epochMs is the guarded time every internal time counts from; NaN until the first reading. */
  private epochMs = Number.NaN
  private share = 1
  private version: number | undefined
  private tableFull = 0
  private penalties = 0
  private penaltiesDropped = 0
  private rateChanges = 0
  private staleChanges = 0
  private shareDeferrals = 0
  /** placements counts the keys placed in the table (a layered decision checks nothing it placed evicted another). */
  private placements = 0
  /** defaultRate is the pool's rate 0, changed in place, never replaced. */
  private readonly defaultRate: BucketRate
  // The last clock reading and its time since the epoch: a batch of decisions shares one.
  private lastRawMs = Number.NaN
  private lastNowMs = 0
  // What the last decision found, read by its caller (decide is on the hot path: no result objects).
  private decidedDelayMs = 0
  private decidedSpanMs = 0
  private decidedEndMs = 0
  /** decidedExtra is, after a reservation of a key of several windows, its windows' intervals, spans and ends (see HeldReservation.extra). */
  private decidedExtra: Float64Array | undefined
  /** grantedAtMs is the reserved time grant found, on the clock. */
  private grantedAtMs = 0
  /** probedTats is, after probe of a key of several windows, its further windows' arrival times (undefined: none held, all full). */
  private probedTats: Float64Array | undefined
  /** slotRate is the rate slotOf found. */
  private slotRate: BucketRate
  /** layered decides for lists of keys, through the probe and charge steps below (see layered.ts). */
  private readonly layered: LayeredDecision
  private readonly shares: FairShares

  constructor(options: KeyedLimiterOptions) {
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`KeyedLimiter: expected an options object, got ${String(options)}`)
    }
    this.clock = options.clock ?? monotonicClock
    this.guard = new SkewGuard(options.clockSkewToleranceMs ?? 100, options.onClockSkew, this.clock.witness)
    this.table = new KeyTable(options.maxKeys ?? 1_000_000)
    this.codes = this.table.codes
    this.tatMs = this.table.tatMs
    this.horizonMs = checkNonNegative(options.horizonMs ?? 60_000, 'horizonMs')
    this.maxKeyLength = checkPositiveInteger(options.maxKeyLength ?? MAX_MERCHANT_KEY_LENGTH, 'maxKeyLength')
    this.evictionScan = checkPositiveInteger(options.evictionScan ?? 64, 'evictionScan')
    this.maxOverrides = checkPositiveInteger(options.maxOverrides ?? DEFAULT_MAX_OVERRIDES, 'maxOverrides')
    this.penalty = new Penalties(options.penalty)
    this.table.keptUntilMs = (rateId) => this.penalty.recoveredAtMs(this.bucketRates.byId[rateId]!)
    this.defaultRate = new BucketRate(parseRate(options.rate), false, 1)
    this.slotRate = this.defaultRate
    this.bucketRates = new BucketRates(this.defaultRate)
    this.refundBound = (reservation) => this.refund(reservation)
    this.shares = new FairShares(options)
    this.layered = new LayeredDecision(this.layerPort())
  }

  /** size is the number of keys held. */
  get size(): number {
    return this.table.size
  }

  /** now is the limiter's time in ms: the clock read through the skew guard. */
  now(): number {
    const now = this.relative(this.clock.now())
    return this.epochMs + now
  }

  /**
   * tryAcquire takes `cost` tokens from `key`'s bucket if they are there now. A cost
   * above the bucket's capacity in this process (its burst, times the share set by
   * setShare, at least 1) throws a RangeError: no wait would ever let it through. A cost
   * above the capacity a penalty has lowered the bucket to is granted once the bucket
   * is full, so it waits at most one refill.
   */
  tryAcquire(keys: LimitKeys, cost = 1): boolean {
    return this.tryAcquireAt(keys, cost, this.clock.now())
  }

  /**
   * tryAcquireAt is tryAcquire at time `nowMs` (a reading of the limiter's clock). For a
   * list of keys it takes `cost` from every limiting one or from none (see layered.ts).
   */
  tryAcquireAt(keys: LimitKeys, cost: number, nowMs: number): boolean {
    if (typeof keys !== 'string') return this.decideLayered(keys, cost, nowMs, 0, false) === 'granted'
    const key = keys
    const code = this.codes.get(key)
    // The common case first, in as few instructions as it takes (on 100,000 keys a decision
    // costs what its instructions keep the CPU from overlapping of the next lookups):
    // a held key at the default rate, at the clock reading of the decision before, granted now.
    // The bound is a literal small integer (2^30 - 1, one on every V8 build), so the test is
    // one integer comparison: against OWN_RATE (2^31, a heap number) or a module constant it
    // compiled to a conversion to double. Above it: a key with its own rate (or a slot from 2^30).
    if (code !== undefined && code <= 0x3fffffff && nowMs === this.lastRawMs) {
      const rate = this.defaultRate
      const tatMs = this.tatMs
      const now = this.lastNowMs
      const tat = tatMs[code]!
      const next = (tat > now ? tat : now) + cost * rate.emissionMs
      if (next - now <= rate.fastAllowanceMs && cost > 0 && cost <= rate.capacity) {
        tatMs[code] = next
        return true
      }
    }
    return this.decideAnyKey(key, code, cost, nowMs, 0, false) === GRANTED
  }

  /**
   * reserve commits `key` to `cost` tokens at the earliest time they are there: now
   * (delayMs 0) or later. Reservations are spaced at the key's rate, in call order. When
   * that time is beyond the horizon, or the key cannot be placed because the table is
   * full, nothing is held and the answer says when to ask again. Costs are bounded as
   * for tryAcquire, so every cost that does not throw is granted in bounded time: within
   * one refill of the bucket plus the reservations ahead of it.
   */
  reserve(keys: LimitKeys, cost = 1): Reservation {
    return this.reserveAt(keys, cost, this.clock.now())
  }

  /**
   * reserveAt is reserve at time `nowMs`. For a list of keys, the reservation holds
   * tokens in every limiting key or in none, at the latest time all of them can meet.
   */
  reserveAt(keys: LimitKeys, cost: number, nowMs: number): Reservation {
    if (typeof keys !== 'string') return this.reserveLayered(keys, cost, nowMs)
    const key = keys
    const deferred = this.grant(key, cost, nowMs)
    if (deferred !== undefined) return deferred
    return new GrantedReservation(
      key,
      cost,
      this.decidedDelayMs,
      this.grantedAtMs,
      this.lastNowMs + this.decidedDelayMs,
      this.decidedSpanMs,
      this.decidedEndMs,
      this.epochMs,
      this.decidedExtra,
      this.refundBound,
    )
  }

  /**
   * reserveIn is reserve with the grant held as a row of `book` instead of a Granted
   * object (for callers holding many): it returns the row, its delay in
   * `book.lastDelayMs` and its time in `book.reservedAtMs(row)`, or the Deferred answer.
   * Give the row back with cancelIn (as Granted.cancel) or `book.release` (the work ran).
   */
  reserveIn(book: ReservationBook, keys: LimitKeys, cost = 1): number | Deferred {
    if (typeof keys !== 'string') return this.reserveLayeredIn(book, keys, cost, this.clock.now())
    const key = keys
    const deferred = this.grant(key, cost, this.clock.now())
    if (deferred !== undefined) return deferred
    return book.take(key, this.decidedDelayMs, {
      atMs: this.lastNowMs + this.decidedDelayMs,
      spanMs: this.decidedSpanMs,
      endMs: this.decidedEndMs,
      epochMs: this.epochMs,
      extra: this.decidedExtra,
    })
  }

  /**
   * cancelIn cancels the reservation held in `row` of `book`, as Granted.cancel does, and
   * gives the row back; false when the row is not held.
   */
  cancelIn(book: ReservationBook, row: number): boolean {
    const held = book.heldAt(row)
    if (held === undefined) return false
    book.release(row)
    this.refund(held)
    return true
  }

  /** reserveLayered is reserveAt for a list of keys. */
  private reserveLayered(keys: readonly string[], cost: number, nowMs: number): Reservation {
    const list = checkLimitKeys(keys, this.maxKeyLength)
    if (list.length === 1) return this.reserveAt(list[0]!, cost, nowMs)
    const deferred = this.grantLayered(list, cost, nowMs)
    if (deferred !== undefined) return deferred
    const parts = this.layered.parts
    return new LayeredReservation(
      list,
      cost,
      this.decidedDelayMs,
      this.grantedAtMs,
      parts[parts.length - 1]!,
      parts.slice(0, -1),
      this.refundBound,
    )
  }

  /** reserveLayeredIn is reserveIn for a list of keys: the row is the innermost key's, with the others' parts beside. */
  private reserveLayeredIn(
    book: ReservationBook,
    keys: readonly string[],
    cost: number,
    nowMs: number,
  ): number | Deferred {
    const list = checkLimitKeys(keys, this.maxKeyLength)
    if (list.length === 1) return this.reserveIn(book, list[0]!, cost)
    const deferred = this.grantLayered(list, cost, nowMs)
    if (deferred !== undefined) return deferred
    const parts = this.layered.parts
    const inner = parts[parts.length - 1]!
    return book.take(inner.key, this.decidedDelayMs, { ...inner, layers: parts.slice(0, -1) })
  }

  /** grantLayered is grant for a list of keys (checked, more than one). */
  private grantLayered(keys: readonly string[], cost: number, nowMs: number): Deferred | undefined {
    const verdict = this.decideLayered(keys, cost, nowMs, this.horizonMs, true)
    const bindingKey = this.layered.bindingKey
    if (verdict === 'table-full') {
      return { ok: false, delayMs: Math.max(1, this.table.refusedWaitMs), reason: 'table-full', bindingKey }
    }
    const delayMs = this.layered.delayMs
    if (verdict === 'too-soon') {
      return { ok: false, delayMs: delayMs - this.horizonMs, reason: 'beyond-horizon', bindingKey }
    }
    // a grant that would hold a parent's time unused waits, as one beyond the horizon: its own limit binds
    if (verdict === 'hole') return { ok: false, delayMs, reason: 'beyond-horizon', bindingKey }
    if (verdict === 'parent-share') {
      this.shareDeferrals++
      return { ok: false, delayMs, reason: 'parent-share', bindingKey }
    }
    this.decidedDelayMs = delayMs
    this.grantedAtMs = reservedTime(this.epochMs, this.lastNowMs + delayMs)
    return undefined
  }

  /** decideLayered checks `keys` and decides for them (one key: the single-key path). */
  private decideLayered(
    keys: readonly string[],
    cost: number,
    nowMs: number,
    maxDelayMs: number,
    reserving: boolean,
  ): LayeredVerdict {
    const list = checkLimitKeys(keys, this.maxKeyLength)
    if (list.length === 1) {
      const verdict = this.decideAnyKey(
        list[0]!,
        this.codes.get(list[0]!),
        cost,
        nowMs,
        maxDelayMs,
        reserving,
      )
      return verdict === GRANTED ? 'granted' : verdict === TOO_SOON ? 'too-soon' : 'table-full'
    }
    const now = nowMs === this.lastRawMs ? this.lastNowMs : this.relative(nowMs)
    return this.layered.decide(list, cost, now, maxDelayMs, reserving)
  }

  /** layerPort lends the layered decision the steps it shares with the single-key path. */
  private layerPort(): LayerPort {
    return {
      slotOf: (key, now, outer) => {
        const code = this.codes.get(key)
        if (outer && !(code === undefined ? this.hasOverride(key) : this.ownRateOf(code))) return -2
        return this.slotOf(key, code, now)
      },
      slotRate: () => this.slotRate,
      placements: () => this.placements,
      held: (key) => this.codes.has(key),
      checkCost: (cost, rate) => {
        if (!(cost > 0 && cost <= rate.capacity)) this.badCost(cost, rate)
      },
      probe: (slot, rate, cost, now, maxDelayMs) => this.probe(slot, rate, cost, now, maxDelayMs),
      holeMs: (slot, rate, now, delayMs) => {
        const at = now + delayMs
        let holeMs = windowHoleMs(rate, this.table.tatMs[slot]!, now, at)
        const tats = rate.extra === undefined ? undefined : this.table.extraTatMs.get(slot)
        rate.extra?.forEach((window, i) => {
          holeMs = Math.max(holeMs, windowHoleMs(window, tats?.[i] ?? now, now, at))
        })
        return holeMs
      },
      probedTats: () => this.probedTats,
      charge: (key, slot, rate, cost, now, delayMs, reserving, probedTats) => {
        this.decidedExtra = undefined
        this.charge(slot, rate, cost, now, delayMs, reserving, probedTats)
        const at = now + delayMs
        if (delayMs > 0 && this.table.tatMs[slot]! - rate.tauMs < at - rate.conformMs) {
          const until = this.table.reservedUntilMs
          until.set(slot, Math.max(until.get(slot) ?? at, at))
        }
        if (!reserving) return undefined
        const { decidedSpanMs: spanMs, decidedEndMs: endMs, decidedExtra: extra, epochMs } = this
        return { key, atMs: now + delayMs, spanMs, endMs, epochMs, extra }
      },
      shareWaitMs: (parent, parentDelayMs, child, now) =>
        this.shares.waitMs(parent, parentDelayMs, child, now),
      shareCharge: (parent, rate, child, cost, now) =>
        this.shares.charge(parent, child, cost, rate.emissionMs, now),
      shareCount: (parent, child, cost, now) => this.shares.countGrant(parent, child, cost, now),
    }
  }

  /**
   * grant is the decision of reserveAt and reserveIn: undefined when granted (the delay in
   * decidedDelayMs, the time in grantedAtMs), otherwise the Deferred answer.
   */
  private grant(key: string, cost: number, nowMs: number): Deferred | undefined {
    this.decidedExtra = undefined
    const verdict = this.decide(key, cost, nowMs, this.horizonMs, true)
    if (verdict === TABLE_FULL) {
      return {
        ok: false,
        delayMs: Math.max(1, this.table.refusedWaitMs),
        reason: 'table-full',
        bindingKey: key,
      }
    }
    const delayMs = this.decidedDelayMs
    if (verdict === TOO_SOON)
      return { ok: false, delayMs: delayMs - this.horizonMs, reason: 'beyond-horizon', bindingKey: key }
    this.grantedAtMs = reservedTime(this.epochMs, this.lastNowMs + delayMs)
    return undefined
  }

  /**
   * setRate sets `key`'s own rate, or the default rate when `key` is `*`; a null rate
   * clears the key's override. Tokens earned so far are banked, then carried over by
   * `inheritance` (default proportional).
   */
  setRate(key: string, rate: RateInput | null, options?: { inheritance?: Inheritance }): void {
    this.setRateAt(key, rate, this.clock.now(), options)
  }

  /** setRateAt is setRate at time `nowMs`. */
  setRateAt(
    key: string,
    rate: RateInput | null,
    nowMs: number,
    options?: { inheritance?: Inheritance },
  ): void {
    const change: RateChange =
      key === '*' ? { default: rate ?? badDefault() } : { overrides: { [key]: rate } }
    this.applyAt({ ...change, inheritance: options?.inheritance ?? 'proportional' }, nowMs)
  }

  /**
   * apply makes a RateChange in one synchronous step: every rate is checked first, and
   * a bad one throws a TypeError with nothing changed. A change that would leave more
   * than `maxOverrides` keys with an override throws a RangeError, nothing changed. No
   * decision ever sees half of it.
   */
  apply(change: RateChange): ApplyResult {
    return this.applyAt(change, this.clock.now())
  }

  /** applyAt is apply at time `nowMs`. */
  applyAt(change: RateChange, nowMs: number): ApplyResult {
    const checked = checkChange(change, this.maxKeyLength)
    if (change.version !== undefined && this.version !== undefined && change.version <= this.version) {
      this.staleChanges++
      return { applied: false, reason: 'stale-version' }
    }
    this.checkOverrideBound(checked, change.replace === true)
    this.shares.checkWeightBound(checked.weights, change.replace === true, this.maxOverrides)
    const now = this.relative(nowMs)
    const inheritance = change.inheritance ?? 'proportional'
    if (checked.defaultRate !== undefined) this.changeDefault(checked.defaultRate, now, inheritance)
    if (change.replace) {
      for (const [key, id] of [...this.bucketRates.own()]) {
        if (!this.bucketRates.byId[id]!.followsDefault && !checked.overrides.has(key)) {
          this.changeOverride(key, null, now, inheritance)
        }
      }
    }
    for (const [key, rate] of checked.overrides) this.changeOverride(key, rate, now, inheritance)
    this.shares.setWeights(checked.weights, change.replace === true)
    if (change.version !== undefined) this.version = change.version
    this.rateChanges++
    return { applied: true }
  }

  /**
   * setShare makes this process enforce 1/`instances` of every rate, for limits shared
   * by that many worker processes. Tokens carry over proportionally.
   *
   * The aggregate rate of `instances` processes is the configured rate exactly. Their
   * aggregate burst is `instances × max(1, burst / instances)` tokens: the burst itself
   * when it is at least `instances`, else `instances` units, because each process must
   * be able to run one unit, so a merchant whose burst is below the number of processes
   * can see one unit from each at once. In units of cost 1 each process's share rounds
   * down, so at once they let through `instances × floor(max(1, burst / instances))`,
   * never more than `max(burst, instances)`. A cost above a process's share of the
   * burst throws (see tryAcquire).
   */
  setShare(instances: number): void {
    this.setShareAt(instances, this.clock.now())
  }

  /** setShareAt is setShare at time `nowMs`. */
  setShareAt(instances: number, nowMs: number): void {
    if (!Number.isInteger(instances) || instances < 1) {
      throw new TypeError(`setShare: expected a whole number of instances >= 1, got ${instances}`)
    }
    const share = 1 / instances
    if (share === this.share) return
    const now = this.relative(nowMs)
    this.share = share
    this.retune(() => true, now, 'proportional')
  }

  /**
   * setWeight sets `childKey`'s weight in the fair share of every parent it is asked
   * under (see shares.ts): a backlogged child gets the parent in proportion to its weight
   * over the backlogged children's. Default 1; null restores it. A weight is above 0 and
   * at most 1e6 (a TypeError otherwise); weights count against maxOverrides apart from rates.
   */
  setWeight(childKey: string, weight: number | null): void {
    this.applyAt({ weights: { [childKey]: weight } }, this.clock.now())
  }

  /**
   * penalize answers a 429 or 503 from the far side: `key` gets no token for
   * `retryAfterMs` (a time, which no later rate change, share change or cancel moves),
   * and its rate drops by `decreaseFactor` (at most once per cooldown), then climbs back
   * by `increaseStep` every `increaseEveryMs`. A penalized key is held like any other,
   * within `maxKeys`: when the table cannot hold it (full of buckets in use) and it has
   * no rate of its own, its rate is not lowered (counted in `stats().penaltiesDropped`),
   * but its Retry-After is kept, in a fixed 32 KB (see UnheldBlocks): placed later, the key
   * gets nothing before its end.
   * A key is not evicted while its rate is lowered (nor inside its Retry-After, its bucket
   * not full), so it never comes back to a fuller bucket than it had.
   */
  penalize(key: string, retryAfterMs: number): void {
    this.penalizeAt(key, retryAfterMs, this.clock.now())
  }

  /** penalizeAt is penalize at time `nowMs`. */
  penalizeAt(key: string, retryAfterMs: number, nowMs: number): void {
    checkNonNegative(retryAfterMs, 'penalize retryAfterMs')
    const now = this.relative(nowMs)
    this.penalties++
    const code = this.table.codeOf(key) ?? this.holdKey(key, now)
    const slot = code < 0 ? undefined : slotOfCode(code)
    const existing = this.bucketRates.idOf(key)
    if (existing !== undefined) this.recover(key, slot, this.bucketRates.byId[existing]!, now)
    let id = this.bucketRates.idOf(key)
    if (id === undefined) {
      if (slot === undefined) {
        this.penaltiesDropped++
        this.unheld.block(key, now + retryAfterMs)
        return
      }
      id = this.bucketRates.add(key, new BucketRate(this.bucketRates.default.base, true, this.share))
      this.table.setRateId(key, slot, id)
    }
    const rate = this.bucketRates.byId[id]!
    const before = paramsOf(rate)
    if (this.penalty.lower(rate, now, retryAfterMs)) rate.derive(this.share)
    if (slot !== undefined) this.convert(slot, before, rate, now, 'proportional')
  }

  /** inspect describes `key`'s bucket now, or returns undefined when the key is not held. */
  inspect(key: string): KeyInspection | undefined {
    return this.inspectAt(key, this.clock.now())
  }

  /** inspectAt is inspect at time `nowMs`. */
  inspectAt(key: string, nowMs: number): KeyInspection | undefined {
    const now = this.relative(nowMs)
    const code = this.table.codeOf(key)
    if (code === undefined) return undefined
    const slot = slotOfCode(code)
    const rate = this.rateAt(key, code, now)
    const extraTats = rate.extra === undefined ? undefined : this.table.extraTatMs.get(slot)
    const state = { tokens: Number.POSITIVE_INFINITY, capacity: Number.POSITIVE_INFINITY, waitMs: 0 }
    windowState(state, rate, this.table.tatMs[slot]!, now)
    rate.extra?.forEach((window, i) => {
      windowState(state, window, extraTats?.[i] ?? now, now)
    })
    return {
      ...state,
      rate: rate.rate(),
      override: this.bucketRates.idOf(key) !== undefined && !rate.followsDefault,
      penaltyFactor: rate.penaltyFactor,
    }
  }

  /**
   * explain says, for `keys` (one key or a list), how long until one unit could be
   * granted and which limit binds; undefined when one could go now. It places no key and
   * charges nothing: for the status page, not the hot path.
   */
  explain(keys: LimitKeys): Explanation | undefined {
    return this.explainAt(keys, this.clock.now())
  }

  /** explainAt is explain at time `nowMs`. */
  explainAt(keys: LimitKeys, nowMs: number): Explanation | undefined {
    const list = typeof keys === 'string' ? [keys] : checkLimitKeys(keys, this.maxKeyLength)
    const now = this.relative(nowMs)
    let worst: Explanation | undefined
    let share: Explanation | undefined
    const last = list.length - 1
    for (let i = 0; i <= last; i++) {
      const key = list[i]!
      if (i < last && !this.hasOverride(key)) continue
      const found = this.explainKey(key, now)
      if (found !== undefined && (worst === undefined || found.waitMs > worst.waitMs)) worst = found
      // a share defers only while its parent binds
      if (i === last || found === undefined) continue
      const shareWaitMs = this.shares.peekWaitMs(key, found.waitMs, list[i + 1]!, now)
      if (shareWaitMs > 0 && (share === undefined || shareWaitMs > share.waitMs)) {
        share = { waitMs: shareWaitMs, bindingKey: key, reason: 'parent-share' }
      }
    }
    // a child past its share is deferred for it, whatever else it would wait for once let in
    if (share !== undefined) share.waitMs = Math.max(share.waitMs, worst?.waitMs ?? 0)
    return share ?? worst
  }

  /** explainKey is what binds `key` alone for one unit at `now`, undefined when nothing does. */
  private explainKey(key: string, now: number): Explanation | undefined {
    const code = this.table.codeOf(key)
    if (code === undefined) {
      const untilMs = this.unheld.until(key, now)
      return untilMs > now ? { waitMs: untilMs - now, bindingKey: key, reason: 'retry-after' } : undefined
    }
    const slot = slotOfCode(code)
    const rate = this.rateAt(key, code, now)
    const waitOf = (window: Gcra & { conformMs: number }, tat: number) => {
      const waitMs = (tat > now ? tat : now) + window.emissionMs - window.tauMs - now
      return waitMs > window.conformMs ? waitMs : 0
    }
    let found: Explanation = {
      waitMs: waitOf(rate, this.table.tatMs[slot]!),
      bindingKey: key,
      reason: 'rate',
    }
    const tats = this.table.extraTatMs.get(slot)
    rate.extra?.forEach((window, i) => {
      const waitMs = waitOf(window, tats?.[i] ?? now)
      if (waitMs > found.waitMs) {
        found = { waitMs, bindingKey: key, reason: 'window', windowIntervalMs: window.base.intervalMs }
      }
    })
    // a Retry-After sets the bucket's time to its end: the rate's wait then equals it, and the Retry-After is the cause
    if (rate.blockedUntilMs > now && rate.blockedUntilMs - now >= found.waitMs - rate.conformMs) {
      found = { waitMs: rate.blockedUntilMs - now, bindingKey: key, reason: 'retry-after' }
    }
    return found.waitMs > 0 ? found : undefined
  }

  /** parents lists the parents whose children's fair shares are tracked (a child has found one binding lately). */
  parents(): string[] {
    return this.shares.parentKeys(this.relative(this.clock.now()))
  }

  /** childrenOf describes `parent`'s tracked children: weight, backlogged, granted per second over the share window. */
  childrenOf(parent: string): ChildShare[] {
    return this.shares.childrenOf(parent, this.relative(this.clock.now()))
  }

  /** rateOf is the rate in force for `key`: its own or the default, after share and penalty. */
  rateOf(key: string): Rate {
    const id = this.bucketRates.idOf(key)
    if (id === undefined) return this.bucketRates.default.rate()
    const now = this.relative(this.clock.now())
    return this.recover(key, this.table.slotOf(key), this.bucketRates.byId[id]!, now).rate()
  }

  /** rates lists the configured rates, before the instance share and penalties. */
  rates(): ConfiguredRates {
    const overrides: Array<[string, Rate]> = []
    for (const [key, id] of this.bucketRates.own()) {
      const rate = this.bucketRates.byId[id]!
      if (!rate.followsDefault) overrides.push([key, rate.base])
    }
    // fromEntries defines own properties, so a merchant named `__proto__` is kept as one
    return {
      default: this.bucketRates.default.base,
      overrides: Object.fromEntries(overrides),
      version: this.version,
      share: this.share,
    }
  }

  /** stats returns the limiter's counters. */
  stats(): LimiterStats {
    let overrides = 0
    let penalized = 0
    for (const [, id] of this.bucketRates.own()) {
      const rate = this.bucketRates.byId[id]!
      if (!rate.followsDefault) overrides++
      if (rate.penaltyFactor !== 1) penalized++
    }
    return {
      keys: this.table.size,
      maxKeys: this.table.maxKeys,
      evictions: this.table.evictions,
      tableFull: this.tableFull,
      skewTolerated: this.guard.tolerated,
      skewRebased: this.guard.rebased,
      overrides,
      penalized,
      penalties: this.penalties,
      rateChanges: this.rateChanges,
      staleChanges: this.staleChanges,
      penaltiesDropped: this.penaltiesDropped,
      skewCorrected: this.guard.corrected,
      shareDeferrals: this.shareDeferrals,
      parentsTracked: this.shares.parentsTracked,
    }
  }

  /**
   * decide is the decision step of reserve (tryAcquireAt has its own copy of the common
   * case, without the reservation's fields, then shares decideAnyKey): it grants `cost` to `key`
   * at the earliest time the tokens are there, if that is at most `maxDelayMs` from now.
   * It leaves the delay in `decidedDelayMs`, and for a reservation (`reserving`) what
   * its Granted records in the other `decided…` fields: it is on the hot path, so it
   * makes no result object and writes nothing a tryAcquire does not need.
   */
  private decide(key: string, cost: number, nowMs: number, maxDelayMs: number, reserving: boolean): Verdict {
    const code = this.codes.get(key)
    // The common case first, as in tryAcquireAt (see there for the bound).
    if (code !== undefined && code <= 0x3fffffff && nowMs === this.lastRawMs) {
      const rate = this.defaultRate
      const tatMs = this.table.tatMs
      const now = this.lastNowMs
      const tat = tatMs[code]!
      const spanMs = cost * rate.emissionMs
      const next = (tat > now ? tat : now) + spanMs
      if (cost > 0 && cost <= rate.capacity && next - now <= rate.fastAllowanceMs) {
        tatMs[code] = next
        if (reserving) {
          this.decidedDelayMs = 0
          this.decidedSpanMs = spanMs
          this.decidedEndMs = next - rate.tauMs
        }
        return GRANTED
      }
    }
    return this.decideAnyKey(key, code, cost, nowMs, maxDelayMs, reserving)
  }

  /** decideAnyKey is decide for every case: a new key, a key with its own rate, a new time, a wait. */
  private decideAnyKey(
    key: string,
    code: number | undefined,
    cost: number,
    nowMs: number,
    maxDelayMs: number,
    reserving: boolean,
  ): Verdict {
    const now = nowMs === this.lastRawMs ? this.lastNowMs : this.relative(nowMs)
    let slot = code
    let rate = this.defaultRate
    if (slot === undefined || slot >= OWN_RATE) {
      slot = this.slotOf(key, code, now)
      if (slot < 0) return TABLE_FULL
      rate = this.slotRate
    }
    if (!(cost > 0 && cost <= rate.capacity)) this.badCost(cost, rate)
    const delayMs = this.probe(slot, rate, cost, now, maxDelayMs)
    this.decidedDelayMs = delayMs
    if (delayMs > maxDelayMs) return TOO_SOON
    this.charge(slot, rate, cost, now, delayMs, reserving, this.probedTats)
    return GRANTED
  }

  /**
   * probe is the least delay from `now` at which every window of `slot` (at `rate`) takes
   * `cost`, a Retry-After included, without charging anything. It stops at the first part
   * that is already beyond `maxDelayMs` (the answer is then above it, not the whole wait).
   * The one step that reads a bucket for a decision: the single-key path and the layered
   * one (see layered.ts) both go through it.
   */
  private probe(slot: number, rate: BucketRate, cost: number, now: number, maxDelayMs: number): number {
    this.probedTats = undefined
    const tat = this.table.tatMs[slot]!
    const start = tat > now ? tat : now
    const next = start + cost * rate.emissionMs
    let delayMs = 0
    if (next - now > rate.allowanceMs) {
      delayMs = next - rate.tauMs - now
      // a cost above the (penalized) burst cannot fit under the tolerance: it goes once the bucket is full
      if (delayMs > start - now) delayMs = start - now
      if (delayMs <= rate.conformMs) delayMs = 0
      else if (delayMs > maxDelayMs) return delayMs
    }
    if (rate.extra !== undefined) {
      delayMs = this.extraDelayMs(slot, rate.extra, cost, now, delayMs)
      if (delayMs > maxDelayMs) return delayMs
    }
    // a Retry-After is a time: neither the tolerance nor the rounding of the bucket's sums grants before its end
    if (now + delayMs < rate.blockedUntilMs) delayMs = untilMs(now, rate.blockedUntilMs)
    return delayMs
  }

  /**
   * charge takes `cost` from every window of `slot` at `now + delayMs` (a time probe found
   * they all meet, or a later one), and for a reservation leaves in `decided…` how far each
   * moved and where it ends. Charged from that time, not from now: a key that could have
   * gone earlier does not count the wait as its refill. `probedTats` is what probe found
   * of the slot's further windows (probedTats), to save looking them up again.
   */
  private charge(
    slot: number,
    rate: BucketRate,
    cost: number,
    now: number,
    delayMs: number,
    reserving: boolean,
    probedTats: Float64Array | undefined,
  ): void {
    if (rate.extra !== undefined) {
      this.chargeExtra(slot, rate, cost, now, delayMs, reserving, probedTats)
      return
    }
    const tatMs = this.table.tatMs
    const tat = tatMs[slot]!
    const at = now + delayMs
    const next = (tat > at ? tat : at) + cost * rate.emissionMs
    tatMs[slot] = next
    if (reserving) {
      this.decidedSpanMs = next - (tat > now ? tat : now)
      this.decidedEndMs = next - rate.tauMs
    }
  }

  /**
   * extraDelayMs is the least delay from `now`, at least `delayMs` (the first window's),
   * at which every further window of `slot` takes `cost`: each is GCRA as the first,
   * and a time one window meets every later time meets too, so the latest of them is the
   * one all meet.
   */
  private extraDelayMs(
    slot: number,
    extra: ExtraWindow[],
    cost: number,
    now: number,
    delayMs: number,
  ): number {
    const tats = this.table.extraTatMs.get(slot)
    this.probedTats = tats
    if (tats === undefined) return delayMs
    let latestMs = delayMs
    for (let i = 0; i < extra.length; i++) {
      const window = extra[i]!
      const tat = tats[i]!
      const start = tat > now ? tat : now
      if (start + cost * window.emissionMs - now <= window.allowanceMs) continue
      let windowDelayMs = start + cost * window.emissionMs - window.tauMs - now
      if (windowDelayMs > start - now) windowDelayMs = start - now
      if (windowDelayMs > window.conformMs && windowDelayMs > latestMs) latestMs = windowDelayMs
    }
    return latestMs
  }

  /**
   * chargeExtra charges `cost` to every window of `slot` at `now + delayMs`, the time all
   * of them meet: a window that could have gone earlier is charged from that time, not
   * from now, so the wait does not count as its refill twice. For a reservation it records
   * how far each window moved (from where it stood or now) and where it ends.
   */
  private chargeExtra(
    slot: number,
    rate: BucketRate,
    cost: number,
    now: number,
    delayMs: number,
    reserving: boolean,
    probedTats: Float64Array | undefined,
  ): void {
    const at = now + delayMs
    const tatMs = this.table.tatMs
    const tat = tatMs[slot]!
    const next = (tat > at ? tat : at) + cost * rate.emissionMs
    tatMs[slot] = next
    if (reserving) {
      this.decidedSpanMs = next - (tat > now ? tat : now)
      this.decidedEndMs = next - rate.tauMs
    }
    const extra = rate.extra!
    let tats = probedTats ?? this.table.extraTatMs.get(slot)
    if (tats === undefined) {
      tats = new Float64Array(extra.length).fill(now)
      this.table.extraTatMs.set(slot, tats)
    }
    const spans = reserving ? new Float64Array(3 * extra.length) : undefined
    for (let i = 0; i < extra.length; i++) {
      const window = extra[i]!
      const windowTat = tats[i]!
      const windowNext = (windowTat > at ? windowTat : at) + cost * window.emissionMs
      tats[i] = windowNext
      if (spans !== undefined) {
        spans[3 * i] = window.base.intervalMs
        spans[3 * i + 1] = windowNext - (windowTat > now ? windowTat : now)
        spans[3 * i + 2] = windowNext - window.tauMs
      }
    }
    this.decidedExtra = spans
  }

  /**
   * slotOf is the slot of a key that is new (`code` undefined: it is placed, or -1 when
   * the table is full) or has a rate of its own (then in `slotRate`, recovered to `now`).
   */
  private slotOf(key: string, code: number | undefined, now: number): number {
    const held = code ?? this.holdKey(key, now)
    if (held < 0) return -1
    if (held < OWN_RATE) {
      this.slotRate = this.defaultRate
      return held
    }
    this.slotRate = this.rateAt(key, held, now)
    return slotOfCode(held)
  }

  /** holdKey places a new `key` in the table and returns its code, or -1 when the table is full. */
  private holdKey(key: string, now: number): number {
    if (typeof key !== 'string' || key.length === 0 || key.length > this.maxKeyLength) {
      throw new TypeError(
        `KeyedLimiter: expected a key of 1 to ${this.maxKeyLength} characters, got ${describeKey(key)}`,
      )
    }
    const id = this.bucketRates.idOf(key) ?? 0
    const table = this.table
    const slot = table.place(key, id, now, this.evictionScan)
    this.tatMs = table.tatMs
    if (slot < 0) {
      this.tableFull++
      return -1
    }
    this.placements++
    const evicted = table.evictedKey
    // a rate kept for a penalty alone lives as long as its key's bucket
    if (
      evicted !== undefined &&
      table.evictedRateId !== 0 &&
      this.bucketRates.byId[table.evictedRateId]!.followsDefault
    ) {
      this.bucketRates.remove(evicted)
    }
    const unheldUntilMs = this.unheld.until(key, now)
    if (unheldUntilMs > now) return this.holdBlocked(key, slot, id, unheldUntilMs, now)
    if (id !== 0) {
      const rate = this.bucketRates.byId[id]!
      table.tatMs[slot] = Math.max(now, this.blockFloor(rate, now))
    }
    return codeFor(slot, id)
  }

  /**
   * holdBlocked finishes placing a key whose Retry-After was kept while it was not held:
   * it is kept on the key's own rate (one for the penalty alone, if it had none), as for
   * a key penalized while held. Returns the key's code.
   */
  private holdBlocked(key: string, slot: number, id: number, untilMs: number, now: number): number {
    let ownId = id
    if (ownId === 0) {
      ownId = this.bucketRates.add(key, new BucketRate(this.bucketRates.default.base, true, this.share))
      this.table.setRateId(key, slot, ownId)
    }
    const rate = this.bucketRates.byId[ownId]!
    rate.blockedUntilMs = Math.max(rate.blockedUntilMs, untilMs)
    this.table.tatMs[slot] = Math.max(now, this.blockFloor(rate, now))
    return codeFor(slot, ownId)
  }

  /** rateAt is the rate of a held key whose code names a rate of its own, recovered to `now`. */
  private rateAt(key: string, code: number, now: number): BucketRate {
    const rate = this.bucketRates.byId[rateIdOfCode(code)]!
    if (rate.penaltyFactor === 1 || now < rate.nextIncreaseAtMs) return rate
    return this.recover(key, slotOfCode(code), rate, now)
  }

  /** recover applies the additive increases a penalized rate has earned by `now`. */
  private recover(key: string, slot: number | undefined, rate: BucketRate, now: number): BucketRate {
    if (rate.penaltyFactor === 1 || now < rate.nextIncreaseAtMs) return rate
    const before = paramsOf(rate)
    this.penalty.raise(rate, now)
    rate.derive(this.share)
    if (slot !== undefined) this.convert(slot, before, rate, now, 'proportional')
    if (rate.penaltyFactor === 1 && rate.followsDefault) {
      this.bucketRates.remove(key)
      if (slot !== undefined) this.table.setRateId(key, slot, 0)
      return this.bucketRates.default
    }
    return rate
  }

  /**
   * refund gives a cancelled reservation back what it still holds. As in Go's
   * x/time/rate, nothing for one whose time has passed. Unlike Go, nothing either while a
   * later reservation stands behind it: the bucket keeps one arrival time, so moving it back
   * by any part of the span would schedule new work into time the later reservations still
   * occupy (Go gives back the span less the later ones' tokens, which double-books exactly
   * that time). Only the latest reservation gives its whole span back. Never above the
   * capacity, never inside a Retry-After. A key no longer held was evicted full and has
   * nothing to take back. A reservation of a list of keys gives back to each key it
   * charged by this rule, key by key (a parent usually has later reservations behind it,
   * its child not). A share clock is not moved back: a cancel is rare, and it errs
   * against the child that cancelled, never against the others.
   */
  private refund(reservation: HeldReservation): void {
    this.refundPart(reservation)
    const layers = reservation.layers
    if (layers !== undefined) for (const part of layers) this.refundPart(part)
  }

  /** refundPart is refund for one key's part of a reservation. */
  private refundPart(reservation: HeldReservation): void {
    const code = this.table.codeOf(reservation.key)
    if (code === undefined) return
    const now = this.relative(this.clock.now())
    const shiftMs = reservation.epochMs - this.epochMs
    if (reservation.atMs + shiftMs < now) return
    const slot = slotOfCode(code)
    const rate = code >= OWN_RATE ? this.rateAt(reservation.key, code, now) : this.bucketRates.default
    const tatMs = this.table.tatMs
    const tat = tatMs[slot]!
    const laterMs = tat - rate.tauMs - (reservation.endMs + shiftMs)
    if (laterMs <= rate.conformMs) {
      tatMs[slot] = Math.max(tat - reservation.spanMs, now, this.blockFloor(rate, now))
    }
    if (rate.extra !== undefined && reservation.extra !== undefined) {
      this.refundExtra(slot, rate.extra, reservation.extra, shiftMs, now, rate.blockedUntilMs)
    }
  }

  /**
   * refundExtra gives each further window back what the reservation still holds in it, by
   * refund's rule for the first window, window by window (a rate change may have left one
   * with a reservation behind and another without), matched by interval. Windows the
   * reservation was not charged in (the rate gained them after) get nothing.
   */
  private refundExtra(
    slot: number,
    extra: ExtraWindow[],
    held: Float64Array,
    shiftMs: number,
    now: number,
    blockedUntilMs: number,
  ): void {
    const tats = this.table.extraTatMs.get(slot)
    if (tats === undefined) return
    for (let i = 0; i < extra.length; i++) {
      const window = extra[i]!
      let at = 0
      while (at < held.length && held[at] !== window.base.intervalMs) at += 3
      if (at >= held.length) continue
      const tat = tats[i]!
      if (tat - window.tauMs - (held[at + 2]! + shiftMs) > window.conformMs) continue
      tats[i] = Math.max(tat - held[at + 1]!, now, windowBlockFloor(window, blockedUntilMs, now))
    }
  }

  /** blockFloor is the lowest arrival time that grants nothing before `rate`'s Retry-After ends. */
  private blockFloor(rate: BucketRate, now: number): number {
    return windowBlockFloor(rate, rate.blockedUntilMs, now)
  }

  /** relative reads `nowMs` through the skew guard, as ms since the epoch (moved forward when far). */
  private relative(nowMs: number): number {
    const guarded = this.guard.read(nowMs)
    let now = guarded - this.epochMs
    if (!(now < REBASE_AFTER_MS)) now = this.rebase(guarded)
    this.lastRawMs = nowMs
    this.lastNowMs = now
    return now
  }

  /** rebase moves the epoch to `guardedMs` and every held time with it; returns the new now, 0. */
  private rebase(guardedMs: number): number {
    const shiftMs = guardedMs - this.epochMs
    this.epochMs = guardedMs
    if (Number.isNaN(shiftMs)) return 0
    this.table.shiftTimes(shiftMs, 0)
    for (const rate of this.bucketRates.byId) rate?.shiftTimes(shiftMs)
    this.unheld.shiftTimes(shiftMs)
    this.shares.shiftTimes(shiftMs)
    return 0
  }

  private badCost(cost: number, rate: BucketRate): never {
    if (!(cost > 0)) throw new TypeError(`KeyedLimiter: expected a cost above 0, got ${cost}`)
    const shared =
      this.share === 1
        ? ''
        : ` in this process (burst ${rate.base.burst} shared by ${1 / this.share} instances)`
    throw new RangeError(
      `KeyedLimiter: cost ${cost} is above the bucket's capacity of ${rate.capacity}${shared}`,
    )
  }

  private changeDefault(rate: Rate, now: number, inheritance: Inheritance): void {
    const byId = this.bucketRates.byId
    this.retune(
      (id) => id === 0 || byId[id]!.followsDefault,
      now,
      inheritance,
      (bucketRate) => {
        bucketRate.base = rate
      },
    )
  }

  /** checkOverrideBound throws when `checked` would leave more than maxOverrides keys with an override. */
  private checkOverrideBound(checked: CheckedChange, replace: boolean): void {
    let count = replace ? 0 : this.overrideCount
    for (const [key, rate] of checked.overrides) {
      const had = !replace && this.hasOverride(key)
      if (rate !== null && !had) count++
      else if (rate === null && had) count--
    }
    if (count > this.maxOverrides) {
      throw new RangeError(
        `apply: ${count} rate overrides would exceed maxOverrides (${this.maxOverrides}); nothing was changed`,
      )
    }
  }

  /** ownRateOf says whether a held key's code names a rate override of its own (not a penalty alone). */
  private ownRateOf(code: number): boolean {
    return code >= OWN_RATE && !this.bucketRates.byId[rateIdOfCode(code)]!.followsDefault
  }

  private hasOverride(key: string): boolean {
    const id = this.bucketRates.idOf(key)
    return id !== undefined && !this.bucketRates.byId[id]!.followsDefault
  }

  private changeOverride(key: string, rate: Rate | null, now: number, inheritance: Inheritance): void {
    const slot = this.table.slotOf(key)
    const id = this.bucketRates.idOf(key)
    const current = this.bucketRates.byId[id ?? 0]!
    const before = paramsOf(current)
    if (
      rate === null ? id !== undefined && !current.followsDefault : id === undefined || current.followsDefault
    ) {
      this.overrideCount += rate === null ? -1 : 1
    }
    if (rate === null) {
      if (id === undefined || current.followsDefault) return
      // a penalty outlives its override only on a key held: no bucket, nothing to keep it for
      if (current.penaltyFactor === 1 || slot === undefined) {
        this.bucketRates.remove(key)
        if (slot !== undefined) {
          this.table.setRateId(key, slot, 0)
          this.convert(slot, before, this.bucketRates.default, now, inheritance)
        }
        return
      }
      current.base = this.bucketRates.default.base
      current.followsDefault = true
    } else if (id === undefined) {
      const own = new BucketRate(rate, false, this.share)
      const ownId = this.bucketRates.add(key, own)
      if (slot !== undefined) {
        this.table.setRateId(key, slot, ownId)
        this.convert(slot, before, own, now, inheritance)
      }
      return
    } else {
      current.base = rate
      current.followsDefault = false
    }
    current.derive(this.share)
    if (slot !== undefined) this.convert(slot, before, current, now, inheritance)
  }

  /**
   * retune changes the rates that `affects` selects (through `mutate`, or just by
   * re-deriving them after a share change) and converts every bucket charged at one of
   * them. One pass over the table: O(keys), and rare.
   */
  private retune(
    affects: (id: number) => boolean,
    now: number,
    inheritance: Inheritance,
    mutate?: (rate: BucketRate) => void,
  ): void {
    const byId = this.bucketRates.byId
    const before: Array<Params | undefined> = []
    for (let id = 0; id < byId.length; id++) {
      const rate = byId[id]
      if (rate === undefined || !affects(id)) continue
      before[id] = paramsOf(rate)
      mutate?.(rate)
      rate.derive(this.share)
    }
    for (const [, code] of this.table.entries()) {
      const id = rateIdOfCode(code)
      const from = before[id]
      if (from !== undefined) this.convert(slotOfCode(code), from, byId[id]!, now, inheritance)
    }
  }

  /**
   * convert re-expresses one bucket, banked at `now` under `from`, under `to`, window by
   * window: each window of `to` continues the window of `from` with its interval, or,
   * when `from` had none (a window added), the first one. Positive tokens carry over by
   * `inheritance`; debt is kept in time, so that reservations already handed out stay
   * valid and new work comes after them, in every window (the latest of them, as a
   * window that had room behind the binding one would otherwise let work in before the
   * reservations); a Retry-After is kept as the time it ends.
   */
  private convert(slot: number, from: Params, to: BucketRate, now: number, inheritance: Inheritance): void {
    const tatMs = this.table.tatMs
    const tat = tatMs[slot]!
    const extraTatMs = this.table.extraTatMs
    const fromTats = from.extra === undefined ? undefined : extraTatMs.get(slot)
    const source = (intervalMs: number): [WindowParams, number] => {
      const i = from.extra?.findIndex((window) => window.intervalMs === intervalMs) ?? -1
      return i < 0 || from.intervalMs === intervalMs ? [from, tat] : [from.extra![i]!, fromTats?.[i] ?? now]
    }
    // the last reservation handed out is where the binding window's debt ends: every window keeps it
    let debtEndMs = tat - from.tauMs
    from.extra?.forEach((window, i) => {
      debtEndMs = Math.max(debtEndMs, (fromTats?.[i] ?? now) - window.tauMs)
    })
    // or later, for a key charged at another key's time (see KeyTable.reservedUntilMs)
    const reservedUntilMs = this.table.reservedUntilMs.get(slot)
    if (reservedUntilMs !== undefined) {
      if (reservedUntilMs > now) debtEndMs = Math.max(debtEndMs, reservedUntilMs)
      else this.table.reservedUntilMs.delete(slot)
    }
    const floorOf = (window: Gcra) =>
      Math.max(
        debtEndMs > now ? debtEndMs + window.tauMs : Number.NEGATIVE_INFINITY,
        windowBlockFloor(window, to.blockedUntilMs, now),
      )
    const [first, firstTat] = source(to.base.intervalMs)
    tatMs[slot] = Math.max(convertTat(firstTat, first, to, now, inheritance), floorOf(to))
    if (to.extra === undefined) {
      if (from.extra !== undefined) extraTatMs.delete(slot)
      return
    }
    const tats = new Float64Array(to.extra.length)
    for (let i = 0; i < tats.length; i++) {
      const window = to.extra[i]!
      const [params, windowTat] = source(window.base.intervalMs)
      tats[i] = Math.max(convertTat(windowTat, params, window, now, inheritance), floorOf(window))
    }
    extraTatMs.set(slot, tats)
  }
}

/**
 * convertTat is one window's arrival time `tat`, banked at `now` under `from`, under
 * `to`: positive tokens carried over by `inheritance`, debt kept in time.
 */
function convertTat(tat: number, from: Gcra, to: Gcra, now: number, inheritance: Inheritance): number {
  const start = tat > now ? tat : now
  const tokens = (now + from.tauMs - start) / from.emissionMs
  if (tokens < 0) return start - from.tauMs + to.tauMs
  if (!(tat > now || inheritance !== 'proportional')) return tat
  const carried =
    inheritance === 'proportional'
      ? (tokens * to.burst) / from.burst
      : inheritance === 'as-is'
        ? Math.min(tokens, to.burst)
        : to.burst
  return now + to.tauMs - carried * to.emissionMs
}

/** windowState folds one window at arrival time `tat` into a key's inspection: fewest tokens, smallest capacity, longest wait. */
function windowState(
  state: { tokens: number; capacity: number; waitMs: number },
  window: Gcra,
  tat: number,
  now: number,
): void {
  const start = tat > now ? tat : now
  state.tokens = Math.min(state.tokens, (now + window.tauMs - start) / window.emissionMs)
  state.capacity = Math.min(state.capacity, window.burst)
  state.waitMs = Math.max(state.waitMs, start + window.emissionMs - window.tauMs - now)
}

/**
 * windowHoleMs is the time of `window` (arrival time `tat`) a unit charged at `at` leaves
 * unused before it; 0 when the charge stays within the burst. Even one unit's time
 * allowed would be one unit of the parent lost per such grant, a quarter of a parent
 * beside a child at its own limit of a quarter.
 */
function windowHoleMs(
  window: Gcra & { allowanceMs: number; conformMs: number },
  tat: number,
  now: number,
  at: number,
): number {
  const holeMs = at - (tat > now ? tat : now)
  if (holeMs <= window.conformMs) return 0
  return (tat > at ? tat : at) + window.emissionMs - now <= window.allowanceMs ? 0 : holeMs
}

/** windowBlockFloor is the lowest arrival time of `window` that grants nothing before `blockedUntilMs`. */
function windowBlockFloor(window: Gcra, blockedUntilMs: number, now: number): number {
  return blockedUntilMs > now ? blockedUntilMs + window.tauMs - window.emissionMs : Number.NEGATIVE_INFINITY
}

/** untilMs is the least delay from `now` that reaches `endMs`, rounding included. */
function untilMs(now: number, endMs: number): number {
  const delayMs = endMs - now
  return now + delayMs < endMs ? delayMs + Math.abs(endMs) * Number.EPSILON : delayMs
}

function badDefault(): never {
  throw new TypeError('setRate: the default rate (*) cannot be cleared, got null')
}
