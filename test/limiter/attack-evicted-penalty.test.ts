import { describe, expect, it } from 'vitest'
import { FakeClock, KeyedLimiter } from '../../src/limiter/index.js'

// Found 2026-12-04 by an adversarial pass (failed on cb0c103): a penalized key evicted once
// its bucket was full came back at the default rate, above its lowered one.

function drain(limiter: KeyedLimiter, key: string): number {
  let taken = 0
  while (limiter.tryAcquire(key)) taken++
  return taken
}

describe('promise 5: eviction never hands out extra tokens', () => {
  it('keeps a penalized key held while its rate is lowered: it never comes back to the full default bucket', () => {
    const options = { rate: '10/s burst 10', maxKeys: 2, penalty: { increaseEveryMs: 3_600_000 } }
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ ...options, clock })
    limiter.penalize('p', 1_000) // factor 0.5: 5/s burst 5 for the next hour
    clock.set(5_000)
    limiter.tryAcquire('x') // fills the table
    expect(limiter.tryAcquire('y')).toBe(false) // p is full but lowered: not evicted, y waits
    expect(limiter.inspect('p')).toBeDefined()
    clock.set(6_000)
    expect(drain(limiter, 'p')).toBeLessThanOrEqual(5)
  })

  it('lets the key go once its rate has climbed back to the default', () => {
    const options = { rate: '10/s burst 10', maxKeys: 2, penalty: { increaseEveryMs: 1_000 } }
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ ...options, clock })
    limiter.penalize('p', 1_000)
    limiter.tryAcquire('x')
    clock.set(60_000) // long after every increase: p is back at 10/s and full
    expect(limiter.tryAcquire('y')).toBe(true) // a full bucket was evicted for it
    expect(limiter.stats().evictions).toBe(1)
  })
})
