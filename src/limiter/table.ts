/**
 * KeyTable holds the per-key state of the limiter, packed: a `Map` from key to slot,
 * and per slot one Float64 (the GCRA theoretical arrival time, `tatMs`) and one Uint32
 * (the id of the rate the key is charged at). About 12 bytes per key beside the key
 * string and its Map entry.
 *
 * A slot whose `tatMs` is at or before now is a full bucket: it is exactly what a new
 * key would get, so it may be evicted without handing out a token. A slot holding debt
 * or a partial fill is never evicted. When the table is at `maxKeys` and no full bucket
 * is found, `admit` refuses the new key.
 */
export class KeyTable {
  readonly maxKeys: number
  /** tatMs[slot] is the key's theoretical arrival time in guarded-clock ms. */
  tatMs: Float64Array
  /** rateIds[slot] is the id of the rate entry the key is charged at. */
  rateIds: Uint32Array
  evictions = 0
  /** refusedWaitMs is, after admit returned -1, how long until a scanned bucket is full. */
  refusedWaitMs = 0
  private readonly slots = new Map<string, number>()
  private used = 0
  private sweep: MapIterator<[string, number]> | undefined

  constructor(maxKeys: number) {
    if (!Number.isInteger(maxKeys) || maxKeys < 1 || maxKeys > 2 ** 31 - 1) {
      throw new TypeError(`maxKeys: expected an integer from 1 to 2^31-1, got ${maxKeys}`)
    }
    this.maxKeys = maxKeys
    const initial = Math.min(maxKeys, 1024)
    this.tatMs = new Float64Array(initial)
    this.rateIds = new Uint32Array(initial)
  }

  /** size is the number of keys held. */
  get size(): number {
    return this.slots.size
  }

  /** slotOf returns the key's slot, or undefined when the key is not held. */
  slotOf(key: string): number | undefined {
    return this.slots.get(key)
  }

  /** slotCount is one past the highest slot in use; slots below it are all live. */
  get slotCount(): number {
    return this.used
  }

  /**
   * admit gives `key` a slot holding a full bucket (tatMs = nowMs) charged at `rateId`.
   * When the table is full it evicts a full bucket found within `scanLimit` entries of
   * a sweep that resumes where the last one stopped; when none is found it returns -1
   * and the key is not held.
   */
  admit(key: string, rateId: number, nowMs: number, scanLimit: number): number {
    let slot: number
    if (this.used < this.maxKeys) {
      if (this.used === this.tatMs.length) this.grow()
      slot = this.used++
    } else {
      slot = this.evictOne(nowMs, scanLimit)
      if (slot < 0) return -1
    }
    this.slots.set(key, slot)
    this.tatMs[slot] = nowMs
    this.rateIds[slot] = rateId
    return slot
  }

  /** keys iterates the held keys with their slots, in admission order. */
  entries(): MapIterator<[string, number]> {
    return this.slots.entries()
  }

  private evictOne(nowMs: number, scanLimit: number): number {
    let soonestFullMs = Number.POSITIVE_INFINITY
    for (let scanned = 0; scanned < scanLimit; scanned++) {
      let next = this.sweep?.next()
      if (next === undefined || next.done) {
        this.sweep = this.slots.entries()
        next = this.sweep.next()
        if (next.done) {
          this.refusedWaitMs = 0
          return -1
        }
      }
      const [key, slot] = next.value
      const tatMs = this.tatMs[slot]!
      if (tatMs <= nowMs) {
        this.slots.delete(key)
        this.evictions++
        return slot
      }
      if (tatMs < soonestFullMs) soonestFullMs = tatMs
    }
    this.refusedWaitMs = soonestFullMs - nowMs
    return -1
  }

  private grow(): void {
    const capacity = Math.min(this.maxKeys, this.tatMs.length * 2)
    const tatMs = new Float64Array(capacity)
    tatMs.set(this.tatMs)
    const rateIds = new Uint32Array(capacity)
    rateIds.set(this.rateIds)
    this.tatMs = tatMs
    this.rateIds = rateIds
  }
}
