import type { Rate } from './rate.js'

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

  constructor(base: Rate, followsDefault: boolean, share: number) {
    this.base = base
    this.followsDefault = followsDefault
    this.derive(share)
  }

  derive(share: number): void {
    const factor = share * this.penaltyFactor
    this.limit = this.base.limit * factor
    this.burst = Math.max(1, this.base.burst * factor)
    this.capacity = Math.max(1, this.base.burst * share)
    this.emissionMs = this.base.intervalMs / this.limit
    this.tauMs = this.burst * this.emissionMs
    this.conformMs = Math.max(this.emissionMs * 1e-6, 2 ** -30)
    this.allowanceMs = this.tauMs + this.conformMs
  }

  rate(): Rate {
    return { limit: this.limit, intervalMs: this.base.intervalMs, burst: this.burst }
  }

  /** shiftTimes moves the rate's times back by `shiftMs`, with the limiter's epoch. */
  shiftTimes(shiftMs: number): void {
    this.nextIncreaseAtMs -= shiftMs
    this.lastDecreaseAtMs -= shiftMs
    this.blockedUntilMs -= shiftMs
  }
}

/** Params are the GCRA parameters of a rate before a change, to convert buckets from. */
export interface Params {
  emissionMs: number
  tauMs: number
  burst: number
}

export function paramsOf(rate: BucketRate): Params {
  return { emissionMs: rate.emissionMs, tauMs: rate.tauMs, burst: rate.burst }
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
