/** Keyed is what a LaneTable holds: anything that carries its own key. */
export interface Keyed {
  readonly merchantKey: string
}

const MIN_CAPACITY = 8

/**
 * LaneTable holds a partition's lanes by merchant key: an open-addressing hash table
 * (linear probing, backward-shift deletion) over one array of lanes, each lane carrying
 * its own key. A Map costs about 28 bytes per slot of its capacity (55 per lane at the
 * half load a power of two can leave it at); here a lane costs one 8-byte slot, at a load
 * kept between 1/8 and 3/4, so memory follows the lanes held (issue 14).
 *
 * The hash is FNV-1a from a random start per table, so that keys chosen to collide in one
 * consumer do not collide in another. Iteration order is the table's, not insertion order.
 */
export class LaneTable<L extends Keyed> {
  private slots: (L | undefined)[] = new Array<L | undefined>(MIN_CAPACITY).fill(undefined)
  private count = 0
  private readonly seed = (Math.random() * 2 ** 32) >>> 0

  /** size is the number of lanes held. */
  get size(): number {
    return this.count
  }

  /** get returns the lane of `key`, or undefined. */
  get(key: string): L | undefined {
    const index = this.indexOf(key)
    return index < 0 ? undefined : this.slots[index]
  }

  /** set holds `lane` under its own key, replacing a lane held under that key. */
  set(lane: L): void {
    const index = this.indexOf(lane.merchantKey)
    if (index >= 0) {
      this.slots[index] = lane
      return
    }
    if ((this.count + 1) * 4 > this.slots.length * 3) this.resize(this.slots.length * 2)
    this.place(lane)
    this.count++
  }

  /** delete removes the lane of `key`; it returns false when there is none. */
  delete(key: string): boolean {
    let hole = this.indexOf(key)
    if (hole < 0) return false
    const slots = this.slots
    const mask = slots.length - 1
    slots[hole] = undefined
    // Backward shift: move up each lane of the run after the hole that may sit in it (its
    // home is not cyclically within (hole, at]), so that every probe still finds its lane.
    for (let at = (hole + 1) & mask; ; at = (at + 1) & mask) {
      const lane = slots[at]
      if (lane === undefined) break
      const home = this.hash(lane.merchantKey) & mask
      if (((at - home) & mask) >= ((at - hole) & mask)) {
        slots[hole] = lane
        slots[at] = undefined
        hole = at
      }
    }
    this.count--
    if (slots.length > MIN_CAPACITY && this.count * 8 < slots.length) this.resize(slots.length / 2)
    return true
  }

  /** clear removes every lane. */
  clear(): void {
    this.slots = new Array<L | undefined>(MIN_CAPACITY).fill(undefined)
    this.count = 0
  }

  /** values returns the lanes held, as a copy: the table may change while it is walked. */
  values(): L[] {
    const lanes: L[] = []
    for (const lane of this.slots) if (lane !== undefined) lanes.push(lane)
    return lanes
  }

  private indexOf(key: string): number {
    const slots = this.slots
    const mask = slots.length - 1
    for (let at = this.hash(key) & mask; ; at = (at + 1) & mask) {
      const lane = slots[at]
      if (lane === undefined) return -1
      if (lane.merchantKey === key) return at
    }
  }

  private place(lane: L): void {
    const slots = this.slots
    const mask = slots.length - 1
    let at = this.hash(lane.merchantKey) & mask
    while (slots[at] !== undefined) at = (at + 1) & mask
    slots[at] = lane
  }

  private resize(capacity: number): void {
    const old = this.slots
    this.slots = new Array<L | undefined>(capacity).fill(undefined)
    for (const lane of old) if (lane !== undefined) this.place(lane)
  }

  private hash(key: string): number {
    let hash = this.seed
    for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193)
    return hash >>> 0
  }
}
