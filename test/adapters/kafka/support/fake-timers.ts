import type { Timers } from '../../../../src/adapters/kafka/wake-queue.js'
import type { FakeClock } from '../../../../src/limiter/index.js'

/**
 * FakeTimers are one-shot timers driven by a FakeClock: `advance(ms)` moves the clock
 * timer by timer, firing each on time and letting the promise callbacks it starts settle.
 * Nothing sleeps.
 */
export class FakeTimers implements Timers {
  private readonly pending = new Map<number, { dueMs: number; callback: () => void }>()
  private nextId = 1

  constructor(private readonly clock: FakeClock) {}

  /** armed is the number of timers pending. */
  get armed(): number {
    return this.pending.size
  }

  set(callback: () => void, delayMs: number): unknown {
    const id = this.nextId++
    this.pending.set(id, { dueMs: this.clock.now() + delayMs, callback })
    return id
  }

  clear(handle: unknown): void {
    this.pending.delete(handle as number)
  }

  /** advance moves the clock `ms` forward, firing due timers in order. */
  async advance(ms: number): Promise<void> {
    const endMs = this.clock.now() + ms
    await settle()
    for (;;) {
      let first: [number, { dueMs: number; callback: () => void }] | undefined
      for (const entry of this.pending)
        if (first === undefined || entry[1].dueMs < first[1].dueMs) first = entry
      if (first === undefined || first[1].dueMs > endMs) break
      this.pending.delete(first[0])
      if (first[1].dueMs > this.clock.now()) this.clock.set(first[1].dueMs)
      first[1].callback()
      await settle()
    }
    this.clock.set(endMs)
    await settle()
  }
}

/** settle lets pending promise callbacks run (a macrotask turn, no time passes on the fake clock). */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}
