import { describe, expect, it } from 'vitest'
import { parseRetryAfter, retryAfterMsOf } from '../../src/handlers/index.js'

const NOW_MS = Date.UTC(2026, 0, 15, 12, 0, 0) // Thu, 15 Jan 2026 12:00:00 GMT

describe('parseRetryAfter', () => {
  it.each([
    ['120', 120_000], // delay-seconds
    ['0', 0],
    [' 7 ', 7_000], // surrounding whitespace is tolerated
    ['Thu, 15 Jan 2026 12:00:30 GMT', 30_000], // IMF-fixdate 30 s ahead
    ['Thursday, 15-Jan-26 12:01:00 GMT', 60_000], // obsolete RFC 850 form
    ['Thu, 15 Jan 2026 11:59:00 GMT', 0], // in the past: now
  ])('reads %j as %d ms', (value, expectedMs) => {
    expect(parseRetryAfter(value, NOW_MS)).toBe(expectedMs)
  })

  it.each([
    [undefined],
    [''],
    ['-5'],
    ['1.5'],
    ['soon'],
    ['2026-01-15T12:00:30Z'],
    ['Thu Jan 15 12:01:00 2026'],
    [['5', '6']],
  ])('gives undefined for %j', (value) => {
    expect(parseRetryAfter(value as string | string[] | undefined, NOW_MS)).toBeUndefined()
  })
})

describe('retryAfterMsOf', () => {
  it('caps the delay at one hour by default, and at maxMs when given', () => {
    expect(retryAfterMsOf('86400', NOW_MS)).toBe(3_600_000)
    expect(retryAfterMsOf('Fri, 16 Jan 2026 12:00:00 GMT', NOW_MS)).toBe(3_600_000)
    expect(retryAfterMsOf('90', NOW_MS, { maxMs: 60_000 })).toBe(60_000)
    expect(retryAfterMsOf('30', NOW_MS, { maxMs: 60_000 })).toBe(30_000)
  })

  it('leaves a missing header to the caller', () => {
    expect(retryAfterMsOf(undefined, NOW_MS)).toBeUndefined()
  })
})
