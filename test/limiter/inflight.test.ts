import { describe, expect, it } from 'vitest'
import { InFlightTable } from '../../src/limiter/inflight.js'

describe('InFlightTable', () => {
  it('holds a merchant to its cap and lets the next job start as one finishes', () => {
    const table = new InFlightTable(2)
    expect(table.tryStart('slow')).toBe(true)
    expect(table.tryStart('slow')).toBe(true)
    expect(table.tryStart('slow')).toBe(false)
    expect(table.tryStart('quiet')).toBe(true)
    table.finish('slow')
    expect(table.tryStart('slow')).toBe(true)
    expect(table.count('slow')).toBe(2)
    expect(table.size).toBe(3)
    expect(table.merchants).toBe(2)
  })

  it('has no cap by default, and per-merchant overrides over the default', () => {
    const table = new InFlightTable()
    for (let i = 0; i < 1_000; i++) expect(table.tryStart('m')).toBe(true)
    table.setCap('*', 5)
    table.setCap('vip', 50)
    expect(table.capOf('other')).toBe(5)
    expect(table.capOf('vip')).toBe(50)
    table.setCap('vip', null)
    expect(table.capOf('vip')).toBe(5)
    expect(table.overrides()).toEqual({})
  })

  it('lowers a cap for jobs not yet started, never interrupting those in flight', () => {
    const table = new InFlightTable(10)
    for (let i = 0; i < 4; i++) table.tryStart('m')
    table.setCap('m', 2)
    expect(table.tryStart('m')).toBe(false)
    table.finish('m')
    table.finish('m')
    expect(table.tryStart('m')).toBe(false)
    table.finish('m')
    expect(table.tryStart('m')).toBe(true)
  })

  it('forgets a merchant with nothing in flight, and refuses an unmatched finish', () => {
    const table = new InFlightTable(3)
    table.tryStart('m')
    table.finish('m')
    expect(table.merchants).toBe(0)
    expect(() => table.finish('m')).toThrow(RangeError)
  })

  it.each([0, -1, 1.5, Number.NaN])('refuses the cap %s', (cap) => {
    expect(() => new InFlightTable(cap)).toThrow(TypeError)
    expect(() => new InFlightTable().setCap('m', cap)).toThrow(/maxInFlight: expected a whole number/)
  })
})

describe('InFlightTable.apply', () => {
  it('changes the default and overrides in one step; null restores the configured default', () => {
    const table = new InFlightTable(10)
    table.apply({ default: 3, overrides: { slow: 1, vip: 20 } })
    expect([table.capOf('other'), table.capOf('slow'), table.capOf('vip')]).toEqual([3, 1, 20])
    table.apply({ default: null, overrides: { vip: null } })
    expect([table.capOf('other'), table.capOf('slow'), table.capOf('vip')]).toEqual([10, 1, 10])
  })

  it('replace clears every override not listed', () => {
    const table = new InFlightTable()
    table.apply({ overrides: { a: 1, b: 2 } })
    table.apply({ overrides: { c: 3 }, replace: true })
    expect(table.overrides()).toEqual({ c: 3 })
  })

  it('changes nothing when one value is bad', () => {
    const table = new InFlightTable(4)
    expect(() => table.apply({ default: 2, overrides: { a: 1, b: 0 }, replace: true })).toThrow(TypeError)
    expect(table.capOf('x')).toBe(4)
    expect(table.overrides()).toEqual({})
  })
})
