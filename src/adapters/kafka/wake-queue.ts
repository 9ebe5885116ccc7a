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
 * Timed is an entry of a TimerHeap: when it is due, and where it sits in the heap. The
 * entry carries these fields itself (a lane is its own entry), so a pending wake-up costs
 * no object and no closure of its own.
 */
export interface Timed {
  /** dueMs is when the entry fires, on the heap's clock. */
  dueMs: number
  /** heapIndex is the entry's place in the heap, -1 when not pending. */
  heapIndex: number
  /** seq orders entries due at the same time: first scheduled, first fired. */
  seq: number
}

/**
 * TimerHeap fires entries at their due times on one timer, whatever the number pending: a
 * binary heap ordered by due time (then by scheduling order), and a single timer armed
 * for the earliest. 100,000 throttled lanes cost 100,000 heap slots, not 100,000 Node
 * timers. `fire` is told of each entry that falls due.
 */
export class TimerHeap<E extends Timed> {
  private readonly heap: E[] = []
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
    entry.dueMs = this.clock.now() + Math.max(0, delayMs)
    entry.seq = this.seq++
    entry.heapIndex = this.heap.length
    this.heap.push(entry)
    this.up(entry.heapIndex)
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
    while (this.heap.length > 0 && this.heap[0]!.dueMs <= nowMs) {
      const entry = this.heap[0]!
      this.removeAt(0)
      this.fire(entry)
    }
    this.arm()
  }

  private arm(): void {
    const first = this.heap[0]
    if (first === undefined) {
      this.disarm()
      return
    }
    if (this.timer !== undefined && this.timerDueMs <= first.dueMs) return
    this.disarm()
    this.timerDueMs = first.dueMs
    this.timer = this.timers.set(() => this.fireDue(), Math.max(0, first.dueMs - this.clock.now()))
  }

  private disarm(): void {
    if (this.timer === undefined) return
    this.timers.clear(this.timer)
    this.timer = undefined
    this.timerDueMs = Number.POSITIVE_INFINITY
  }

  private removeAt(index: number): void {
    const removed = this.heap[index]!
    const last = this.heap.pop()!
    removed.heapIndex = -1
    if (last === removed) return
    this.heap[index] = last
    last.heapIndex = index
    this.down(index)
    this.up(last.heapIndex)
  }

  private before(a: E, b: E): boolean {
    return a.dueMs < b.dueMs || (a.dueMs === b.dueMs && a.seq < b.seq)
  }

  private up(index: number): void {
    const heap = this.heap
    let i = index
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.before(heap[i]!, heap[parent]!)) break
      this.swap(i, parent)
      i = parent
    }
  }

  private down(index: number): void {
    const heap = this.heap
    let i = index
    for (;;) {
      const left = 2 * i + 1
      const right = left + 1
      let smallest = i
      if (left < heap.length && this.before(heap[left]!, heap[smallest]!)) smallest = left
      if (right < heap.length && this.before(heap[right]!, heap[smallest]!)) smallest = right
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
    const wake: Wake = { dueMs: 0, heapIndex: -1, seq: 0, callback }
    this.schedule(wake, delayMs)
    return wake
  }

  /** heapOf makes a TimerHeap of other entries on this queue's clock and timers. */
  heapOf<E extends Timed>(fire: (entry: E) => void): TimerHeap<E> {
    return new TimerHeap<E>(this.clock, this.timers, fire)
  }
}
