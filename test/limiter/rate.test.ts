import { describe, expect, it } from 'vitest'
import { formatRate, parseRate, ratePerSec } from '../../src/limiter/rate.js'

describe('parseRate', () => {
  it.each([
    ['1000/min', { limit: 1000, intervalMs: 60_000, burst: 1000 }],
    ['10/s', { limit: 10, intervalMs: 1_000, burst: 10 }],
    ['10/sec', { limit: 10, intervalMs: 1_000, burst: 10 }],
    ['10/second', { limit: 10, intervalMs: 1_000, burst: 10 }],
    ['5/minute', { limit: 5, intervalMs: 60_000, burst: 5 }],
    ['3600/h', { limit: 3600, intervalMs: 3_600_000, burst: 3600 }],
    ['3600/hour', { limit: 3600, intervalMs: 3_600_000, burst: 3600 }],
    ['1200/min burst 10', { limit: 1200, intervalMs: 60_000, burst: 10 }],
    ['100/10s', { limit: 100, intervalMs: 10_000, burst: 100 }],
    [' 7 / MIN ', { limit: 7, intervalMs: 60_000, burst: 7 }],
    // a limit below one still lets one unit through: the bucket never holds less than one
    ['0.5/s', { limit: 0.5, intervalMs: 1_000, burst: 1 }],
    [
      { limit: 5, intervalMs: 250 },
      { limit: 5, intervalMs: 250, burst: 5 },
    ],
    [
      { limit: 5, intervalMs: 250, burst: 2 },
      { limit: 5, intervalMs: 250, burst: 2 },
    ],
  ])('reads %j', (input, expected) => {
    expect(parseRate(input)).toEqual(expected)
  })

  it.each([
    '',
    'fast',
    '1000',
    '1000/fortnight',
    '0/s', // a zero rate would never grant: rejected rather than waiting forever
    '-5/s',
    '10/s burst 0',
    '10/s burst',
    '10/0s',
  ])('refuses %j with a TypeError that quotes it', (input) => {
    expect(() => parseRate(input)).toThrow(TypeError)
    expect(() => parseRate(input)).toThrow(JSON.stringify(input))
  })

  it.each([
    { limit: Number.NaN, intervalMs: 1000 },
    { limit: Number.POSITIVE_INFINITY, intervalMs: 1000 }, // an infinite rate is not a rate limit
    { limit: 10, intervalMs: 0 },
    { limit: 10, intervalMs: 1000, burst: 0.5 },
    { limit: '10', intervalMs: 1000 },
  ])('refuses the object %j', (input) => {
    expect(() => parseRate(input as never)).toThrow(TypeError)
  })

  it('refuses something that is neither string nor object', () => {
    expect(() => parseRate(42 as never)).toThrow(/expected a string like '1000\/min'/)
  })
})

describe('formatRate', () => {
  it.each(['1000/min', '10/s', '3600/h', '1200/min burst 10', '100/10000ms'])('round-trips %s', (text) => {
    expect(formatRate(parseRate(text))).toBe(text)
    expect(parseRate(formatRate(parseRate(text)))).toEqual(parseRate(text))
  })

  it('gives the steady rate per second', () => {
    expect(ratePerSec(parseRate('1200/min'))).toBe(20)
  })
})
