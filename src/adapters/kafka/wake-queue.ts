import { type Clock, monotonicClock } from '../../limiter/index.js'

/** Timers is the one-shot timer a WakeQueue runs on; tests pass one driven by a FakeClock. */
export interface Timers {
  set(callback: () => void, delayMs: number): unknown
  clear(handle: unknown): void
}

/** realTimers are Node's setTimeout/clearTimeout, unref'd so a pending wake never holds the process. */
export const realTimers: Timers = {
  set: (callback, delayMs) => setTimeout(callback, delayMs).unref(),
  clear: (handle) => clearTimeout(handle as NodeJS.Timeout),
}

/**
 * Timed is an entry of a TimerHeap. The entry carries its place in the heap itself (a
 * lane is its own entry), and the heap keeps the due times, so a pending wake-up costs no
 * object, no closure and no boxed number of its own.
 */
export interface Timed {
  /** heapIndex is the entry's place in the heap, -1 when not pending. */
  heapIndex: number
}

/**
 * TimerHeap fires entries at their due times on one timer, whatever the number pending: a
 * binary heap ordered by due time (then by scheduling order), and a single timer armed
 * for the earliest. The due times and scheduling numbers are typed arrays beside the
 * entries, in heap order. 100,000 throttled lanes cost 100,000 heap slots, not 100,000
 * Node timers. `fire` is told of each entry that falls due.
 */
export class TimerHeap<E extends Timed> {
  private readonly heap: E[] = []
  /** dueAt[i] is when heap[i] fires, on the clock; seqAt[i] its scheduling number (first scheduled, first fired). */
  private dueAt = new Float64Array(16)
  private seqAt = new Float64Array(16)
  private timer: unknown
  private timerDueMs = Number.POSITIVE_INFINITY
  private seq = 0

  constructor(
    protected readonly clock: Clock,
    protected readonly timers: Timers,
    private readonly fire: (entry: E) => void,
  ) {}

  /** size is the number of entries waiting. */
  get size(): number {
    return this.heap.length
  }

  /**
   * schedule makes `entry` fire once `delayMs` ms have passed on the clock (0 or less: on
   * the next turn). A pending entry is moved to its new time.
   */
  schedule(entry: E, delayMs: number): void {
    if (entry.heapIndex >= 0) this.removeAt(entry.heapIndex)
    const index = this.heap.length
    if (index === this.dueAt.length) this.grow()
    this.heap.push(entry)
    entry.heapIndex = index
    this.dueAt[index] = this.clock.now() + Math.max(0, delayMs)
    this.seqAt[index] = this.seq++
    this.up(index)
    this.arm()
  }

  /** cancel removes a pending entry; it returns false when it already fired or was cancelled. */
  cancel(entry: E): boolean {
    if (entry.heapIndex < 0) return false
    this.removeAt(entry.heapIndex)
    this.arm()
    return true
  }

  /** clear cancels every pending entry and the timer. */
  clear(): void {
    for (const entry of this.heap) entry.heapIndex = -1
    this.heap.length = 0
    this.disarm()
  }

  /** fireDue fires every entry due at the clock's current time, in due order. */
  private fireDue(): void {
    this.timer = undefined
    this.timerDueMs = Number.POSITIVE_INFINITY
    const nowMs = this.clock.now()
    while (this.heap.length > 0 && this.dueAt[0]! <= nowMs) {
      const entry = this.heap[0]!
      this.removeAt(0)
      this.fire(entry)
    }
    this.arm()
  }

  private arm(): void {
    if (this.heap.length === 0) {
      this.disarm()
      return
    }
    const firstDueMs = this.dueAt[0]!
    if (this.timer !== undefined && this.timerDueMs <= firstDueMs) return
    this.disarm()
    this.timerDueMs = firstDueMs
    this.timer = this.timers.set(() => this.fireDue(), Math.max(0, firstDueMs - this.clock.now()))
  }

  private disarm(): void {
    if (this.timer === undefined) return
    this.timers.clear(this.timer)
    this.timer = undefined
    this.timerDueMs = Number.POSITIVE_INFINITY
  }

  private grow(): void {
    const dueAt = new Float64Array(this.dueAt.length * 2)
    dueAt.set(this.dueAt)
    this.dueAt = dueAt
    const seqAt = new Float64Array(this.seqAt.length * 2)
    seqAt.set(this.seqAt)
    this.seqAt = seqAt
  }

  private removeAt(index: number): void {
    const heap = this.heap
    const removed = heap[index]!
    const lastIndex = heap.length - 1
    const last = heap.pop()!
    removed.heapIndex = -1
    if (last === removed) return
    heap[index] = last
    last.heapIndex = index
    this.dueAt[index] = this.dueAt[lastIndex]!
    this.seqAt[index] = this.seqAt[lastIndex]!
    this.down(index)
    this.up(last.heapIndex)
  }

  private before(a: number, b: number): boolean {
    const dueA = this.dueAt[a]!
    const dueB = this.dueAt[b]!
    return dueA < dueB || (dueA === dueB && this.seqAt[a]! < this.seqAt[b]!)
  }

  private up(index: number): void {
    let i = index
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.before(i, parent)) break
      this.swap(i, parent)
      i = parent
    }
  }

  private down(index: number): void {
    const length = this.heap.length
    let i = index
    for (;;) {
      const left = 2 * i + 1
      const right = left + 1
      let smallest = i
      if (left < length && this.before(left, smallest)) smallest = left
      if (right < length && this.before(right, smallest)) smallest = right
      if (smallest === i) return
      this.swap(i, smallest)
      i = smallest
    }
  }

  private swap(a: number, b: number): void {
    const heap = this.heap
    const ea = heap[a]!
    const eb = heap[b]!
    heap[a] = eb
    heap[b] = ea
    ea.heapIndex = b
    eb.heapIndex = a
    const { dueAt, seqAt } = this
    const due = dueAt[a]!
    dueAt[a] = dueAt[b]!
    dueAt[b] = due
    const seq = seqAt[a]!
    seqAt[a] = seqAt[b]!
    seqAt[b] = seq
  }
}

/** Wake is a scheduled callback; cancel it through WakeQueue.cancel. */
export interface Wake extends Timed {
  readonly callback: () => void
}

/**
 * WakeQueue runs callbacks at given times on one timer (a TimerHeap of callbacks), for
 * the rare waits that are not a lane's (dead-letter write retries).
 */
export class WakeQueue extends TimerHeap<Wake> {
  constructor(clock: Clock = monotonicClock, timers: Timers = realTimers) {
    super(clock, timers, (wake) => wake.callback())
  }

  /** after runs `callback` once `delayMs` ms have passed on the clock (0 or less: on the next turn). */
  after(delayMs: number, callback: () => void): Wake {
    const wake: Wake = { heapIndex: -1, callback }
    this.schedule(wake, delayMs)
    return wake
  }

  /** heapOf makes a TimerHeap of other entries on this queue's clock and timers. */
  heapOf<E extends Timed>(fire: (entry: E) => void): TimerHeap<E> {
    return new TimerHeap<E>(this.clock, this.timers, fire)
  }
}
