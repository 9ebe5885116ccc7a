import { describe, expect, it } from 'vitest'
import { FakeClock, KeyedLimiter } from '../../src/limiter/index.js'

// Attacks on promise (3), a backward clock step: up to 100 ms tolerated silently, a larger
// one rebased, never an extra token; and on results that do not depend on the clock's origin.

function drain(limiter: KeyedLimiter, key: string): number {
  let taken = 0
  while (limiter.tryAcquire(key)) taken++
  return taken
}

/**
 * grantsPerMs drains `rate` on `key` every true ms from 0 to `untilMs`, the clock reading
 * `rawAt(trueMs)`, and returns the units granted at each true ms (index 0: the first drain).
 */
function grantsPerMs(rate: string, untilMs: number, rawAt: (trueMs: number) => number, origin = 0): number[] {
  const clock = new FakeClock(origin + rawAt(0))
  const limiter = new KeyedLimiter({ rate, clock })
  const grants: number[] = []
  for (let t = 0; t <= untilMs; t++) {
    clock.set(origin + rawAt(t))
    grants.push(drain(limiter, 'm'))
  }
  return grants
}

/** worstExcess is the largest excess over burst + perMs × W of any window of true time. */
function worstExcess(grants: number[], burst: number, perMs: number): number {
  let worst = Number.NEGATIVE_INFINITY
  for (let i = 0; i < grants.length; i++) {
    let sum = 0
    for (let j = i; j < grants.length && j < i + 400; j++) {
      sum += grants[j]!
      worst = Math.max(worst, sum - burst - perMs * (j - i))
    }
  }
  return worst
}

describe('a backward clock step never grants an extra token (promise 3)', () => {
  it.each([1, 99, 100, 101, 150, 900, 5_000])(
    'a step back of %d ms at 1 s, corrected 1 s later, keeps every window within burst + rate × W (1000/s burst 10)',
    (backMs) => {
      const grants = grantsPerMs('1000/s burst 10', 3_000, (t) => (t >= 1_000 && t < 2_000 ? t - backMs : t))
      expect(worstExcess(grants, 10, 1)).toBeLessThanOrEqual(1e-6)
      // over the whole run no more than a straight clock gives
      expect(grants.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(10 + 3_000)
    },
  )

  it.each([99, 100, 101])(
    'a back-step of %d ms is told as tolerated up to 100 ms and rebased above',
    (backMs) => {
      const events: string[] = []
      const clock = new FakeClock(10_000)
      const limiter = new KeyedLimiter({ rate: '10/s', clock, onClockSkew: (e) => events.push(e.kind) })
      drain(limiter, 'm')
      clock.advance(-backMs)
      expect(limiter.tryAcquire('m')).toBe(false) // time did not move forward: no token
      expect(events).toEqual([backMs <= 100 ? 'tolerated' : 'rebased'])
      expect(limiter.now()).toBe(10_000)
    },
  )

  it('a big step back then a forward jump past the old time adds no time for the correction', () => {
    const clock = new FakeClock(1.7e12)
    const limiter = new KeyedLimiter({ rate: '1/s burst 1', clock })
    expect(drain(limiter, 'm')).toBe(1)
    clock.advance(-3_600_000) // an hour back: rebased
    clock.advance(500)
    expect(drain(limiter, 'm')).toBe(0)
    clock.advance(3_600_000) // the correction
    expect(drain(limiter, 'm')).toBe(0)
    expect(limiter.now() - 1.7e12).toBeLessThanOrEqual(1_000)
    clock.advance(500)
    expect(drain(limiter, 'm')).toBe(1)
  })

  it('repeated sub-tolerance back-steps (99 ms every 10 ms) never run the guarded time ahead', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '100/s burst 1', clock })
    let total = drain(limiter, 'm')
    for (let t = 10; t <= 10_000; t += 10) {
      clock.set(t % 20 === 0 ? t - 99 : t)
      total += drain(limiter, 'm')
      expect(limiter.now()).toBeLessThanOrEqual(t)
    }
    expect(total).toBeLessThanOrEqual(1 + 1_000)
  })
})

describe('results do not depend on the clock origin (precision)', () => {
  it.each([0, 2 ** 35, 1.7e12, 2 ** 52 - 10_000, 2 ** 53 - 10_000, -1.7e12])(
    '7/s burst 1 read every ms for 7 s grants the same at origin %d',
    (origin) => {
      const grants = grantsPerMs('7/s burst 1', 7_000, (t) => t, origin)
      const total = grants.reduce((a, b) => a + b, 0)
      const atZero = grantsPerMs('7/s burst 1', 7_000, (t) => t).reduce((a, b) => a + b, 0)
      expect(total).toBe(atZero)
      expect(total).toBeGreaterThanOrEqual(1 + 49 - 1)
      expect(total).toBeLessThanOrEqual(1 + 49)
    },
  )

  it.each([0, 1.7e12, 2 ** 52 - 10_000])(
    '99000/s burst 200 keeps every window bounded at origin %d',
    (origin) => {
      const grants = grantsPerMs('99000/s burst 200', 1_000, (t) => t, origin)
      expect(worstExcess(grants, 200, 99)).toBeLessThanOrEqual(1e-6)
      expect(grants.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(200 + 99 * 1_000 - 1)
    },
  )

  it('a reading of 2^53 + a jump of a year keeps granting at the rate after the epoch moves', () => {
    const clock = new FakeClock(2 ** 53 - 2 ** 23)
    const limiter = new KeyedLimiter({ rate: '10/s', clock })
    expect(drain(limiter, 'm')).toBe(10)
    clock.advance(2 ** 23) // past REBASE_AFTER_MS
    expect(drain(limiter, 'm')).toBe(10)
    clock.advance(1_000)
    expect(drain(limiter, 'm')).toBe(10)
  })
})
