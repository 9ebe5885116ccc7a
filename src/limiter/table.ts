/**
 * OWN_RATE is the factor a bucket-rate id is multiplied by in a slot code: a code below
 * it is a bare slot charged at the default rate (id 0).
 */
export const OWN_RATE = 2 ** 31

/**
 * codeFor is the KeyTable code of `slot` charged at bucket-rate `rateId`. A slot at the
 * default rate is its own code, so it stays a small integer: `slot + 0 * OWN_RATE` is a
 * heap number in unoptimized code (OWN_RATE is one), and the Map would hold it boxed, one
 * more object to read per decision, for every key placed before the JIT caught up.
 */
export function codeFor(slot: number, rateId: number): number {
  return rateId === 0 ? slot : slot + rateId * OWN_RATE
}

/** slotOfCode is the slot a KeyTable code names. */
export function slotOfCode(code: number): number {
  return code < OWN_RATE ? code : code % OWN_RATE
}

/** rateIdOfCode is the bucket-rate id a KeyTable code names; 0 is the default rate. */
export function rateIdOfCode(code: number): number {
  return code < OWN_RATE ? 0 : Math.floor(code / OWN_RATE)
}

/**
 * KeyTable holds the per-key state of the limiter, packed: a `Map` from key to a code,
 * and per slot one Float64, the GCRA theoretical arrival time (`tatMs`). The code is
 * the slot itself for a key charged at the default rate, a small integer the Map holds
 * unboxed; a key with a rate of its own (an override or a penalty) has `slot + id ×
 * 2^31` instead. So a decision reads the Map, then one Float64: 8 bytes per key beside
 * the key string and its Map entry, one cache line touched after the lookup.
 *
 * A slot whose `tatMs` is at or before now is a full bucket: it is exactly what a new
 * key would get, so it may be evicted without handing out a token. A slot holding debt
 * or a partial fill is never evicted, nor a key whose rate a penalty still holds lowered
 * (see keptUntilMs). When the table is at `maxKeys` and no such full bucket is found,
 * `place` refuses the new key.
 */
export class KeyTable {
  readonly maxKeys: number
  /** tatMs[slot] is the key's theoretical arrival time, in ms since the limiter's epoch. */
  tatMs: Float64Array
  evictions = 0
  /** refusedWaitMs is, after place returned -1, how long until a scanned bucket is full. */
  refusedWaitMs = 0
  /** evictedRateId is, after place evicted a key, the bucket-rate id that key was charged at. */
  evictedRateId = 0
  /** evictedKey is, after place evicted a key, that key. */
  evictedKey: string | undefined
  /**
   * keptUntilMs says until when a full bucket charged at rate `rateId` must stay held
   * (its rate lowered by a penalty that evicting would forget); -Infinity when never.
   */
  keptUntilMs: (rateId: number) => number = () => Number.NEGATIVE_INFINITY
  /**
   * extraTatMs holds, for a slot whose rate has several windows, the arrival times of its
   * windows after the first (in the order of the rate's extraWindows), so a key of one
   * window keeps its one Float64. A slot without an entry has those windows full.
   */
  readonly extraTatMs = new Map<number, Float64Array>()
  /**
   * reservedUntilMs holds, for a slot charged at a time later than its arrival time less
   * its tolerance says (a list of keys granted at another key's time: the key had room
   * before it), the latest such time, so that a rate change keeps new work after it. A
   * slot without an entry has its last reservation where its arrival time says.
   */
  readonly reservedUntilMs = new Map<number, number>()
  /** codes maps each held key to its code; only the table changes it. */
  readonly codes = new Map<string, number>()
  private used = 0
  private sweep: MapIterator<[string, number]> | undefined

  constructor(maxKeys: number) {
    if (!Number.isInteger(maxKeys) || maxKeys < 1 || maxKeys > OWN_RATE - 1) {
      throw new TypeError(`maxKeys: expected an integer from 1 to 2^31-1, got ${maxKeys}`)
    }
    this.maxKeys = maxKeys
    this.tatMs = new Float64Array(Math.min(maxKeys, 1024))
  }

  /** size is the number of keys held. */
  get size(): number {
    return this.codes.size
  }

  /** codeOf returns the key's code (see slotOfCode, rateIdOfCode), or undefined when the key is not held. */
  codeOf(key: string): number | undefined {
    return this.codes.get(key)
  }

  /** slotOf returns the key's slot, or undefined when the key is not held. */
  slotOf(key: string): number | undefined {
    const code = this.codes.get(key)
    return code === undefined ? undefined : slotOfCode(code)
  }

  /** setRateId charges the held `key` (at `slot`) at bucket-rate `rateId`. */
  setRateId(key: string, slot: number, rateId: number): void {
    this.codes.set(key, codeFor(slot, rateId))
  }

  /** slotCount is one past the highest slot in use; slots below it are all live. */
  get slotCount(): number {
    return this.used
  }

  /**
   * place gives `key` a slot holding a full bucket (tatMs = nowMs) charged at `rateId`.
   * When the table is full it evicts a full bucket found within `scanLimit` entries of
   * a sweep that resumes where the last one stopped (then `evictedKey` and
   * `evictedRateId` name what went); when none is found it returns -1 and the key is
   * not held.
   */
  place(key: string, rateId: number, nowMs: number, scanLimit: number): number {
    let slot: number
    this.evictedKey = undefined
    if (this.used < this.maxKeys) {
      if (this.used === this.tatMs.length) this.grow()
      slot = this.used++
    } else {
      slot = this.evictOne(nowMs, scanLimit)
      if (slot < 0) return -1
    }
    this.codes.set(key, codeFor(slot, rateId))
    this.tatMs[slot] = nowMs
    if (this.extraTatMs.size !== 0) this.extraTatMs.delete(slot)
    if (this.reservedUntilMs.size !== 0) this.reservedUntilMs.delete(slot)
    return slot
  }

  /** entries iterates the held keys with their codes, in the order they were placed. */
  entries(): MapIterator<[string, number]> {
    return this.codes.entries()
  }

  /**
   * shiftTimes moves every time back by `shiftMs`, when the limiter moves its epoch
   * forward; a full bucket stays full (at `floorMs`, the new now or earlier).
   */
  shiftTimes(shiftMs: number, floorMs: number): void {
    const tatMs = this.tatMs
    for (let slot = 0; slot < this.used; slot++) {
      const shifted = tatMs[slot]! - shiftMs
      tatMs[slot] = shifted > floorMs ? shifted : floorMs
    }
    for (const extra of this.extraTatMs.values()) {
      for (let i = 0; i < extra.length; i++) extra[i] = Math.max(extra[i]! - shiftMs, floorMs)
    }
    for (const [slot, untilMs] of this.reservedUntilMs) {
      if (untilMs - shiftMs > floorMs) this.reservedUntilMs.set(slot, untilMs - shiftMs)
      else this.reservedUntilMs.delete(slot)
    }
  }

  /** fullAtMs is when every window of `slot`'s bucket is full: the latest of its arrival times. */
  private fullAtMs(slot: number): number {
    let fullMs = this.tatMs[slot]!
    const extra = this.extraTatMs.size === 0 ? undefined : this.extraTatMs.get(slot)
    if (extra !== undefined) for (const tatMs of extra) if (tatMs > fullMs) fullMs = tatMs
    return fullMs
  }

  private evictOne(nowMs: number, scanLimit: number): number {
    let soonestFullMs = Number.POSITIVE_INFINITY
    for (let scanned = 0; scanned < scanLimit; scanned++) {
      let next = this.sweep?.next()
      if (next === undefined || next.done) {
        this.sweep = this.codes.entries()
        next = this.sweep.next()
        if (next.done) {
          this.refusedWaitMs = 0
          return -1
        }
      }
      const [key, code] = next.value
      const slot = slotOfCode(code)
      const rateId = rateIdOfCode(code)
      const tatMs =
        rateId === 0 ? this.fullAtMs(slot) : Math.max(this.fullAtMs(slot), this.keptUntilMs(rateId))
      if (tatMs <= nowMs) {
        this.codes.delete(key)
        this.evictions++
        this.evictedKey = key
        this.evictedRateId = rateId
        return slot
      }
      if (tatMs < soonestFullMs) soonestFullMs = tatMs
    }
    this.refusedWaitMs = soonestFullMs - nowMs
    return -1
  }

  private grow(): void {
    const tatMs = new Float64Array(Math.min(this.maxKeys, this.tatMs.length * 2))
    tatMs.set(this.tatMs)
    this.tatMs = tatMs
  }
}
