import { describe, expect, it } from 'vitest'
import { FakeClock, KeyedLimiter, parseRate } from '../../src/limiter/index.js'

// Attacks through odd inputs: costs, keys, absurd rates, versioned changes out of order.

function setup(rate = '10/s', maxKeyLength?: number) {
  const clock = new FakeClock(0)
  return { clock, limiter: new KeyedLimiter({ rate, clock, maxKeyLength }) }
}

describe('costs: refused with the bound, or granted within burst + rate × W', () => {
  it.each([0, -1, -0, Number.NaN, Number.NEGATIVE_INFINITY])('refuses cost %d with a TypeError', (cost) => {
    const { limiter } = setup()
    expect(() => limiter.tryAcquire('m', cost)).toThrow(/expected a cost above 0/)
    expect(() => limiter.reserve('m', cost)).toThrow(TypeError)
    expect(limiter.inspect('m')?.tokens ?? 10).toBe(10) // nothing charged
  })

  it.each([11, 1e308, Number.POSITIVE_INFINITY])(
    'refuses cost %d above the burst of 10 up front, stating the capacity',
    (cost) => {
      const { limiter } = setup()
      expect(() => limiter.reserve('m', cost)).toThrow(/above the bucket's capacity of 10/)
      expect(() => limiter.tryAcquire('m', cost)).toThrow(RangeError)
    },
  )

  it('also refuses a bad cost on a held key at the same instant (the fast path)', () => {
    const { limiter } = setup()
    expect(limiter.tryAcquire('m', 1)).toBe(true)
    expect(() => limiter.tryAcquire('m', Number.NaN)).toThrow(TypeError)
    expect(() => limiter.tryAcquire('m', 10.5)).toThrow(RangeError)
    expect(limiter.inspect('m')?.tokens).toBeCloseTo(9, 9)
  })

  it.each([0.1, 0.3, 1 / 3, 2.5])('fractional cost %d adds up to no more than burst + rate × W', (cost) => {
    const { clock, limiter } = setup('7/s burst 3')
    let work = 0
    for (let t = 0; t <= 10_000; t += 10) {
      clock.set(t)
      while (limiter.tryAcquire('m', cost)) work += cost
    }
    expect(work).toBeLessThanOrEqual(3 + 7 * 10 + 1e-6)
    expect(work).toBeGreaterThanOrEqual(3 + 7 * 10 - 1 - cost)
  })

  it('a cost equal to the whole burst is granted on a full bucket at every fractional rate', () => {
    for (const rate of ['7/s burst 7', '1/min', '99000/s', '3/h burst 2.5']) {
      const { limiter } = setup(rate)
      const { burst } = parseRate(rate)
      expect(limiter.tryAcquire('m', burst)).toBe(true)
      expect(limiter.tryAcquire('m', 1e-3)).toBe(false)
    }
  })
})

describe('keys', () => {
  it('refuses an empty key, a key above the bound and a non-string, stating the bound', () => {
    const { limiter } = setup('10/s', 8)
    expect(() => limiter.tryAcquire('')).toThrow(/expected a key of 1 to 8 characters, got an empty key/)
    expect(() => limiter.tryAcquire('123456789')).toThrow(/got a key of 9 characters/)
    expect(() => limiter.tryAcquire(42 as unknown as string)).toThrow(/got number/)
    expect(limiter.size).toBe(0)
  })

  it('keeps unicode, look-alike and prototype-named keys apart', () => {
    const { limiter } = setup('1/s burst 1')
    const keys = ['__proto__', 'constructor', 'é', 'e\u0301', '😀', '\ud83d', 'm', 'M', ' m', '*']
    for (const key of keys) expect(limiter.tryAcquire(key)).toBe(true)
    for (const key of keys) expect(limiter.tryAcquire(key)).toBe(false)
    expect(limiter.size).toBe(keys.length)
  })
})

describe('absurd rates are refused with errors stating the bound', () => {
  it.each([
    ['0/s', /limit above 0/],
    ['1/0s', /interval above 0 ms/],
    ['1/s burst 0', /burst from 1 to 1000000000/],
    ['1/s burst 0.5', /burst from 1/],
    ['2000000000/s', /to 1000000000 per second/],
    ['1/367d', /interval of at most 31622400000 ms/], // days are a unit: 367 of them are over the bound
    ['1/8785h', /interval of at most 31622400000 ms/],
    ['NaN/s', /expected a rate like/],
    ['1e3/s', /expected a rate like/],
  ])('%s', (text, message) => {
    expect(() => parseRate(text)).toThrow(message)
    expect(() => setup(text)).toThrow(message)
  })

  it.each([
    [{ limit: Number.POSITIVE_INFINITY, intervalMs: 1_000 }, /finite limit above 0/],
    [{ limit: 1, intervalMs: Number.NaN }, /finite interval above 0 ms/],
    [{ limit: 1, intervalMs: 1_000, burst: Number.NaN }, /burst from 1/],
    [{ limit: 0.001, intervalMs: 86_400_001 }, /from 0.001 per day/],
  ])('%o', (rate, message) => {
    expect(() => parseRate(rate)).toThrow(message)
    const { limiter } = setup()
    expect(() => limiter.setRate('m', rate)).toThrow(message)
    expect(limiter.rates().overrides).toEqual({}) // nothing changed
  })

  it('the slowest and fastest rates it accepts still decide finitely', () => {
    for (const rate of [
      { limit: 0.001, intervalMs: 86_400_000 },
      '1000000000/s burst 1000000000',
      '1000000000/s burst 1',
    ]) {
      const { clock, limiter } = setup()
      limiter.setRate('m', rate)
      expect(limiter.tryAcquire('m')).toBe(true)
      const state = limiter.inspect('m')!
      expect(Number.isFinite(state.tokens) && Number.isFinite(state.waitMs)).toBe(true)
      clock.advance(1)
      expect(Number.isFinite(limiter.inspect('m')!.tokens)).toBe(true)
    }
  })
})

describe('versioned changes arriving out of order', () => {
  it('applies only versions above the last applied one; stale ones change nothing', () => {
    const { limiter } = setup()
    expect(limiter.apply({ version: 3, default: '3/s' })).toEqual({ applied: true })
    expect(limiter.apply({ version: 1, default: '1/s' })).toEqual({ applied: false, reason: 'stale-version' })
    expect(limiter.apply({ version: 3, overrides: { m: '9/s' } })).toEqual({
      applied: false,
      reason: 'stale-version',
    })
    expect(limiter.apply({ version: 2.5, default: '2/s' }).applied).toBe(false)
    expect(limiter.rates()).toMatchObject({ default: { limit: 3 }, overrides: {}, version: 3 })
    expect(limiter.apply({ version: 4, default: '4/s' }).applied).toBe(true)
    expect(limiter.stats().staleChanges).toBe(3)
  })

  it.each([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])(
    'refuses version %d, which would make every later version stale or none',
    (version) => {
      const { limiter } = setup()
      limiter.apply({ version: 1, default: '1/s' })
      expect(() => limiter.apply({ version, default: '5/s' })).toThrow(/expected a finite version/)
      expect(limiter.apply({ version: 2, default: '2/s' }).applied).toBe(true)
    },
  )

  it('a bad rate anywhere in a change leaves the version and every rate as they were', () => {
    const { limiter } = setup()
    limiter.apply({ version: 1, default: '1/s' })
    expect(() => limiter.apply({ version: 5, default: '5/s', overrides: { m: '0/s' } })).toThrow(TypeError)
    expect(limiter.rates()).toMatchObject({ default: { limit: 1 }, version: 1 })
    expect(limiter.apply({ version: 2, default: '2/s' }).applied).toBe(true)
  })
})
