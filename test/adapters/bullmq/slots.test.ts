import { describe, expect, it } from 'vitest'
import { fairShareOf, takeSlot } from '../../../src/adapters/bullmq/slots.js'
import { InFlightTable } from '../../../src/limiter/index.js'

describe('takeSlot', () => {
  it('refuses a merchant at its cap without counting it, and counts one that starts', () => {
    const table = new InFlightTable()
    table.setCap('slow', 2)
    expect(takeSlot(table, 'slow', 0, 50)).toBe('start')
    expect(takeSlot(table, 'slow', 1, 50)).toBe('start')
    expect(takeSlot(table, 'slow', 2, 50)).toBe('at-cap')
    expect(table.count('slow')).toBe(2)
  })

  it('parks a merchant over its fair share only when the job would take the last free slot', () => {
    const table = new InFlightTable()
    for (let i = 0; i < 7; i++) table.tryStart('hot')
    table.tryStart('quiet')
    // 8 of 10 slots held, 2 merchants: fair share ceil(10 / 2) = 5; hot holds 7.
    expect(takeSlot(table, 'hot', 8, 10)).toBe('start')
    expect(takeSlot(table, 'hot', 9, 10)).toBe('over-share')
    // A merchant with nothing in flight always gets the slot.
    expect(takeSlot(table, 'new', 9, 10)).toBe('start')
    // quiet holds 1, under its share.
    expect(takeSlot(table, 'quiet', 10, 10)).toBe('start')
  })

  it('without a concurrency, never parks for fairness', () => {
    const table = new InFlightTable()
    for (let i = 0; i < 100; i++) expect(takeSlot(table, 'hot', i, Number.POSITIVE_INFINITY)).toBe('start')
  })
})

describe('fairShareOf', () => {
  it.each([
    [50, 0, 50],
    [50, 1, 50],
    [50, 3, 17],
    [10, 20, 1],
  ])('concurrency %i over %i merchants: %i', (concurrency, merchants, share) => {
    expect(fairShareOf(concurrency, merchants)).toBe(share)
  })
})
