import type {
  BacklogEntry,
  BacklogStore,
  PromoteResult,
  Promotion,
} from '../../../src/adapters/bullmq/backlog.js'
import type { Timers } from '../../../src/adapters/bullmq/due-queue.js'
import type { FakeClock } from '../../../src/limiter/index.js'

/** MemoryBacklogStore is the Redis store's contract in memory: one FIFO per merchant, shared by every Backlog given it. */
export class MemoryBacklogStore implements BacklogStore {
  readonly lists = new Map<string, BacklogEntry[]>()
  /** promoted records each promotion made, in order, over every caller. */
  readonly promoted: Array<Promotion & { merchantKey: string }> = []
  /** gone holds ids of jobs no longer parked (back by their safety net): promote drops them. */
  readonly gone = new Set<string>()
  calls = 0

  async append(merchantKey: string, entry: BacklogEntry): Promise<number> {
    this.calls++
    const list = this.lists.get(merchantKey) ?? []
    // In add order, as the Redis store's sorted set (ties: in the order appended).
    const at = list.findIndex((other) => other.addedAtWallMs > entry.addedAtWallMs)
    list.splice(at < 0 ? list.length : at, 0, entry)
    this.lists.set(merchantKey, list)
    return list.length
  }

  async head(merchantKey: string, count: number): Promise<{ entries: BacklogEntry[]; length: number }> {
    this.calls++
    const list = this.lists.get(merchantKey) ?? []
    return { entries: list.slice(0, count), length: list.length }
  }

  async promote(merchantKey: string, promotions: readonly Promotion[]): Promise<PromoteResult> {
    this.calls++
    const list = this.lists.get(merchantKey) ?? []
    let promoted = 0
    let dropped = 0
    for (const promotion of promotions) {
      if (list[0] !== promotion.entry) break
      list.shift()
      if (this.gone.has(promotion.entry.jobId)) {
        dropped = 1
        break
      }
      this.promoted.push({ ...promotion, merchantKey })
      promoted++
    }
    if (list.length === 0) this.lists.delete(merchantKey)
    return { promoted, dropped, length: list.length }
  }

  async merchants(): Promise<string[]> {
    this.calls++
    return [...this.lists.keys()]
  }
}

/** FakeTimers fire on a FakeClock as `runFor` advances it, settling the promises each callback starts. */
export class FakeTimers implements Timers {
  private readonly pending = new Map<number, { atMs: number; callback: () => void }>()
  private nextId = 1

  constructor(private readonly clock: FakeClock) {}

  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.nextId++
    this.pending.set(id, { atMs: this.clock.now() + ms, callback })
    return id
  }

  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number)
  }

  get size(): number {
    return this.pending.size
  }

  /** runFor advances the clock by `ms` in steps of `stepMs`, firing due timers at each step. */
  async runFor(ms: number, stepMs = 1): Promise<void> {
    const end = this.clock.now() + ms
    while (this.clock.now() < end) {
      this.clock.advance(Math.min(stepMs, end - this.clock.now()))
      await this.fireDue()
    }
  }

  private async fireDue(): Promise<void> {
    for (;;) {
      await settle()
      const due = [...this.pending].filter(([, timer]) => timer.atMs <= this.clock.now())
      if (due.length === 0) return
      for (const [id, timer] of due) {
        this.pending.delete(id)
        timer.callback()
      }
    }
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}

/** entryOf makes a backlog entry for job `jobId` of cost 1. */
export function entryOf(jobId: string, addedAtWallMs = 0): BacklogEntry {
  return { jobId, attemptsMade: 0, attemptsStarted: 1, cost: 1, addedAtWallMs }
}
