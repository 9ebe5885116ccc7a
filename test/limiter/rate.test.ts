import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { formatRate, MAX_WINDOWS, parseRate, ratePerSec } from '../../src/limiter/rate.js'

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

describe('parseRate with several windows', () => {
  it.each([
    // the example: a per-second window with its own burst, and a daily quota
    [
      '20/s burst 40, 50000/day',
      {
        limit: 20,
        intervalMs: 1_000,
        burst: 40,
        extraWindows: [{ limit: 50_000, intervalMs: 86_400_000, burst: 50_000 }],
      },
    ],
    [
      '2/s burst 2,5/10s',
      { limit: 2, intervalMs: 1_000, burst: 2, extraWindows: [{ limit: 5, intervalMs: 10_000, burst: 5 }] },
    ],
    // an array of objects, one per window, bursts defaulted as for one
    [
      [
        { limit: 5, intervalMs: 250, burst: 2 },
        { limit: 100, intervalMs: 60_000 },
      ],
      { limit: 5, intervalMs: 250, burst: 2, extraWindows: [{ limit: 100, intervalMs: 60_000, burst: 100 }] },
    ],
    // an array of one is one window
    [[{ limit: 5, intervalMs: 250 }], { limit: 5, intervalMs: 250, burst: 5 }],
  ])('reads %j', (input, expected) => {
    expect(parseRate(input)).toEqual(expected)
  })

  it.each([
    // a trailing comma is an empty second window
    ['10/s,', /^parseRate: window 2 of 2: expected a rate like '1000\/min'.*got ""$/],
    ['10/s, 5/fortnight', /^parseRate: window 2 of 2: expected a rate like .*got " 5\/fortnight"$/],
    ['0/s, 10/min', /^parseRate: window 1 of 2: expected a finite limit above 0, got "0\/s"$/],
    // each window keeps the bounds of one: a burst above MAX_BURST in the third
    [
      '1/s, 10/min, 100/h burst 2000000000',
      /^parseRate: window 3 of 3: expected a burst from 1 to 1000000000/,
    ],
    ['1/s, 10/400days', /^parseRate: window 2 of 2: expected an interval of at most/],
    // two windows over one interval: only the tighter would ever bind
    ['10/s, 20/1000ms', /^parseRate: window 2 of 2 repeats the 1000 ms interval of window 1/],
    ['1/s, 2/min, 3/h, 4/day, 5/10s', /^parseRate: expected 1 to 4 windows, got 5/],
  ])('refuses %j naming the window', (input, message) => {
    expect(() => parseRate(input)).toThrow(TypeError)
    expect(() => parseRate(input)).toThrow(message)
  })

  it('refuses an empty array, a nested one and an object window out of bounds', () => {
    expect(() => parseRate([])).toThrow(/expected 1 to 4 windows, got 0/)
    expect(() => parseRate([[{ limit: 1, intervalMs: 1 }]] as never)).toThrow(/expected a string like/)
    expect(() =>
      parseRate([
        { limit: 1, intervalMs: 1000 },
        { limit: 1, intervalMs: 0 },
      ]),
    ).toThrow(/^parseRate: window 2 of 2: expected a finite interval above 0 ms/)
  })

  it('reads days', () => {
    expect(parseRate('50000/day')).toEqual({ limit: 50_000, intervalMs: 86_400_000, burst: 50_000 })
    expect(parseRate('1/2d')).toEqual({ limit: 1, intervalMs: 172_800_000, burst: 1 })
    expect(formatRate(parseRate('50000/days'))).toBe('50000/day')
  })

  it('gives the slowest window as the steady rate', () => {
    expect(ratePerSec(parseRate('20/s burst 40, 86400/day'))).toBe(1)
  })
})

describe('formatRate with several windows', () => {
  it.each(['20/s burst 40, 50000/day', '2/s, 5/10000ms', '1/250ms burst 3, 100/min, 1000/h, 10000/day'])(
    'round-trips %s',
    (text) => {
      expect(formatRate(parseRate(text))).toBe(text)
    },
  )

  const window = fc
    .record({
      limit: fc.integer({ min: 1, max: 1_000_000 }),
      intervalMs: fc.integer({ min: 1, max: 86_400_000 }),
      burst: fc.option(fc.integer({ min: 1, max: 1_000_000 }), { nil: undefined }),
    })
    .filter(({ limit, intervalMs }) => (limit * 1_000) / intervalMs <= 1e9)

  it('reads back what it writes, for any windows in bounds (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(window, { minLength: 1, maxLength: MAX_WINDOWS, selector: (w) => w.intervalMs }),
        (inputs) => {
          const rate = parseRate(inputs)
          expect(parseRate(formatRate(rate))).toEqual(rate)
        },
      ),
    )
  })
})
