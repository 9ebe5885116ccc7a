import { describe, expect, it } from 'vitest'
import { FakeClock, KeyedLimiter } from '../../src/limiter/index.js'

// Rate overrides for keys never seen were not bounded (found by an adversarial pass): each
// `setRate` of a new key kept a rate entry of its own, whatever maxKeys, so a flood of them
// grew without end. They are bounded by `maxOverrides`; one beyond it is refused whole.

function setup(maxOverrides: number) {
  const clock = new FakeClock(0)
  const limiter = new KeyedLimiter({ rate: '10/s', clock, maxKeys: 100, maxOverrides })
  return { clock, limiter }
}

describe('rate overrides are bounded by maxOverrides', () => {
  it('refuses a flood of overrides for keys never seen beyond the bound: 200,000 setRate calls, 1,000 kept, the rest a RangeError, no other rate changed', () => {
    const { limiter } = setup(1_000)
    limiter.setRate('held', '2/s')
    expect(limiter.tryAcquire('held')).toBe(true)
    let refused = 0
    for (let i = 0; i < 200_000; i++) {
      try {
        limiter.setRate(`flood-${i}`, '1000/s')
      } catch (error) {
        expect(error).toBeInstanceOf(RangeError)
        expect((error as Error).message).toBe(
          'apply: 1001 rate overrides would exceed maxOverrides (1000); nothing was changed',
        )
        refused++
      }
    }
    expect(refused).toBe(200_000 - 999)
    const stats = limiter.stats()
    expect(stats.overrides).toBe(1_000)
    expect(Object.keys(limiter.rates().overrides)).toHaveLength(1_000)
    expect(limiter.rateOf('held').limit).toBe(2)
    expect(limiter.rateOf('flood-199999').limit).toBe(10) // refused: the default
    expect(limiter.rates().default.limit).toBe(10)
  })

  it('refuses a change whole when it would pass the bound, and counts a snapshot as what it leaves', () => {
    const { limiter } = setup(3)
    limiter.apply({ overrides: { a: '1/s', b: '2/s' } })
    expect(() => limiter.apply({ default: '5/s', overrides: { c: '3/s', d: '4/s' } })).toThrow(RangeError)
    expect(limiter.rates().default.limit).toBe(10) // nothing of it was applied
    expect(Object.keys(limiter.rates().overrides)).toEqual(['a', 'b'])
    // a snapshot replaces every override: three in the end is within the bound
    limiter.apply({ replace: true, overrides: { c: '3/s', d: '4/s', e: '5/s' } })
    expect(Object.keys(limiter.rates().overrides).sort()).toEqual(['c', 'd', 'e'])
    // changing an override in place, or clearing one to make room, is always allowed
    limiter.setRate('c', '30/s')
    limiter.apply({ overrides: { d: null, f: '6/s' } })
    expect(Object.keys(limiter.rates().overrides).sort()).toEqual(['c', 'e', 'f'])
    expect(() => limiter.setRate('g', '7/s')).toThrow(/exceed maxOverrides \(3\)/)
  })

  it('does not count a penalty as an override, and counts one made over a penalty', () => {
    const { limiter } = setup(1)
    limiter.tryAcquire('p')
    limiter.penalize('p', 1_000)
    limiter.setRate('o', '1/s')
    expect(() => limiter.setRate('p', '2/s')).toThrow(RangeError)
    limiter.setRate('o', null)
    limiter.setRate('p', '2/s')
    expect(limiter.stats().overrides).toBe(1)
  })

  it('refuses a maxOverrides that is not a whole number', () => {
    expect(() => new KeyedLimiter({ rate: '1/s', maxOverrides: 1.5 })).toThrow(/maxOverrides/)
  })
})
