import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { type Granted, KeyedLimiter, type Reservation } from '../../src/limiter/limiter.js'

function setup(rate = '10/s', options: Partial<ConstructorParameters<typeof KeyedLimiter>[0]> = {}) {
  const clock = new FakeClock(0)
  const limiter = new KeyedLimiter({ rate, clock, ...options })
  return { clock, limiter }
}

function granted(reservation: Reservation): Granted {
  if (!reservation.ok) throw new Error(`expected a grant, got ${reservation.reason}`)
  return reservation
}

function drain(limiter: KeyedLimiter, key: string): number {
  let taken = 0
  while (limiter.tryAcquire(key)) taken++
  return taken
}

describe('KeyedLimiter: the token bucket (requirement 1)', () => {
  // 10/s: one token every 100 ms, a bucket of 10. Timeline t0 … t9, 100 ms apart.
  it('starts full, refills continuously, never above capacity', () => {
    const { clock, limiter } = setup('10/s')
    const rows: Array<[atMs: number, cost: number, ok: boolean, comment: string]> = [
      [0, 10, true, 't0: a new key starts full'],
      [0, 1, false, 't0: empty'],
      [50, 1, false, 'half a token is not a token'],
      [100, 1, true, 't1: one token earned'],
      [100, 1, false, 't1: spent'],
      [300, 2, true, 't3: two earned'],
      [300, 1, false, 't3: spent'],
      [5_000, 10, true, 'long idle: full again, and no more than full'],
      [5_000, 1, false, 'capacity, not the idle time, bounds a burst'],
    ]
    for (const [atMs, cost, ok, comment] of rows) {
      clock.set(atMs)
      expect(limiter.tryAcquire('m1', cost), comment).toBe(ok)
    }
  })

  it('keeps keys apart: draining one leaves the others full', () => {
    const { limiter } = setup('10/s')
    expect(drain(limiter, 'hot')).toBe(10)
    expect(drain(limiter, 'quiet')).toBe(10)
    expect(limiter.size).toBe(2)
  })

  it('refuses a cost above the capacity instead of waiting forever', () => {
    const { limiter } = setup('10/s')
    expect(() => limiter.tryAcquire('m1', 11)).toThrow(RangeError)
    expect(() => limiter.reserve('m1', 11)).toThrow(/above the bucket's capacity of 10/)
    expect(() => limiter.tryAcquire('m1', 0)).toThrow(TypeError)
    expect(() => limiter.tryAcquire('m1', Number.NaN)).toThrow(TypeError)
  })

  it('grants a whole burst of a rate whose interval is not a whole number of ms', () => {
    const { limiter } = setup('7/s')
    expect(drain(limiter, 'm1')).toBe(7)
  })

  it('refuses keys that are empty or too long, with a message saying which', () => {
    const { limiter } = setup('10/s', { maxKeyLength: 16 })
    expect(() => limiter.tryAcquire('')).toThrow(/an empty key/)
    expect(() => limiter.tryAcquire('x'.repeat(17))).toThrow(/1 to 16 characters, got a key of 17 characters/)
    expect(limiter.size).toBe(0)
  })
})

describe('KeyedLimiter: reservations', () => {
  it('spaces reservations on an empty bucket at the rate, in call order (requirement 4)', () => {
    const { limiter } = setup('10/s')
    drain(limiter, 'm1')
    const delays = Array.from({ length: 200 }, () => granted(limiter.reserve('m1')).delayMs)
    expect(delays).toEqual(Array.from({ length: 200 }, (_, i) => (i + 1) * 100))
  })

  it('grants now while tokens last, then commits to future times', () => {
    const { limiter } = setup('1200/min burst 10')
    const delays = Array.from({ length: 13 }, () => granted(limiter.reserve('m1')).delayMs)
    expect(delays).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50, 100, 150])
  })

  it('tells reservedAtMs on the limiter clock', () => {
    const { clock, limiter } = setup('10/s')
    clock.set(5_000)
    drain(limiter, 'm1')
    expect(granted(limiter.reserve('m1')).reservedAtMs).toBe(5_100)
  })

  it('defers without holding anything beyond the horizon', () => {
    const { limiter } = setup('10/s', { horizonMs: 1_000 })
    drain(limiter, 'm1')
    for (let i = 1; i <= 10; i++) expect(granted(limiter.reserve('m1')).delayMs).toBe(i * 100)
    const deferred = limiter.reserve('m1')
    expect(deferred).toEqual({ ok: false, delayMs: 100, reason: 'beyond-horizon', bindingKey: 'm1' })
    expect(limiter.inspect('m1')?.tokens).toBe(-10)
  })

  it('returns the tokens of a cancelled reservation once (requirement 6)', () => {
    const { limiter } = setup('10/s')
    drain(limiter, 'm1')
    granted(limiter.reserve('m1'))
    const last = granted(limiter.reserve('m1'))
    expect(last.delayMs).toBe(200)
    expect(last.cancel()).toBe(true)
    expect(last.cancel()).toBe(false)
    expect(limiter.inspect('m1')?.tokens).toBe(-1)
    expect(granted(limiter.reserve('m1')).delayMs).toBe(200)
  })

  it('does not hand out twice the gap a cancelled reservation leaves before later ones', () => {
    const { limiter } = setup('10/s')
    drain(limiter, 'm1')
    const first = granted(limiter.reserve('m1'))
    granted(limiter.reserve('m1'))
    expect(first.cancel()).toBe(true)
    // the reservation at 200 ms stands; the next one still comes after it
    expect(granted(limiter.reserve('m1')).delayMs).toBe(300)
  })

  it('never lets a cancel fill the bucket past its capacity', () => {
    const { clock, limiter } = setup('10/s')
    const reservation = granted(limiter.reserve('m1'))
    clock.advance(10_000)
    reservation.cancel()
    expect(limiter.inspect('m1')?.tokens).toBe(10)
    expect(drain(limiter, 'm1')).toBe(10)
  })

  it('grants exactly the capacity to 1,000 concurrent async callers (requirement 4)', async () => {
    const { limiter } = setup('100/s')
    const outcomes = await Promise.all(
      Array.from({ length: 1_000 }, async (_, i) => {
        await Promise.resolve()
        if (i % 3 === 0) await new Promise((resolve) => setImmediate(resolve))
        const first = limiter.tryAcquire('m1')
        await Promise.resolve()
        return first
      }),
    )
    expect(outcomes.filter(Boolean)).toHaveLength(100)
  })
})

describe('KeyedLimiter: rate changes (requirement 2)', () => {
  it('carries tokens over proportionally: half of 1000/min is half of 5000/min', () => {
    const { limiter } = setup('1000/min')
    for (let i = 0; i < 500; i++) limiter.tryAcquire('m1')
    limiter.setRate('m1', '5000/min')
    expect(limiter.inspect('m1')?.tokens).toBeCloseTo(2500, 6)
    expect(limiter.inspect('m1')?.capacity).toBe(5000)
  })

  it('banks tokens earned at the old rate before switching', () => {
    const { clock, limiter } = setup('10/s')
    drain(limiter, 'm1')
    clock.advance(500) // five tokens at 10/s
    limiter.setRate('m1', '100/s', { inheritance: 'as-is' })
    expect(limiter.inspect('m1')?.tokens).toBeCloseTo(5, 9)
  })

  it.each([
    ['proportional', 40],
    ['as-is', 5],
    ['reset', 80],
  ] as const)('with inheritance %s, 5 of 10 tokens become %d of 80', (inheritance, tokens) => {
    const { limiter } = setup('10/s')
    for (let i = 0; i < 5; i++) limiter.tryAcquire('m1')
    limiter.setRate('m1', '80/s', { inheritance })
    expect(limiter.inspect('m1')?.tokens).toBeCloseTo(tokens, 9)
  })

  it('keeps reservations handed out before a change valid, and schedules new work after them', () => {
    const { limiter } = setup('10/s')
    drain(limiter, 'm1')
    const before = Array.from({ length: 5 }, () => granted(limiter.reserve('m1')))
    expect(before.map((r) => r.delayMs)).toEqual([100, 200, 300, 400, 500])
    limiter.setRate('m1', '100/s')
    // the debt of 5 reservations ends at 500 ms whatever the rate; then 10 ms apart
    expect(granted(limiter.reserve('m1')).delayMs).toBeCloseTo(510, 9)
    expect(granted(limiter.reserve('m1')).delayMs).toBeCloseTo(520, 9)
  })

  it('changes the default for every key without an override, in one step', () => {
    const { limiter } = setup('10/s')
    limiter.setRate('vip', '100/s')
    limiter.tryAcquire('a')
    limiter.tryAcquire('vip')
    limiter.setRate('*', '20/s')
    expect(limiter.rateOf('a').limit).toBe(20)
    expect(limiter.rateOf('never-seen').limit).toBe(20)
    expect(limiter.rateOf('vip').limit).toBe(100)
    expect(limiter.inspect('a')?.tokens).toBeCloseTo(18, 9)
  })

  it('clears an override back to the default', () => {
    const { limiter } = setup('10/s')
    limiter.setRate('m1', '100/s')
    limiter.setRate('m1', null)
    expect(limiter.rateOf('m1').limit).toBe(10)
    expect(limiter.rates().overrides).toEqual({})
  })

  it('applies a change whole or not at all', () => {
    const { limiter } = setup('10/s')
    expect(() => limiter.apply({ default: '20/s', overrides: { m1: '100/s', m2: 'nonsense' } })).toThrow(
      /"nonsense"/,
    )
    expect(limiter.rates()).toMatchObject({ default: { limit: 10 }, overrides: {} })
  })

  it('ignores a change whose version is not newer', () => {
    const { limiter } = setup('10/s')
    expect(limiter.apply({ version: 7, default: '1000/min', overrides: { m1: '5000/min' } })).toEqual({
      applied: true,
    })
    expect(limiter.apply({ version: 7, default: '1/s' })).toEqual({ applied: false, reason: 'stale-version' })
    expect(limiter.apply({ version: 6, default: '1/s' })).toEqual({ applied: false, reason: 'stale-version' })
    expect(limiter.rates()).toMatchObject({
      version: 7,
      default: { limit: 1000 },
      overrides: { m1: { limit: 5000 } },
    })
    expect(limiter.stats().staleChanges).toBe(2)
  })

  it('replaces every override with a snapshot', () => {
    const { limiter } = setup('10/s')
    limiter.apply({ overrides: { a: '1/s', b: '2/s' } })
    limiter.apply({ replace: true, default: '5/s', overrides: { b: '3/s', c: '4/s' } })
    expect(Object.keys(limiter.rates().overrides).sort()).toEqual(['b', 'c'])
    expect(limiter.rateOf('a').limit).toBe(5)
  })

  it('lists an override for a merchant named __proto__ like any other (regression)', () => {
    const { limiter } = setup('10/s')
    limiter.setRate('__proto__', '3/s')
    expect(Object.keys(limiter.rates().overrides)).toEqual(['__proto__'])
    expect(Object.getOwnPropertyDescriptor(limiter.rates().overrides, '__proto__')?.value).toMatchObject({
      limit: 3,
    })
  })

  it('refuses to clear the default rate', () => {
    const { limiter } = setup('10/s')
    expect(() => limiter.setRate('*', null)).toThrow(TypeError)
  })
})

describe('KeyedLimiter: clock skew (requirement 3)', () => {
  it('absorbs a step back within the tolerance: nothing added, nothing removed', () => {
    const { clock, limiter } = setup('10/s')
    clock.set(1_000)
    drain(limiter, 'm1')
    clock.set(1_050)
    expect(limiter.tryAcquire('m1')).toBe(false)
    clock.set(950) // 100 ms back: tolerated
    expect(limiter.tryAcquire('m1')).toBe(false)
    clock.set(1_100) // 100 ms after the drain on the true timeline
    expect(limiter.tryAcquire('m1')).toBe(true)
    expect(limiter.stats()).toMatchObject({ skewTolerated: 1, skewRebased: 0 })
  })

  it('rebases a large step back without granting a token', () => {
    const { clock, limiter } = setup('10/s')
    clock.set(60_000)
    drain(limiter, 'm1')
    clock.set(0) // a minute back
    expect(limiter.tryAcquire('m1')).toBe(false)
    clock.set(99)
    expect(limiter.tryAcquire('m1')).toBe(false)
    clock.set(100) // one interval after the step: one token, as if no step had happened
    expect(limiter.tryAcquire('m1')).toBe(true)
    expect(limiter.tryAcquire('m1')).toBe(false)
    expect(limiter.stats()).toMatchObject({ skewTolerated: 0, skewRebased: 1 })
  })

  it('rebases reservations with the clock: a step back never moves a reservation earlier', () => {
    const { clock, limiter } = setup('10/s')
    clock.set(10_000)
    drain(limiter, 'm1')
    granted(limiter.reserve('m1'))
    clock.set(5_000)
    expect(granted(limiter.reserve('m1')).delayMs).toBe(200)
  })
})

describe('KeyedLimiter: memory bound and eviction (requirement 5)', () => {
  it('keeps counting a key placed after the table grew its arrival times past the first 1,024', () => {
    const { limiter } = setup('10/s')
    for (let i = 0; i < 5_000; i++) limiter.tryAcquire(`early-${i}`)
    // every key drains at the same time reading: the fast path of tryAcquire sees the grown array
    for (const key of ['early-0', 'early-1023', 'early-1024', 'early-4999']) {
      expect(drain(limiter, key)).toBe(9)
    }
  })

  it('never grows past maxKeys and never hands a drained key a fresh bucket', () => {
    const maxKeys = 100
    const { clock, limiter } = setup('10/s', { maxKeys })
    drain(limiter, 'drained')
    let grantedToDrained = 0
    for (let i = 0; i < 10 * maxKeys; i++) {
      clock.advance(2)
      limiter.tryAcquire(`flood-${i}`)
      if (limiter.tryAcquire('drained')) grantedToDrained++
      expect(limiter.size).toBeLessThanOrEqual(maxKeys)
    }
    // 2,000 ms at 10/s earn 20 tokens: a fresh bucket would have given 10 more at once
    expect(grantedToDrained).toBe(20)
    expect(limiter.stats().evictions).toBeGreaterThan(8 * maxKeys)
  })

  it('evicts only full buckets: a key whose bucket refilled comes back the same', () => {
    const { clock, limiter } = setup('10/s', { maxKeys: 2 })
    limiter.tryAcquire('a')
    limiter.tryAcquire('b')
    clock.advance(100) // a and b refill fully
    limiter.tryAcquire('c')
    expect(limiter.size).toBe(2)
    expect(limiter.stats().evictions).toBe(1)
  })

  it('defers a new key when the table is full of buckets in use, neither granting nor dropping it', () => {
    const { clock, limiter } = setup('10/s', { maxKeys: 2 })
    drain(limiter, 'a')
    drain(limiter, 'b')
    expect(limiter.tryAcquire('c')).toBe(false)
    const deferred = limiter.reserve('c')
    expect(deferred.ok).toBe(false)
    expect(deferred).toMatchObject({ reason: 'table-full', delayMs: 1_000 })
    expect(limiter.size).toBe(2)
    clock.advance(1_000)
    expect(granted(limiter.reserve('c')).delayMs).toBe(0)
    expect(limiter.stats().tableFull).toBe(2)
  })

  it('keeps an override for an evicted key', () => {
    const { clock, limiter } = setup('10/s', { maxKeys: 1 })
    limiter.setRate('vip', '100/s')
    limiter.tryAcquire('vip')
    clock.advance(1_000)
    limiter.tryAcquire('other')
    expect(limiter.inspect('vip')).toBeUndefined()
    expect(limiter.rateOf('vip').limit).toBe(100)
  })
})

describe('KeyedLimiter: sharing a limit across instances', () => {
  it('enforces 1/n of every rate, and keeps the fill in proportion', () => {
    const { limiter } = setup('30/s')
    limiter.setRate('vip', '300/s')
    limiter.setShare(3)
    expect(limiter.rateOf('any').limit).toBe(10)
    expect(limiter.rateOf('vip').limit).toBe(100)
    expect(drain(limiter, 'any')).toBe(10)
    expect(() => limiter.setShare(0)).toThrow(TypeError)
  })
})

describe('KeyedLimiter: penalties after 429 (additive increase, multiplicative decrease)', () => {
  const penalty = { decreaseFactor: 0.5, increaseStep: 0.25, increaseEveryMs: 1_000, decreaseCooldownMs: 500 }

  it('blocks for the Retry-After, halves the rate, then restores it step by step', () => {
    const { clock, limiter } = setup('10/s', { penalty })
    limiter.tryAcquire('m1')
    limiter.penalize('m1', 2_000)
    expect(limiter.inspect('m1')).toMatchObject({ penaltyFactor: 0.5, rate: { limit: 5 } })
    clock.set(1_999)
    expect(limiter.tryAcquire('m1')).toBe(false)
    clock.set(2_000)
    expect(limiter.tryAcquire('m1')).toBe(true)
    clock.set(3_000) // Retry-After + one step
    expect(limiter.inspect('m1')?.penaltyFactor).toBe(0.75)
    clock.set(4_000)
    expect(limiter.inspect('m1')?.penaltyFactor).toBe(1)
    expect(limiter.rateOf('m1').limit).toBe(10)
    expect(limiter.stats().penalized).toBe(0)
  })

  it('lowers the rate once for a flurry of 429s from requests in flight together', () => {
    const { limiter } = setup('10/s', { penalty })
    for (let i = 0; i < 5; i++) limiter.penalize('m1', 0)
    expect(limiter.rateOf('m1').limit).toBe(5)
    expect(limiter.stats().penalties).toBe(5)
  })

  it('keeps a penalty across a rate change of the default, and an override across a penalty', () => {
    const { limiter } = setup('10/s', { penalty })
    limiter.penalize('m1', 0)
    limiter.setRate('*', '20/s')
    expect(limiter.rateOf('m1').limit).toBe(10)
    limiter.setRate('m2', '40/s')
    limiter.penalize('m2', 0)
    expect(limiter.rateOf('m2').limit).toBe(20)
    expect(limiter.inspect('m2')?.override).toBe(true)
  })
})
