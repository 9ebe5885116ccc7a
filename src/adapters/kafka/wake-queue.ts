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

/** Wake is a scheduled callback; cancel it through WakeQueue.cancel. */
export interface Wake {
  readonly dueMs: number
  /** index in the heap, -1 once fired or cancelled. */
  index: number
  readonly seq: number
  readonly callback: () => void
}

/**
 * WakeQueue runs callbacks at given times on one timer, whatever the number pending: a
 * binary heap ordered by due time (then by scheduling order), and a single timer armed
 * for the earliest. 100,000 throttled lanes cost 100,000 small heap entries, not
 * 100,000 Node timers.
 */
export class WakeQueue {
  private readonly heap: Wake[] = []
  private timer: unknown
  private timerDueMs = Number.POSITIVE_INFINITY
  private seq = 0

  constructor(
    private readonly clock: Clock = monotonicClock,
    private readonly timers: Timers = realTimers,
  ) {}

  /** size is the number of callbacks waiting. */
  get size(): number {
    return this.heap.length
  }

  /** after runs `callback` once `delayMs` ms have passed on the clock (0 or less: on the next turn). */
  after(delayMs: number, callback: () => void): Wake {
    const wake: Wake = {
      dueMs: this.clock.now() + Math.max(0, delayMs),
      index: -1,
      seq: this.seq++,
      callback,
    }
    this.push(wake)
    this.arm()
    return wake
  }

  /** cancel removes a pending wake; it returns false when it already fired or was cancelled. */
  cancel(wake: Wake): boolean {
    if (wake.index < 0) return false
    this.removeAt(wake.index)
    this.arm()
    return true
  }

  /** clear cancels every pending wake and the timer. */
  clear(): void {
    for (const wake of this.heap) wake.index = -1
    this.heap.length = 0
    this.disarm()
  }

  /** fire runs every wake due at the clock's current time, in due order. */
  private fire(): void {
    this.timer = undefined
    this.timerDueMs = Number.POSITIVE_INFINITY
    const nowMs = this.clock.now()
    while (this.heap.length > 0 && this.heap[0]!.dueMs <= nowMs) {
      const wake = this.heap[0]!
      this.removeAt(0)
      wake.callback()
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
    this.timer = this.timers.set(() => this.fire(), Math.max(0, first.dueMs - this.clock.now()))
  }

  private disarm(): void {
    if (this.timer === undefined) return
    this.timers.clear(this.timer)
    this.timer = undefined
    this.timerDueMs = Number.POSITIVE_INFINITY
  }

  private push(wake: Wake): void {
    wake.index = this.heap.length
    this.heap.push(wake)
    this.up(wake.index)
  }

  private removeAt(index: number): void {
    const removed = this.heap[index]!
    const last = this.heap.pop()!
    removed.index = -1
    if (last === removed) return
    this.heap[index] = last
    last.index = index
    this.down(index)
    this.up(last.index)
  }

  private before(a: Wake, b: Wake): boolean {
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
    const wa = heap[a]!
    const wb = heap[b]!
    heap[a] = wb
    heap[b] = wa
    wa.index = b
    wb.index = a
  }
}
