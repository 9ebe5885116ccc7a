import { describe, expect, it } from 'vitest'
import { FakeClock, KeyedLimiter } from '../../src/limiter/index.js'

// A penalty for a key the table cannot hold (full of buckets in use) was dropped
// (`penaltiesDropped`): once room came back, the key got a fresh full bucket and ran
// inside its Retry-After. Its Retry-After is now kept in a fixed number of cells.

/** fullTable is a limiter at maxKeys 2 whose two keys hold debt until 2 s. */
function fullTable() {
  const clock = new FakeClock(0)
  const limiter = new KeyedLimiter({ rate: '10/s burst 10', clock, maxKeys: 2 })
  for (const key of ['a', 'b']) {
    expect(limiter.tryAcquire(key, 10)).toBe(true)
    expect(limiter.reserve(key, 10).ok).toBe(true)
  }
  return { clock, limiter }
}

describe('a penalty for a key the table cannot hold still holds (issue 15, item 4)', () => {
  it('gives the key no grant inside its Retry-After once the table has room (was: 10 granted at 5 s of a 30 s Retry-After)', () => {
    const { clock, limiter } = fullTable()
    limiter.penalize('m', 30_000)
    expect(limiter.inspect('m')).toBeUndefined()
    expect(limiter.stats().penaltiesDropped).toBe(1)
    for (let t = 5_000; t < 30_000; t += 1_000) {
      clock.set(t) // a and b are full again from 2 s: evictable, so 'm' has room
      expect(limiter.tryAcquire('m'), `at ${t} ms`).toBe(false)
      const answer = limiter.reserve('m', 1)
      if (answer.ok) {
        expect(answer.reservedAtMs).toBeGreaterThanOrEqual(30_000)
        answer.cancel()
      }
    }
    clock.set(30_000)
    expect(limiter.tryAcquire('m')).toBe(true)
  })

  it('keeps the Retry-After through a rate change made while the key waits outside the table', () => {
    const { clock, limiter } = fullTable()
    limiter.penalize('m', 10_000)
    clock.set(5_000)
    expect(limiter.tryAcquire('m')).toBe(false) // now held, its Retry-After on its own rate
    limiter.setRate('*', '1000/s burst 1000')
    limiter.setRate('m', '100/s', { inheritance: 'reset' })
    for (let t = 5_000; t < 10_000; t += 100) {
      clock.set(t)
      expect(limiter.tryAcquire('m'), `at ${t} ms`).toBe(false)
    }
    clock.set(10_100) // the debt a Retry-After leaves is kept in time by a change, as on a key held
    expect(limiter.tryAcquire('m')).toBe(true)
  })

  it('stays bounded: 200,000 unheld keys penalized leave the table at maxKeys, and every one of them blocked', () => {
    const { clock, limiter } = fullTable()
    for (let i = 0; i < 200_000; i++) limiter.penalize(`p-${i}`, 60_000)
    expect(limiter.stats().penaltiesDropped).toBe(200_000)
    expect(limiter.stats().keys).toBe(2)
    clock.set(10_000)
    for (let i = 0; i < 200_000; i += 997) {
      const key = `p-${i}`
      expect(limiter.tryAcquire(key), key).toBe(false)
      if (limiter.inspect(key) !== undefined) expect(limiter.inspect(key)!.waitMs).toBeGreaterThan(0)
    }
    expect(limiter.stats().keys).toBe(2)
  })

  it('keeps the end across a move of the epoch (every 2^22 ms)', () => {
    const clock = new FakeClock(2 ** 22 - 5_000)
    const limiter = new KeyedLimiter({ rate: '10/s burst 10', clock, maxKeys: 1 })
    expect(limiter.tryAcquire('a', 10)).toBe(true)
    limiter.penalize('m', 6_000) // until 2^22 + 1000
    clock.set(2 ** 22 + 10) // past the move; 'a' full again
    expect(limiter.tryAcquire('m')).toBe(false)
    clock.set(2 ** 22 + 999)
    expect(limiter.tryAcquire('m')).toBe(false)
    clock.set(2 ** 22 + 1_000)
    expect(limiter.tryAcquire('m')).toBe(true)
  })
})
