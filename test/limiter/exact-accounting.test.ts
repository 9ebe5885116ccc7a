import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { type Granted, KeyedLimiter, type Reservation } from '../../src/limiter/limiter.js'
import { parseRate } from '../../src/limiter/rate.js'

// Issue 15: each claim of the limiter that an adversarial read broke, pinned on a fake clock.

function setup(
  rate: string,
  options: Partial<ConstructorParameters<typeof KeyedLimiter>[0]> = {},
  startMs = 0,
) {
  const clock = new FakeClock(startMs)
  const limiter = new KeyedLimiter({ rate, clock, ...options })
  return { clock, limiter }
}

function granted(reservation: Reservation): Granted {
  if (!reservation.ok) throw new Error(`expected a grant, got ${reservation.reason}`)
  return reservation
}

/** takeAll takes every unit `key` may have now, one at a time, and returns how many. */
function takeAll(limiter: KeyedLimiter, key: string): number {
  let taken = 0
  while (limiter.tryAcquire(key)) taken++
  return taken
}

describe('cancel never returns more than the reservation still holds (issue 15, item 2)', () => {
  it('gives nothing back for a reservation whose time has passed: 10/s burst 100 runs no more than 100 at once', () => {
    const { clock, limiter } = setup('10/s burst 100')
    const first = granted(limiter.reserve('m', 99))
    expect(first.delayMs).toBe(0)
    clock.set(10_000)
    const second = granted(limiter.reserve('m', 50))
    expect(second.delayMs).toBe(0)
    first.cancel()
    // 50 run at t = 10 s; with the bucket full at 100, at most 50 more may run now
    expect(takeAll(limiter, 'm')).toBeLessThanOrEqual(50)
  })

  it('gives back only the span a reservation occupied, after its key was slowed from 1000/s to 1/s', () => {
    const { limiter } = setup('1000/s burst 1')
    const five = Array.from({ length: 5 }, () => granted(limiter.reserve('m', 1)))
    expect(five.map((r) => r.delayMs)).toEqual([0, 1, 2, 3, 4])
    limiter.setRate('m', '1/s burst 1')
    five[4]!.cancel()
    five[3]!.cancel()
    // the three standing reservations end at 2 ms; at 1/s burst 1 the next unit is a second later
    const next = granted(limiter.reserve('m', 1))
    expect(next.delayMs).toBeGreaterThanOrEqual(1_002 - 1e-6)
  })

  it('still gives the latest reservation all of its tokens back before its time', () => {
    const { limiter } = setup('10/s')
    takeAll(limiter, 'm')
    const reservation = granted(limiter.reserve('m', 3))
    expect(reservation.delayMs).toBe(300)
    reservation.cancel()
    expect(limiter.inspect('m')?.tokens).toBeCloseTo(0, 9)
  })
})

describe('a cost above the per-process burst is never deferred forever (issue 15, item 3)', () => {
  it('refuses up front a cost above the share of the burst: 10/min shared by 10 has a bucket of 1', () => {
    const { limiter } = setup('10/min')
    limiter.setShare(10)
    expect(() => limiter.reserve('m', 5)).toThrow(
      /cost 5 is above the bucket's capacity of 1 in this process \(burst 10 shared by 10 instances\)/,
    )
    expect(() => limiter.tryAcquire('m', 2)).toThrow(RangeError)
  })

  it('grants a cost above the penalized burst within one refill and the horizon', () => {
    const { clock, limiter } = setup('10/min', { horizonMs: 10_000, penalty: { increaseEveryMs: 3_600_000 } })
    limiter.penalize('m', 0) // rate 5/min, burst 5, for the next hour
    expect(limiter.inspect('m')?.capacity).toBe(5)
    let grantedAtMs: number | undefined
    for (let t = 0; t <= 10 * 60_000 && grantedAtMs === undefined; t += 1_000) {
      clock.set(t)
      const answer = limiter.reserve('m', 8)
      if (answer.ok) grantedAtMs = answer.reservedAtMs
      else expect(answer.reason).toBe('beyond-horizon')
    }
    // one refill of the penalized bucket (5 units at 5/min) is 60 s; beyond the 10 s horizon it used to wait forever
    expect(grantedAtMs).toBeDefined()
    expect(grantedAtMs!).toBeLessThanOrEqual(60_000)
  })
})

describe('penalties stay within the key bound (issue 15, item 4)', () => {
  it('holds at most maxKeys penalized keys: 200,000 keys penalized with maxKeys 100', () => {
    const { clock, limiter } = setup('10/s', { maxKeys: 100 })
    for (let i = 0; i < 200_000; i++) {
      limiter.penalize(`p-${i}`, i % 2 === 0 ? 30_000 : 0)
      if (i % 1_000 === 0) clock.advance(1)
    }
    const stats = limiter.stats()
    expect(stats.keys).toBeLessThanOrEqual(100)
    expect(stats.penalized).toBeLessThanOrEqual(100)
    expect(stats.penalties).toBe(200_000)
    expect(stats.penaltiesDropped + stats.keys + stats.evictions).toBeGreaterThanOrEqual(200_000)
  })

  it('frees a penalty-only rate when its key is evicted', () => {
    const { clock, limiter } = setup('10/s', { maxKeys: 2 })
    limiter.penalize('a', 1_000)
    expect(limiter.stats().penalized).toBe(1)
    clock.advance(60_000) // the Retry-After is over and the bucket full again
    limiter.tryAcquire('b')
    limiter.tryAcquire('c')
    limiter.tryAcquire('d')
    expect(limiter.inspect('a')).toBeUndefined()
    expect(limiter.stats().penalized).toBe(0)
  })
})

describe('a Retry-After is a time (issue 15, item 5)', () => {
  it('is not lifted by a proportional rate change: 1/min, penalize 30 s, default to 10/min', () => {
    const { clock, limiter } = setup('1/min')
    limiter.penalize('m', 30_000)
    limiter.setRate('*', '10/min')
    let inside = 0
    for (let t = 0; t < 30_000; t += 100) {
      clock.set(t)
      inside += takeAll(limiter, 'm')
    }
    expect(inside).toBe(0)
    clock.set(30_000)
    expect(limiter.tryAcquire('m')).toBe(true)
  })

  it('is not lifted by a share change, an override or a cancel', () => {
    const { clock, limiter } = setup('10/s')
    const ahead = granted(limiter.reserve('m', 1))
    limiter.penalize('m', 5_000)
    limiter.setShare(2)
    limiter.setRate('m', '100/s', { inheritance: 'reset' })
    ahead.cancel()
    let inside = 0
    for (let t = 0; t < 5_000; t += 50) {
      clock.set(t)
      inside += takeAll(limiter, 'm')
      const answer = limiter.reserve('m', 1)
      if (answer.ok) {
        expect(answer.reservedAtMs).toBeGreaterThanOrEqual(5_000)
        answer.cancel()
      }
    }
    expect(inside).toBe(0)
  })
})

describe('precision does not depend on the clock origin (issue 15, item 6)', () => {
  it.each([0, 2 ** 35, 1.7e12])('grants cost = burst on a full 7/s burst 1 bucket at origin %d', (origin) => {
    for (let i = 0; i < 200; i++) {
      const { clock, limiter } = setup('7/s burst 1', {}, origin + i * 13.7)
      expect(limiter.tryAcquire('new', 1)).toBe(true)
      expect(limiter.tryAcquire('refilled', 1)).toBe(true)
      clock.advance(1_000 / 7)
      expect(limiter.tryAcquire('refilled', 1)).toBe(true)
    }
  })

  it.each([0, 2 ** 35, 1.7e12])(
    'never grants above burst + rate × W at 99000/s burst 200, origin %d',
    (origin) => {
      const { clock, limiter } = setup('99000/s burst 200', {}, origin)
      const times: number[] = []
      for (let step = 0; step < 2_000; step++) {
        clock.advance(1)
        while (limiter.tryAcquire('m')) times.push(limiter.now())
      }
      const perMs = 99
      // the excess of window [i, j] is (j - perMs·t_j) - (i - perMs·t_i) + 1 - burst: keep the least second term
      let worst = Number.NEGATIVE_INFINITY
      let least = Number.POSITIVE_INFINITY
      for (let j = 0; j < times.length; j++) {
        least = Math.min(least, j - perMs * (times[j]! - origin))
        worst = Math.max(worst, j - perMs * (times[j]! - origin) - least + 1 - 200)
      }
      expect(worst).toBeLessThanOrEqual(1e-6)
      expect(times.length).toBeGreaterThanOrEqual(200 + perMs * 1_999 - 1)
    },
  )
})

describe('rates are bounded on both ends (issue 15, item 7)', () => {
  it('refuses a rate too slow to be finite: 1e-305 per day', () => {
    expect(() => parseRate({ limit: 1e-305, intervalMs: 86_400_000 })).toThrow(
      /expected a rate from 0.001 per day to 1000000000 per second/,
    )
  })

  it('refuses an interval beyond 366 days: 1 per 1e308 ms', () => {
    expect(() => parseRate({ limit: 1, intervalMs: 1e308, burst: 2 })).toThrow(
      /expected an interval of at most 31622400000 ms/,
    )
  })

  it('refuses a rate above 1e9 per second and a burst above 1e9', () => {
    expect(() => parseRate('2000000/ms')).toThrow(/to 1000000000 per second/)
    expect(() => parseRate({ limit: 1, intervalMs: 1_000, burst: 2e9 })).toThrow(/burst from 1 to 1000000000/)
    expect(parseRate('1000000000/s burst 1000000000').limit).toBe(1e9)
  })
})

describe('a burst shared by N processes (issue 15, item 8)', () => {
  it.each([
    ['10/s burst 2', 5, 5],
    ['10/s burst 20', 5, 20],
    ['10/s burst 7', 2, 6],
  ])('%s shared by %d processes lets at most %d units through at once', (rate, processes, aggregate) => {
    const limiters = Array.from({ length: processes }, () => setup(rate).limiter)
    for (const limiter of limiters) limiter.setShare(processes)
    const atOnce = limiters.reduce((sum, limiter) => sum + takeAll(limiter, 'm'), 0)
    const { burst } = parseRate(rate)
    expect(atOnce).toBe(aggregate)
    // each process's share of the burst, whole units of cost 1 from each: never above max(burst, N)
    expect(atOnce).toBe(processes * Math.floor(Math.max(1, burst / processes)))
    expect(atOnce).toBeLessThanOrEqual(Math.max(burst, processes))
  })
})

describe('clock corrections grant nothing extra (issue 15, item 10)', () => {
  /** grantsOver20s drains `1/s burst 10` every 50 ms of true time, reading `clockAt(trueMs)`. */
  function grantsOver20s(clockAt: (trueMs: number) => number): number {
    const clock = new FakeClock(clockAt(0))
    const limiter = new KeyedLimiter({ rate: '1/s burst 10', clock })
    let total = 0
    for (let t = 0; t <= 20_000; t += 50) {
      clock.set(clockAt(t))
      total += takeAll(limiter, 'm')
    }
    return total
  }

  it('grants no more with a clock stepped back 900 ms every 2 s and corrected 1 s later than without', () => {
    const straight = grantsOver20s((t) => t)
    const skewed = grantsOver20s((t) => (t >= 2_000 && t % 2_000 < 1_000 ? t - 900 : t))
    expect(straight).toBe(30)
    expect(skewed).toBeLessThanOrEqual(straight)
  })

  it('tolerates back-steps of 100 ms silently and still grants at the rate', () => {
    const skewed = grantsOver20s((t) => (t >= 2_000 && t % 2_000 < 1_000 ? t - 100 : t))
    expect(skewed).toBeGreaterThanOrEqual(29)
    expect(skewed).toBeLessThanOrEqual(30)
  })
})

describe('the epoch moves without changing a decision (issue 15, item 6)', () => {
  it('keeps buckets, reservations, cancels and a Retry-After across a move of the epoch (every 2^22 ms)', () => {
    const { clock, limiter } = setup('10/s', { horizonMs: 10_000 })
    expect(takeAll(limiter, 'busy')).toBe(10)
    clock.set(2 ** 22 - 150)
    limiter.penalize('blocked', 1_000)
    expect(takeAll(limiter, 'busy')).toBe(10)
    const first = granted(limiter.reserve('busy', 1))
    const second = granted(limiter.reserve('busy', 1))
    expect(second.reservedAtMs - first.reservedAtMs).toBeCloseTo(100, 9)
    clock.set(2 ** 22 + 10) // past the move: the epoch is now here
    expect(limiter.tryAcquire('busy')).toBe(false)
    expect(second.cancel()).toBe(true) // the latest, still ahead: all of it back
    expect(limiter.inspect('busy')?.tokens).toBeCloseTo(-(first.reservedAtMs - (2 ** 22 + 10)) / 100, 6)
    expect(limiter.tryAcquire('blocked')).toBe(false)
    clock.set(2 ** 22 - 150 + 999)
    expect(limiter.tryAcquire('blocked')).toBe(false)
    clock.set(2 ** 22 - 150 + 1_000)
    expect(limiter.tryAcquire('blocked')).toBe(true)
    expect(first.cancel()).toBe(true) // its time has passed: nothing back
    // the bucket refills from the first reservation's end: full 100 ms from now, 9 tokens now
    expect(limiter.inspect('busy')?.tokens).toBeCloseTo(9, 6)
  })
})
