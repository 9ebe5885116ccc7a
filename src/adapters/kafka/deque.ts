/**
 * Deque is a first-in first-out queue on a ring buffer: push at the tail, shift at the
 * head, both O(1), and indexed access from the head. It is the one queue of the adapter
 * (lane items, the dispatcher's ready lanes, a partition's tracked offsets). Its ring
 * starts at one slot, since most lanes only ever hold one message, and doubles when full.
 */
export class Deque<T> {
  private ring: (T | undefined)[]
  private head = 0
  private count = 0

  constructor(capacity = 1) {
    this.ring = new Array<T | undefined>(Math.max(1, capacity))
  }

  /** length is the number of items held. */
  get length(): number {
    return this.count
  }

  push(item: T): void {
    if (this.count === this.ring.length) this.grow()
    this.ring[(this.head + this.count) % this.ring.length] = item
    this.count++
  }

  /** shift removes and returns the head item, or undefined when empty. */
  shift(): T | undefined {
    if (this.count === 0) return undefined
    const item = this.ring[this.head]
    this.ring[this.head] = undefined
    this.head = (this.head + 1) % this.ring.length
    this.count--
    if (this.count === 0) this.head = 0
    return item
  }

  /** peek returns the head item, or undefined when empty. */
  peek(): T | undefined {
    return this.count === 0 ? undefined : this.ring[this.head]
  }

  /** at returns the item `index` places behind the head (0 is the head), or undefined out of range. */
  at(index: number): T | undefined {
    if (index < 0 || index >= this.count) return undefined
    return this.ring[(this.head + index) % this.ring.length]
  }

  /** set replaces the item `index` places behind the head; out of range it throws RangeError. */
  set(index: number, item: T): void {
    if (index < 0 || index >= this.count) {
      throw new RangeError(`Deque.set: expected an index in [0, ${this.count}), got ${index}`)
    }
    this.ring[(this.head + index) % this.ring.length] = item
  }

  /** clear empties the deque and gives its ring back (to one slot). */
  clear(): void {
    this.ring = [undefined]
    this.head = 0
    this.count = 0
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = 0; i < this.count; i++) yield this.ring[(this.head + i) % this.ring.length] as T
  }

  private grow(): void {
    const next = new Array<T | undefined>(this.ring.length * 2)
    for (let i = 0; i < this.count; i++) next[i] = this.ring[(this.head + i) % this.ring.length]
    this.ring = next
    this.head = 0
  }
}
