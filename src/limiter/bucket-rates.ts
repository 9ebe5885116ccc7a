import type { Rate, RateWindow } from './rate.js'

/** WindowParameters are one window's GCRA parameters, as the decisions read them (ms since the epoch). */
interface WindowParameters {
  limit: number
  burst: number
  capacity: number
  emissionMs: number
  tauMs: number
  conformMs: number
  allowanceMs: number
}

/**
 * deriveWindow computes a window's GCRA parameters from its rate, the process's share and
 * `factor` (share × penalty): one formula for a rate's first window, held flat on BucketRate
 * for the hot path, and for each further one. conformMs absorbs float rounding: a millionth
 * of a unit, or the rounding of a time.
 */
function deriveWindow(into: WindowParameters, base: RateWindow, share: number, factor: number): void {
  into.limit = base.limit * factor
  into.burst = Math.max(1, base.burst * factor)
  into.capacity = Math.max(1, base.burst * share)
  into.emissionMs = base.intervalMs / into.limit
  into.tauMs = into.burst * into.emissionMs
  into.conformMs = Math.max(into.emissionMs * 1e-6, 2 ** -30)
  into.allowanceMs = into.tauMs + into.conformMs
}

/**
 * ExtraWindow is the GCRA parameters of one further window of a rate of several (see
 * Rate.extraWindows), derived as BucketRate derives its first window's.
 */
export class ExtraWindow {
  limit = 0
  burst = 0
  capacity = 0
  emissionMs = 0
  tauMs = 0
  conformMs = 0
  allowanceMs = 0

  constructor(readonly base: RateWindow) {}

  derive(share: number, factor: number): void {
    deriveWindow(this, this.base, share, factor)
  }

  rate(): RateWindow {
    return { limit: this.limit, intervalMs: this.base.intervalMs, burst: this.burst }
  }
}

/**
 * BucketRate is one rate buckets are charged at: the default (id 0), or one key's own
 * (an override, a penalty, or both), with its GCRA parameters derived from it. Times
 * are in ms since the limiter's epoch.
 */
export class BucketRate {
  base: Rate
  /** followsDefault: the rate exists for a penalty alone and tracks the default rate. */
  followsDefault: boolean
  penaltyFactor = 1
  nextIncreaseAtMs = 0
  lastDecreaseAtMs = Number.NEGATIVE_INFINITY
  /** blockedUntilMs is the end of the key's Retry-After: no unit is granted before it. */
  blockedUntilMs = Number.NEGATIVE_INFINITY
  limit = 0
  burst = 0
  /** capacity is the largest cost one decision may ask: the burst of this process's share, before any penalty. */
  capacity = 0
  emissionMs = 0
  tauMs = 0
  /** conformMs absorbs float rounding: a millionth of a unit, or the rounding of a time. */
  conformMs = 0
  /** allowanceMs is tauMs + conformMs: how far ahead of now a bucket's arrival time may go for a grant now. */
  allowanceMs = 0
  /**
   * fastAllowanceMs is allowanceMs for a rate of one window, and -Infinity for one of
   * several, whose keys the limiter's inline common case (first window only) must not grant.
   */
  fastAllowanceMs = 0
  /** extra holds the windows after the first, for a rate of several; undefined for one. */
  extra: ExtraWindow[] | undefined

  constructor(base: Rate, followsDefault: boolean, share: number) {
    this.base = base
    this.followsDefault = followsDefault
    this.derive(share)
  }

  /** derive computes every window's parameters from `base`, the share and the penalty; capacity is the smallest window's. */
  derive(share: number): void {
    const factor = share * this.penaltyFactor
    deriveWindow(this, this.base, share, factor)
    this.fastAllowanceMs = this.allowanceMs
    const windows = this.base.extraWindows
    if (windows === undefined || windows.length === 0) {
      this.extra = undefined
      return
    }
    let extra = this.extra
    if (
      extra === undefined ||
      extra.length !== windows.length ||
      extra.some((window, i) => window.base !== windows[i])
    ) {
      extra = windows.map((window) => new ExtraWindow(window))
      this.extra = extra
    }
    for (const window of extra) {
      window.derive(share, factor)
      if (window.capacity < this.capacity) this.capacity = window.capacity
    }
    this.fastAllowanceMs = Number.NEGATIVE_INFINITY
  }

  rate(): Rate {
    const first = { limit: this.limit, intervalMs: this.base.intervalMs, burst: this.burst }
    return this.extra === undefined
      ? first
      : { ...first, extraWindows: this.extra.map((window) => window.rate()) }
  }

  /** shiftTimes moves the rate's times back by `shiftMs`, with the limiter's epoch. */
  shiftTimes(shiftMs: number): void {
    this.nextIncreaseAtMs -= shiftMs
    this.lastDecreaseAtMs -= shiftMs
    this.blockedUntilMs -= shiftMs
  }
}

/** Gcra is what a window's arrival time is read with: one unit's time, the tolerance, the burst. */
export interface Gcra {
  emissionMs: number
  tauMs: number
  burst: number
}

/** WindowParams are the GCRA parameters of one window before a change, to convert buckets from. */
export interface WindowParams extends Gcra {
  intervalMs: number
}

/** Params are the GCRA parameters of a rate before a change: its first window's, and `extra` for the others. */
export interface Params extends WindowParams {
  extra: WindowParams[] | undefined
}

export function paramsOf(rate: BucketRate): Params {
  const extra = rate.extra?.map((window) => ({
    intervalMs: window.base.intervalMs,
    emissionMs: window.emissionMs,
    tauMs: window.tauMs,
    burst: window.burst,
  }))
  return {
    intervalMs: rate.base.intervalMs,
    emissionMs: rate.emissionMs,
    tauMs: rate.tauMs,
    burst: rate.burst,
    extra,
  }
}

/**
 * BucketRates is the pool of bucket rates: the default at id 0, and one per key that
 * has a rate of its own, found by key. Ids are reused, so the pool is as large as the
 * number of keys with a rate of their own, not the number there ever were.
 */
export class BucketRates {
  readonly byId: Array<BucketRate | undefined>
  private readonly freeIds: number[] = []
  private readonly idByKey = new Map<string, number>()

  constructor(defaultRate: BucketRate) {
    this.byId = [defaultRate]
  }

  get default(): BucketRate {
    return this.byId[0]!
  }

  /** idOf is the id of `key`'s own rate, or undefined when it is charged at the default. */
  idOf(key: string): number | undefined {
    return this.idByKey.get(key)
  }

  /** own lists the keys with a rate of their own and the ids of those rates. */
  own(): MapIterator<[string, number]> {
    return this.idByKey.entries()
  }

  /** ownCount is the number of keys with a rate of their own. */
  get ownCount(): number {
    return this.idByKey.size
  }

  /** add gives `key` the rate `rate` of its own and returns its id. */
  add(key: string, rate: BucketRate): number {
    const id = this.freeIds.pop() ?? this.byId.length
    this.byId[id] = rate
    this.idByKey.set(key, id)
    return id
  }

  /** remove forgets `key`'s own rate; the key is charged at the default again. */
  remove(key: string): void {
    const id = this.idByKey.get(key)
    if (id === undefined) return
    this.idByKey.delete(key)
    this.byId[id] = undefined
    this.freeIds.push(id)
  }
}
