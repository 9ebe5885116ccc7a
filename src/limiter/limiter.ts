import { type Clock, monotonicClock, type SkewEvent, SkewGuard } from './clock.js'
import { MAX_MERCHANT_KEY_LENGTH } from './key.js'
import { parseRate, type Rate, type RateInput } from './rate.js'
import { KeyTable } from './table.js'

/**
 * Inheritance says what a bucket keeps when its rate changes. `proportional` (the
 * default) keeps the same fraction of the capacity; `as-is` keeps the token count,
 * capped at the new capacity; `reset` starts full. In every case a bucket in debt
 * (reservations handed out ahead of time) keeps its debt: the reservations stand, and
 * new work is scheduled after them at the new rate.
 */
export type Inheritance = 'proportional' | 'as-is' | 'reset'

/** PenaltyOptions tune the additive-increase, multiplicative-decrease response to 429s. */
export interface PenaltyOptions {
  /** decreaseFactor multiplies the rate on each penalty. Default 0.5. */
  decreaseFactor?: number
  /** minFactor is the lowest fraction of the configured rate a penalty can reach. Default 0.05. */
  minFactor?: number
  /** increaseStep is added to the factor every `increaseEveryMs` until it is back at 1. Default 0.1. */
  increaseStep?: number
  /** increaseEveryMs is the recovery step, counted from the end of the Retry-After. Default 10 000. */
  increaseEveryMs?: number
  /** decreaseCooldownMs: penalties closer together than this lower the rate once. Default 1 000. */
  decreaseCooldownMs?: number
}

/** KeyedLimiterOptions configure a KeyedLimiter. */
export interface KeyedLimiterOptions {
  /** rate is the default rate, for every key without an override. */
  rate: RateInput
  /** clock gives the time in ms. Default: monotonicClock. */
  clock?: Clock
  /** clockSkewToleranceMs: a backward clock step up to this is absorbed silently. Default 100. */
  clockSkewToleranceMs?: number
  /** maxKeys bounds the keys held; only full buckets are evicted. Default 1 000 000. */
  maxKeys?: number
  /** horizonMs is the furthest ahead a reservation commits tokens. Default 60 000. */
  horizonMs?: number
  /** maxKeyLength bounds a key, in UTF-16 code units. Default 128. */
  maxKeyLength?: number
  /** evictionScan is how many keys one admission may inspect for a full bucket. Default 64. */
  evictionScan?: number
  penalty?: PenaltyOptions
  /** onClockSkew is told of each backward clock step, once. */
  onClockSkew?: (event: SkewEvent) => void
}

/** Granted is a reservation that holds tokens: run the work after `delayMs`. */
export interface Granted {
  readonly ok: true
  readonly key: string
  readonly cost: number
  /** delayMs is how long to wait before running, in ms; 0 means now. */
  readonly delayMs: number
  /** reservedAtMs is when the work may run, on the limiter's clock. */
  readonly reservedAtMs: number
  /**
   * cancel gives the reservation up: it returns the tokens that no later reservation
   * has been scheduled behind (all of them for the latest one), and returns true; later
   * calls do nothing and return false. Cancel only work that has not run. The bucket
   * never holds more than its capacity.
   */
  cancel(): boolean
}

/** DeferReason says why a reservation was not made. */
export type DeferReason = 'beyond-horizon' | 'table-full'

/** Deferred is a reservation that was not made: nothing is held; ask again after `delayMs`. */
export interface Deferred {
  readonly ok: false
  readonly delayMs: number
  readonly reason: DeferReason
}

/** Reservation is the answer of reserve. */
export type Reservation = Granted | Deferred

/**
 * RateChange sets several rates in one synchronous step. `overrides` maps a key to its
 * rate, or to null to clear its override. `replace` makes the change a snapshot: every
 * override it does not list is cleared. A `version` at or below the last applied one
 * makes the whole change stale.
 */
export interface RateChange {
  version?: number
  default?: RateInput
  overrides?: Readonly<Record<string, RateInput | null>>
  replace?: boolean
  inheritance?: Inheritance
}

/** ApplyResult tells whether a RateChange took effect. */
export type ApplyResult = { applied: true } | { applied: false; reason: 'stale-version' }

/** KeyInspection is a key's bucket at one instant. */
export interface KeyInspection {
  /** tokens in the bucket; negative when reservations are handed out ahead of time. */
  tokens: number
  /** capacity is the bucket's size under the rate in force. */
  capacity: number
  /** rate in force: the configured rate scaled by the instance share and any penalty. */
  rate: Rate
  /** override is true when the key has a rate of its own. */
  override: boolean
  /** penaltyFactor is 1, or the fraction of the rate left after 429s. */
  penaltyFactor: number
  /** waitMs is how long until one unit can be granted, in ms. */
  waitMs: number
}

/** LimiterStats are counters for metrics. */
export interface LimiterStats {
  keys: number
  maxKeys: number
  evictions: number
  /** tableFull counts new keys refused because no full bucket could be evicted. */
  tableFull: number
  skewTolerated: number
  skewRebased: number
  overrides: number
  penalized: number
  /** penalties counts penalize calls. */
  penalties: number
  rateChanges: number
  staleChanges: number
}

/** ConfiguredRates are the rates as set, before the instance share and penalties. */
export interface ConfiguredRates {
  default: Rate
  overrides: Record<string, Rate>
  version: number | undefined
  share: number
}

/** EPSILON_MS absorbs float rounding, so that a full burst of fractional intervals conforms. */
const EPSILON_MS = 1e-6

const DEFAULT_PENALTY: Required<PenaltyOptions> = {
  decreaseFactor: 0.5,
  minFactor: 0.05,
  increaseStep: 0.1,
  increaseEveryMs: 10_000,
  decreaseCooldownMs: 1_000,
}

/**
 * RateEntry is one rate keys are charged at: the default (id 0), or one key's own
 * (an override, a penalty, or both), with its GCRA parameters derived from it.
 */
class RateEntry {
  base: Rate
  /** followsDefault: the entry exists for a penalty alone and tracks the default rate. */
  followsDefault: boolean
  penaltyFactor = 1
  nextIncreaseAtMs = 0
  lastDecreaseAtMs = Number.NEGATIVE_INFINITY
  limit = 0
  burst = 0
  emissionMs = 0
  tauMs = 0

  constructor(base: Rate, followsDefault: boolean, share: number) {
    this.base = base
    this.followsDefault = followsDefault
    this.derive(share)
  }

  derive(share: number): void {
    const factor = share * this.penaltyFactor
    this.limit = this.base.limit * factor
    this.burst = Math.max(1, this.base.burst * factor)
    this.emissionMs = this.base.intervalMs / this.limit
    this.tauMs = this.burst * this.emissionMs
  }

  rate(): Rate {
    return { limit: this.limit, intervalMs: this.base.intervalMs, burst: this.burst }
  }
}

/** Params are the GCRA parameters of an entry before a change, to convert buckets from. */
interface Params {
  emissionMs: number
  tauMs: number
  burst: number
}

/**
 * KeyedLimiter is a token bucket per key, kept as GCRA: one theoretical arrival time per
 * key. Every decision is one synchronous call, so it is atomic on the event loop
 * however many jobs are in flight. Every method that reads the clock has a form ending
 * in `At` that takes the time in ms; the clock is read through a skew guard either way.
 */
export class KeyedLimiter {
  private readonly clock: Clock
  private readonly guard: SkewGuard
  private readonly table: KeyTable
  private readonly horizonMs: number
  private readonly maxKeyLength: number
  private readonly evictionScan: number
  private readonly penalty: Required<PenaltyOptions>
  private readonly entries: Array<RateEntry | undefined>
  private readonly freeEntryIds: number[] = []
  /** entryOf maps a key with a rate entry of its own to that entry's id. */
  private readonly entryOf = new Map<string, number>()
  private readonly refundBound: (key: string, cost: number, reservedAtMs: number) => void
  private share = 1
  private version: number | undefined
  private tableFull = 0
  private penalties = 0
  private rateChanges = 0
  private staleChanges = 0

  constructor(options: KeyedLimiterOptions) {
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`KeyedLimiter: expected an options object, got ${String(options)}`)
    }
    this.clock = options.clock ?? monotonicClock
    this.guard = new SkewGuard(options.clockSkewToleranceMs ?? 100, options.onClockSkew)
    this.table = new KeyTable(options.maxKeys ?? 1_000_000)
    this.horizonMs = checkNonNegative(options.horizonMs ?? 60_000, 'horizonMs')
    this.maxKeyLength = checkPositiveInteger(options.maxKeyLength ?? MAX_MERCHANT_KEY_LENGTH, 'maxKeyLength')
    this.evictionScan = checkPositiveInteger(options.evictionScan ?? 64, 'evictionScan')
    this.penalty = checkPenalty({ ...DEFAULT_PENALTY, ...options.penalty })
    this.entries = [new RateEntry(parseRate(options.rate), false, 1)]
    this.refundBound = (key, cost, reservedAtMs) => this.refund(key, cost, reservedAtMs)
  }

  /** size is the number of keys held. */
  get size(): number {
    return this.table.size
  }

  /** now is the limiter's time in ms: the clock read through the skew guard. */
  now(): number {
    return this.guard.read(this.clock.now())
  }

  /** tryAcquire takes `cost` tokens from `key`'s bucket if they are there now. */
  tryAcquire(key: string, cost = 1): boolean {
    return this.tryAcquireAt(key, cost, this.clock.now())
  }

  /** tryAcquireAt is tryAcquire at time `nowMs` (a reading of the limiter's clock). */
  tryAcquireAt(key: string, cost: number, nowMs: number): boolean {
    const now = this.guard.read(nowMs)
    const table = this.table
    let slot = table.slotOf(key)
    if (slot === undefined) {
      slot = this.admit(key, now)
      if (slot < 0) return false
    }
    let entry = this.entries[table.rateIds[slot]!]!
    if (entry.penaltyFactor !== 1) entry = this.recover(key, slot, entry, now)
    if (!(cost > 0 && cost <= entry.base.burst)) this.badCost(cost, entry)
    const tatMs = table.tatMs[slot]!
    const next = (tatMs > now ? tatMs : now) + cost * entry.emissionMs
    if (next - now > entry.tauMs + EPSILON_MS) return false
    table.tatMs[slot] = next
    return true
  }

  /**
   * reserve commits `key` to `cost` tokens at the earliest time they are there: now
   * (delayMs 0) or later. Reservations are spaced at the key's rate, in call order. When
   * that time is beyond the horizon, or the key cannot be admitted because the table is
   * full, nothing is held and the answer says when to ask again.
   */
  reserve(key: string, cost = 1): Reservation {
    return this.reserveAt(key, cost, this.clock.now())
  }

  /** reserveAt is reserve at time `nowMs`. */
  reserveAt(key: string, cost: number, nowMs: number): Reservation {
    const now = this.guard.read(nowMs)
    const table = this.table
    let slot = table.slotOf(key)
    if (slot === undefined) {
      slot = this.admit(key, now)
      if (slot < 0) return { ok: false, delayMs: Math.max(1, table.refusedWaitMs), reason: 'table-full' }
    }
    let entry = this.entries[table.rateIds[slot]!]!
    if (entry.penaltyFactor !== 1) entry = this.recover(key, slot, entry, now)
    if (!(cost > 0 && cost <= entry.base.burst)) this.badCost(cost, entry)
    const tatMs = table.tatMs[slot]!
    const next = (tatMs > now ? tatMs : now) + cost * entry.emissionMs
    let delayMs = next - entry.tauMs - now
    if (delayMs <= EPSILON_MS) delayMs = 0
    if (delayMs > this.horizonMs) {
      return { ok: false, delayMs: delayMs - this.horizonMs, reason: 'beyond-horizon' }
    }
    table.tatMs[slot] = next
    return new GrantedReservation(key, cost, delayMs, now + delayMs, this.refundBound)
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
   * a bad one throws a TypeError with nothing changed. No decision ever sees half of it.
   */
  apply(change: RateChange): ApplyResult {
    return this.applyAt(change, this.clock.now())
  }

  /** applyAt is apply at time `nowMs`. */
  applyAt(change: RateChange, nowMs: number): ApplyResult {
    const checked = this.checkChange(change)
    if (change.version !== undefined && this.version !== undefined && change.version <= this.version) {
      this.staleChanges++
      return { applied: false, reason: 'stale-version' }
    }
    const now = this.guard.read(nowMs)
    const inheritance = change.inheritance ?? 'proportional'
    if (checked.defaultRate !== undefined) this.changeDefault(checked.defaultRate, now, inheritance)
    if (change.replace) {
      for (const [key, id] of [...this.entryOf]) {
        if (!this.entries[id]!.followsDefault && !checked.overrides.has(key)) {
          this.changeOverride(key, null, now, inheritance)
        }
      }
    }
    for (const [key, rate] of checked.overrides) this.changeOverride(key, rate, now, inheritance)
    if (change.version !== undefined) this.version = change.version
    this.rateChanges++
    return { applied: true }
  }

  /**
   * setShare makes this process enforce 1/`instances` of every rate, for limits shared
   * by several workers. Buckets keep their fill in proportion.
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
    const now = this.guard.read(nowMs)
    this.share = share
    this.retuneSlots(() => true, now, 'proportional')
  }

  /**
   * penalize answers a 429 or 503 from the far side: `key` gets no token for
   * `retryAfterMs`, and its rate drops by `decreaseFactor` (at most once per cooldown),
   * then climbs back by `increaseStep` every `increaseEveryMs`.
   */
  penalize(key: string, retryAfterMs: number): void {
    this.penalizeAt(key, retryAfterMs, this.clock.now())
  }

  /** penalizeAt is penalize at time `nowMs`. */
  penalizeAt(key: string, retryAfterMs: number, nowMs: number): void {
    checkNonNegative(retryAfterMs, 'penalize retryAfterMs')
    const now = this.guard.read(nowMs)
    let slot = this.table.slotOf(key)
    if (slot === undefined) {
      slot = this.admit(key, now)
      if (slot < 0) slot = undefined
    }
    const existing = this.entryOf.get(key)
    if (existing !== undefined) this.recover(key, slot, this.entries[existing]!, now)
    const entry = this.entries[this.ownEntryId(key, slot)]!
    this.penalties++
    if (now - entry.lastDecreaseAtMs >= this.penalty.decreaseCooldownMs) {
      const before = paramsOf(entry)
      entry.penaltyFactor = Math.max(
        this.penalty.minFactor,
        entry.penaltyFactor * this.penalty.decreaseFactor,
      )
      entry.lastDecreaseAtMs = now
      entry.derive(this.share)
      if (slot !== undefined) this.convert(slot, before, entry, now, 'proportional')
    }
    entry.nextIncreaseAtMs = now + retryAfterMs + this.penalty.increaseEveryMs
    if (slot !== undefined && retryAfterMs > 0) {
      const tatMs = this.table.tatMs
      const blockedUntil = now + retryAfterMs + entry.tauMs - entry.emissionMs
      if (tatMs[slot]! < blockedUntil) tatMs[slot] = blockedUntil
    }
  }

  /** inspect describes `key`'s bucket now, or returns undefined when the key is not held. */
  inspect(key: string): KeyInspection | undefined {
    return this.inspectAt(key, this.clock.now())
  }

  /** inspectAt is inspect at time `nowMs`. */
  inspectAt(key: string, nowMs: number): KeyInspection | undefined {
    const now = this.guard.read(nowMs)
    const slot = this.table.slotOf(key)
    if (slot === undefined) return undefined
    let entry = this.entries[this.table.rateIds[slot]!]!
    if (entry.penaltyFactor !== 1) entry = this.recover(key, slot, entry, now)
    const tatMs = this.table.tatMs[slot]!
    const start = tatMs > now ? tatMs : now
    return {
      tokens: (now + entry.tauMs - start) / entry.emissionMs,
      capacity: entry.burst,
      rate: entry.rate(),
      override: this.entryOf.has(key) && !entry.followsDefault,
      penaltyFactor: entry.penaltyFactor,
      waitMs: Math.max(0, start + entry.emissionMs - entry.tauMs - now),
    }
  }

  /** rateOf is the rate in force for `key`: its own or the default, after share and penalty. */
  rateOf(key: string): Rate {
    const id = this.entryOf.get(key)
    if (id === undefined) return this.entries[0]!.rate()
    return this.recover(key, this.table.slotOf(key), this.entries[id]!, this.now()).rate()
  }

  /** rates lists the configured rates, before the instance share and penalties. */
  rates(): ConfiguredRates {
    const overrides: Array<[string, Rate]> = []
    for (const [key, id] of this.entryOf) {
      const entry = this.entries[id]!
      if (!entry.followsDefault) overrides.push([key, entry.base])
    }
    // fromEntries defines own properties, so a merchant named `__proto__` is kept as one
    return {
      default: this.entries[0]!.base,
      overrides: Object.fromEntries(overrides),
      version: this.version,
      share: this.share,
    }
  }

  /** stats returns the limiter's counters. */
  stats(): LimiterStats {
    let overrides = 0
    let penalized = 0
    for (const id of this.entryOf.values()) {
      const entry = this.entries[id]!
      if (!entry.followsDefault) overrides++
      if (entry.penaltyFactor !== 1) penalized++
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
    }
  }

  private admit(key: string, now: number): number {
    if (typeof key !== 'string' || key.length === 0 || key.length > this.maxKeyLength) {
      throw new TypeError(
        `KeyedLimiter: expected a key of 1 to ${this.maxKeyLength} characters, got ${describeKey(key)}`,
      )
    }
    const slot = this.table.admit(key, this.entryOf.get(key) ?? 0, now, this.evictionScan)
    if (slot < 0) this.tableFull++
    return slot
  }

  /**
   * refund returns a cancelled reservation's tokens, less those reserved after it: as in
   * Go's x/time/rate, the reservations behind it keep their times, so the gap it leaves
   * is not handed out twice. The tail reservation gets its whole cost back. A key no
   * longer held was evicted full and has nothing to take back.
   */
  private refund(key: string, cost: number, reservedAtMs: number): void {
    const slot = this.table.slotOf(key)
    if (slot === undefined) return
    const now = this.now()
    const entry = this.entries[this.table.rateIds[slot]!]!
    const tatMs = this.table.tatMs
    const start = tatMs[slot]! > now ? tatMs[slot]! : now
    const reservedAfter = (start - entry.tauMs - reservedAtMs) / entry.emissionMs
    const restored = Math.min(cost, Math.max(0, cost - reservedAfter))
    tatMs[slot] = Math.max(now, start - restored * entry.emissionMs)
  }

  private badCost(cost: number, entry: RateEntry): never {
    if (!(cost > 0)) throw new TypeError(`KeyedLimiter: expected a cost above 0, got ${cost}`)
    throw new RangeError(`KeyedLimiter: cost ${cost} is above the bucket's capacity of ${entry.base.burst}`)
  }

  /** recover applies the additive increases a penalized entry has earned by `now`. */
  private recover(key: string, slot: number | undefined, entry: RateEntry, now: number): RateEntry {
    if (entry.penaltyFactor === 1 || now < entry.nextIncreaseAtMs) return entry
    const { increaseEveryMs, increaseStep } = this.penalty
    const steps = 1 + Math.floor((now - entry.nextIncreaseAtMs) / increaseEveryMs)
    const before = paramsOf(entry)
    entry.penaltyFactor = Math.min(1, entry.penaltyFactor + steps * increaseStep)
    entry.nextIncreaseAtMs += steps * increaseEveryMs
    entry.derive(this.share)
    if (slot !== undefined) this.convert(slot, before, entry, now, 'proportional')
    if (entry.penaltyFactor === 1 && entry.followsDefault) {
      this.releaseEntry(key)
      if (slot !== undefined) this.table.rateIds[slot] = 0
      return this.entries[0]!
    }
    return entry
  }

  /** ownEntryId gives `key` a rate entry of its own (tracking the default) if it has none. */
  private ownEntryId(key: string, slot: number | undefined): number {
    const existing = this.entryOf.get(key)
    if (existing !== undefined) return existing
    const id = this.allocateEntry(new RateEntry(this.entries[0]!.base, true, this.share))
    this.entryOf.set(key, id)
    if (slot !== undefined) this.table.rateIds[slot] = id
    return id
  }

  private allocateEntry(entry: RateEntry): number {
    const id = this.freeEntryIds.pop() ?? this.entries.length
    this.entries[id] = entry
    return id
  }

  private releaseEntry(key: string): void {
    const id = this.entryOf.get(key)
    if (id === undefined) return
    this.entryOf.delete(key)
    this.entries[id] = undefined
    this.freeEntryIds.push(id)
  }

  private changeDefault(rate: Rate, now: number, inheritance: Inheritance): void {
    const entries = this.entries
    this.retuneSlots(
      (id) => id === 0 || entries[id]!.followsDefault,
      now,
      inheritance,
      (entry) => {
        entry.base = rate
      },
    )
  }

  private changeOverride(key: string, rate: Rate | null, now: number, inheritance: Inheritance): void {
    const slot = this.table.slotOf(key)
    const id = this.entryOf.get(key)
    const entry = this.entries[id ?? 0]!
    const before = paramsOf(entry)
    if (rate === null) {
      if (id === undefined || entry.followsDefault) return
      if (entry.penaltyFactor === 1) {
        this.releaseEntry(key)
        if (slot !== undefined) {
          this.table.rateIds[slot] = 0
          this.convert(slot, before, this.entries[0]!, now, inheritance)
        }
        return
      }
      entry.base = this.entries[0]!.base
      entry.followsDefault = true
    } else if (id === undefined) {
      const own = this.allocateEntry(new RateEntry(rate, false, this.share))
      this.entryOf.set(key, own)
      if (slot !== undefined) {
        this.table.rateIds[slot] = own
        this.convert(slot, before, this.entries[own]!, now, inheritance)
      }
      return
    } else {
      entry.base = rate
      entry.followsDefault = false
    }
    entry.derive(this.share)
    if (slot !== undefined) this.convert(slot, before, entry, now, inheritance)
  }

  /**
   * retuneSlots changes the entries that `affects` selects (through `mutate`, or just by
   * re-deriving them after a share change) and converts every bucket charged at one of
   * them. One pass over the table: O(keys), and rare.
   */
  private retuneSlots(
    affects: (id: number) => boolean,
    now: number,
    inheritance: Inheritance,
    mutate?: (entry: RateEntry) => void,
  ): void {
    const before: Array<Params | undefined> = []
    for (let id = 0; id < this.entries.length; id++) {
      const entry = this.entries[id]
      if (entry === undefined || !affects(id)) continue
      before[id] = paramsOf(entry)
      mutate?.(entry)
      entry.derive(this.share)
    }
    const rateIds = this.table.rateIds
    for (let slot = 0, end = this.table.slotCount; slot < end; slot++) {
      const id = rateIds[slot]!
      const from = before[id]
      if (from !== undefined) this.convert(slot, from, this.entries[id]!, now, inheritance)
    }
  }

  /**
   * convert re-expresses one bucket, banked at `now` under `from`, under `to`. Positive
   * tokens carry over by `inheritance`; debt is kept in time, so that reservations
   * already handed out stay valid and new work comes after them.
   */
  private convert(slot: number, from: Params, to: RateEntry, now: number, inheritance: Inheritance): void {
    const tatMs = this.table.tatMs
    const tat = tatMs[slot]!
    if (tat <= now && inheritance !== 'as-is') return
    const start = tat > now ? tat : now
    const tokens = (now + from.tauMs - start) / from.emissionMs
    if (tokens < 0) {
      tatMs[slot] = start - from.tauMs + to.tauMs
      return
    }
    const carried =
      inheritance === 'proportional'
        ? (tokens * to.burst) / from.burst
        : inheritance === 'as-is'
          ? Math.min(tokens, to.burst)
          : to.burst
    tatMs[slot] = now + to.tauMs - carried * to.emissionMs
  }

  private checkChange(change: RateChange): {
    defaultRate: Rate | undefined
    overrides: Map<string, Rate | null>
  } {
    if (change === null || typeof change !== 'object') {
      throw new TypeError(`apply: expected a rate change object, got ${String(change)}`)
    }
    if (change.version !== undefined && !Number.isFinite(change.version)) {
      throw new TypeError(`apply: expected a finite version, got ${String(change.version)}`)
    }
    if (change.inheritance !== undefined && !INHERITANCES.includes(change.inheritance)) {
      throw new TypeError(
        `apply: expected inheritance 'proportional', 'as-is' or 'reset', got ${JSON.stringify(change.inheritance)}`,
      )
    }
    const defaultRate = change.default === undefined ? undefined : parseRate(change.default)
    const overrides = new Map<string, Rate | null>()
    for (const [key, rate] of Object.entries(change.overrides ?? {})) {
      if (key.length === 0 || key.length > this.maxKeyLength || key === '*') {
        throw new TypeError(
          `apply: expected override keys of 1 to ${this.maxKeyLength} characters other than '*', got ${describeKey(key)}`,
        )
      }
      overrides.set(key, rate === null ? null : parseRate(rate))
    }
    return { defaultRate, overrides }
  }
}

class GrantedReservation implements Granted {
  readonly ok = true
  private cancelled = false

  constructor(
    readonly key: string,
    readonly cost: number,
    readonly delayMs: number,
    readonly reservedAtMs: number,
    private readonly refund: (key: string, cost: number, reservedAtMs: number) => void,
  ) {}

  cancel(): boolean {
    if (this.cancelled) return false
    this.cancelled = true
    this.refund(this.key, this.cost, this.reservedAtMs)
    return true
  }
}

const INHERITANCES: readonly Inheritance[] = ['proportional', 'as-is', 'reset']

function paramsOf(entry: RateEntry): Params {
  return { emissionMs: entry.emissionMs, tauMs: entry.tauMs, burst: entry.burst }
}

function badDefault(): never {
  throw new TypeError('setRate: the default rate (*) cannot be cleared, got null')
}

function describeKey(key: unknown): string {
  if (typeof key !== 'string') return typeof key
  if (key.length === 0) return 'an empty key'
  return `a key of ${key.length} characters`
}

function checkNonNegative(value: number, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new TypeError(`${what}: expected a finite number >= 0, got ${String(value)}`)
  }
  return value
}

function checkPositiveInteger(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new TypeError(`${what}: expected a whole number >= 1, got ${String(value)}`)
  }
  return value
}

function checkPenalty(penalty: Required<PenaltyOptions>): Required<PenaltyOptions> {
  const { decreaseFactor, minFactor, increaseStep, increaseEveryMs, decreaseCooldownMs } = penalty
  if (!(decreaseFactor > 0 && decreaseFactor < 1)) {
    throw new TypeError(`penalty.decreaseFactor: expected a number between 0 and 1, got ${decreaseFactor}`)
  }
  if (!(minFactor > 0 && minFactor <= 1)) {
    throw new TypeError(`penalty.minFactor: expected a number in (0, 1], got ${minFactor}`)
  }
  if (!(increaseStep > 0 && increaseStep <= 1)) {
    throw new TypeError(`penalty.increaseStep: expected a number in (0, 1], got ${increaseStep}`)
  }
  checkPositiveInteger(increaseEveryMs, 'penalty.increaseEveryMs')
  checkNonNegative(decreaseCooldownMs, 'penalty.decreaseCooldownMs')
  return penalty
}
