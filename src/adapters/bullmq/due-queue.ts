/** Timers is the part of the timer API the backlog uses, injectable for a fake clock. */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

/** nodeTimers are Node's timers, unref'd so that a pending promotion never holds the process open. */
export const nodeTimers: Timers = {
  setTimeout: (callback, ms) => setTimeout(callback, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
}

/**
 * DueQueue calls `onDue(key)` for each key when its due time comes, with one timer for all
 * of them: a min-heap of due times, so that the work is per key that comes due, never per
 * key held. A key is due at the earliest time it was scheduled for since it last came due.
 */
export class DueQueue {
  private readonly dueAt = new Map<string, number>()
  private readonly heap: Array<{ atMs: number; key: string }> = []
  private timer: unknown
  private timerAtMs = Number.POSITIVE_INFINITY
  private stopped = false

  constructor(
    private readonly now: () => number,
    private readonly timers: Timers,
    private readonly onDue: (key: string) => void,
  ) {}

  /** schedule makes `key` due at `atMs` (clock ms), unless it is due sooner already. */
  schedule(key: string, atMs: number): void {
    if (this.stopped) return
    const current = this.dueAt.get(key)
    if (current !== undefined && current <= atMs) return
    this.dueAt.set(key, atMs)
    this.push({ atMs, key })
    if (atMs < this.timerAtMs) this.arm()
  }

  /** has says whether `key` is scheduled. */
  has(key: string): boolean {
    return this.dueAt.has(key)
  }

  /** size is the number of keys scheduled. */
  get size(): number {
    return this.dueAt.size
  }

  /** stop forgets every key and clears the timer. */
  stop(): void {
    this.stopped = true
    this.timers.clearTimeout(this.timer)
    this.dueAt.clear()
    this.heap.length = 0
  }

  private arm(): void {
    this.timers.clearTimeout(this.timer)
    const next = this.heap[0]
    if (next === undefined) {
      this.timerAtMs = Number.POSITIVE_INFINITY
      return
    }
    this.timerAtMs = next.atMs
    this.timer = this.timers.setTimeout(() => this.fire(), Math.max(0, next.atMs - this.now()))
  }

  private fire(): void {
    this.timerAtMs = Number.POSITIVE_INFINITY
    const now = this.now()
    const due: string[] = []
    while (this.heap.length > 0 && this.heap[0]!.atMs <= now) {
      const { atMs, key } = this.pop()!
      // A key rescheduled sooner leaves its later entry behind: skip it.
      if (this.dueAt.get(key) !== atMs) continue
      this.dueAt.delete(key)
      due.push(key)
    }
    this.arm()
    for (const key of due) this.onDue(key)
  }

  private push(entry: { atMs: number; key: string }): void {
    const heap = this.heap
    heap.push(entry)
    let i = heap.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (heap[parent]!.atMs <= entry.atMs) break
      heap[i] = heap[parent]!
      i = parent
    }
    heap[i] = entry
  }

  private pop(): { atMs: number; key: string } | undefined {
    const heap = this.heap
    const top = heap[0]
    const last = heap.pop()
    if (top === undefined || last === undefined || heap.length === 0) return top
    let i = 0
    for (;;) {
      const left = 2 * i + 1
      if (left >= heap.length) break
      const right = left + 1
      const child = right < heap.length && heap[right]!.atMs < heap[left]!.atMs ? right : left
      if (heap[child]!.atMs >= last.atMs) break
      heap[i] = heap[child]!
      i = child
    }
    heap[i] = last
    return top
  }
}
