import { describe, expect, it } from 'vitest'
import { FakeClock, type Granted, KeyedLimiter } from '../../src/limiter/index.js'

// Attacks on shares (setShare) meeting penalties and rate changes, on promise (4), no
// double-spend under many concurrent callers, and on costs above the burst never being
// deferred forever.

function drain(limiter: KeyedLimiter, key: string): number {
  let taken = 0
  while (limiter.tryAcquire(key)) taken++
  return taken
}

describe('a Retry-After stands through shares, overrides, snapshots and recoveries', () => {
  it('nothing runs inside it while the share, the default and the override all change, then the key runs within one unit interval', () => {
    const clock = new FakeClock(2 ** 35)
    const limiter = new KeyedLimiter({ rate: '10/s burst 20', clock })
    const start = clock.now()
    limiter.setRate('m', '50/s')
    const early = limiter.reserve('m', 1) as Granted
    limiter.penalize('m', 4_000)
    const steps: Array<() => void> = [
      () => limiter.setShare(3),
      () => limiter.setRate('*', '1000/s burst 1000', { inheritance: 'reset' }),
      () => limiter.setRate('m', null),
      () => limiter.apply({ replace: true, overrides: {}, inheritance: 'reset' }),
      () => limiter.setShare(1),
      () => limiter.penalize('m', 100), // a shorter Retry-After does not shorten the standing one
      () => early.cancel(),
      () => limiter.setRate('m', '1/s burst 1', { inheritance: 'reset' }),
      () => limiter.setRate('m', '500/s', { inheritance: 'as-is' }),
    ]
    for (let t = 0; t < 4_000; t += 50) {
      clock.set(start + t)
      steps[(t / 50) % steps.length]!()
      expect(drain(limiter, 'm')).toBe(0)
      const answer = limiter.reserve('m', 1)
      if (answer.ok) {
        expect(answer.reservedAtMs).toBeGreaterThanOrEqual(start + 4_000)
        answer.cancel()
      }
    }
    // the block was held as debt when the last change cut the rate: the first unit after it
    // may come up to one unit's interval at the new rate later (fewer tokens, never more)
    clock.set(start + 4_000)
    const { rate } = limiter.inspect('m')!
    const unitMs = rate.intervalMs / rate.limit
    expect(limiter.inspect('m')!.waitMs).toBeLessThanOrEqual(unitMs + 1e-6)
    clock.set(start + 4_000 + unitMs)
    expect(limiter.tryAcquire('m')).toBe(true)
  })

  it('toggling the share 1 → 3 → 1 a thousand times mints no tokens', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '10/s burst 10', clock })
    expect(drain(limiter, 'm')).toBe(10)
    clock.set(500) // 5 tokens
    for (let i = 0; i < 1_000; i++) {
      limiter.setShare(3)
      limiter.setShare(1)
    }
    expect(drain(limiter, 'm')).toBeLessThanOrEqual(5)
  })

  it('penalties, shares and rate changes on a key in debt keep its reservations and bound its window', () => {
    const clock = new FakeClock(1.7e12)
    const limiter = new KeyedLimiter({ rate: '20/s burst 5', clock, horizonMs: 60_000 })
    const times: number[] = []
    for (let i = 0; i < 25; i++) {
      const r = limiter.reserve('m', 1)
      if (r.ok) times.push(r.reservedAtMs)
    }
    limiter.penalize('m', 0)
    limiter.setShare(2)
    limiter.setRate('*', '40/s burst 5')
    limiter.setShare(1)
    const after = limiter.reserve('m', 1)
    expect(after.ok).toBe(true)
    // new work comes after every reservation handed out before the changes
    if (after.ok) expect(after.reservedAtMs).toBeGreaterThanOrEqual(Math.max(...times))
  })
})

describe('no double-spend under many concurrent callers (promise 4)', () => {
  it('1,000 async callers interleaving awaits and clock steps are granted at most burst + rate × W', async () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '100/s burst 10', clock })
    const grants: number[] = []
    const caller = async (id: number) => {
      for (let i = 0; i < 20; i++) {
        await Promise.resolve()
        if (id % 7 === i % 7) clock.advance(1)
        if (limiter.tryAcquire('m')) grants.push(clock.now())
        const r = limiter.reserve('m', 1)
        if (r.ok) {
          if (r.delayMs > 0)
            r.cancel() // a caller that does not wait gives it back before its time
          else grants.push(r.reservedAtMs)
        }
      }
    }
    await Promise.all(Array.from({ length: 1_000 }, (_, id) => caller(id)))
    const elapsed = clock.now()
    expect(grants.length).toBeLessThanOrEqual(10 + (100 * elapsed) / 1_000 + 1e-6)
    expect(grants.length).toBeGreaterThanOrEqual((100 * elapsed) / 1_000 - 1)
  })
})

describe('a cost above the burst is never deferred forever', () => {
  it.each([
    ['10/min', 5, 'a share of 1/10', 'refused'],
    ['10/s burst 4', 3, 'penalized twice and shared by 2', 'refused'],
    ['10/s burst 4', 2, 'penalized twice and shared by 2', true],
  ])('%s, cost %d, %s: %s (refused up front, or granted within one refill)', (rate, cost, _how, expected) => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({
      rate,
      clock,
      horizonMs: 1_000,
      penalty: { increaseEveryMs: 3_600_000 },
    })
    if (rate === '10/min') limiter.setShare(10)
    else {
      limiter.penalize('m', 0)
      clock.set(2_000)
      limiter.penalize('m', 0)
      limiter.setShare(2)
    }
    let answer: boolean | 'refused' = false
    let t = clock.now()
    for (; t <= 600_000 && answer === false; t += 500) {
      clock.set(t)
      try {
        answer = limiter.reserve('m', cost).ok
      } catch (error) {
        expect(String(error)).toMatch(/above the bucket's capacity of \d+ in this process/)
        answer = 'refused'
      }
    }
    expect(answer).toBe(expected)
    if (answer === true) expect(t).toBeLessThanOrEqual(2_000 + 500 + 2_000) // one refill of the lowered bucket
  })
})
