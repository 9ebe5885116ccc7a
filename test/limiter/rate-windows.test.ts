import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  formatRate,
  formatRateWindows,
  MAX_WINDOWS,
  parseRate,
  parseRateWindows,
  type Rate,
} from '../../src/limiter/rate.js'

describe('parseRateWindows', () => {
  it.each([
    // one window reads as parseRate reads it
    ['10/s', [{ limit: 10, intervalMs: 1_000, burst: 10 }]],
    // the example: a per-second window with its own burst, and a daily quota
    [
      '20/s burst 40, 50000/day',
      [
        { limit: 20, intervalMs: 1_000, burst: 40 },
        { limit: 50_000, intervalMs: 86_400_000, burst: 50_000 },
      ],
    ],
    [
      '2/s burst 2,5/10s',
      [
        { limit: 2, intervalMs: 1_000, burst: 2 },
        { limit: 5, intervalMs: 10_000, burst: 5 },
      ],
    ],
    // objects, one or an array of them, default their burst as parseRate does
    [{ limit: 5, intervalMs: 250 }, [{ limit: 5, intervalMs: 250, burst: 5 }]],
    [
      [{ limit: 5, intervalMs: 250, burst: 2 }, '100/min'],
      [
        { limit: 5, intervalMs: 250, burst: 2 },
        { limit: 100, intervalMs: 60_000, burst: 100 },
      ],
    ],
  ])('reads %j', (input, expected) => {
    expect(parseRateWindows(input)).toEqual(expected)
  })

  it.each([
    // a trailing comma is an empty second window
    ['10/s,', /^parseRateWindows: window 2 of 2: expected a rate like '1000\/min'.*got ""$/],
    ['10/s, 5/fortnight', /^parseRateWindows: window 2 of 2: expected a rate like .*got " 5\/fortnight"$/],
    ['0/s, 10/min', /^parseRateWindows: window 1 of 2: expected a finite limit above 0, got "0\/s"$/],
    // each window keeps parseRate's bounds: a burst above MAX_BURST in the third window
    [
      '1/s, 10/min, 100/h burst 2000000000',
      /^parseRateWindows: window 3 of 3: expected a burst from 1 to 1000000000/,
    ],
    ['1/s, 10/400days', /^parseRateWindows: window 2 of 2: expected an interval of at most/],
    // two windows over one interval: only the tighter would ever bind
    ['10/s, 20/1000ms', /^parseRateWindows: window 2 of 2 repeats the 1000 ms interval of window 1/],
    ['1/s, 2/min, 3/h, 4/day, 5/10s', /^parseRateWindows: expected 1 to 4 windows, got 5/],
  ])('refuses %j naming the window', (input, message) => {
    expect(() => parseRateWindows(input)).toThrow(TypeError)
    expect(() => parseRateWindows(input)).toThrow(message)
  })

  it('refuses an empty array and an object window out of bounds', () => {
    expect(() => parseRateWindows([])).toThrow(/expected 1 to 4 windows, got 0/)
    expect(() => parseRateWindows(['1/s', { limit: 1, intervalMs: 0 }])).toThrow(
      /^parseRateWindows: window 2 of 2: expected a finite interval above 0 ms/,
    )
  })
})

describe('parseRate with several windows', () => {
  // Before parseRateWindows, '20/s, 50000/day' was refused as a malformed rate; it must stay
  // refused by parseRate (and so by the config, the control schema and throttlectl) until
  // the limiter enforces every window, rather than being read as its first window alone.
  it.each(['20/s burst 40, 50000/day', '10/s,'])(
    'refuses %j, saying several windows are not enforced',
    (input) => {
      expect(() => parseRate(input)).toThrow(
        `parseRate: expected one window per rate (several windows joined by commas are not enforced yet), got ${JSON.stringify(input)}`,
      )
    },
  )

  it('refuses an array of windows', () => {
    expect(() => parseRate([{ limit: 1, intervalMs: 1000 }] as never)).toThrow(/expected one window/)
  })

  it('reads days', () => {
    expect(parseRate('50000/day')).toEqual({ limit: 50_000, intervalMs: 86_400_000, burst: 50_000 })
    expect(parseRate('1/2d')).toEqual({ limit: 1, intervalMs: 172_800_000, burst: 1 })
    expect(formatRate(parseRate('50000/days'))).toBe('50000/day')
  })
})

describe('formatRateWindows', () => {
  it.each([
    '20/s burst 40, 50000/day',
    '2/s, 5/10000ms',
    '10/s',
    '1/250ms burst 3, 100/min, 1000/h, 10000/day',
  ])('round-trips %s', (text) => {
    expect(formatRateWindows(parseRateWindows(text))).toBe(text)
  })

  const window = fc
    .record({
      limit: fc.integer({ min: 1, max: 1_000_000 }),
      intervalMs: fc.integer({ min: 1, max: 86_400_000 }),
      burst: fc.option(fc.integer({ min: 1, max: 1_000_000 }), { nil: undefined }),
    })
    .filter(({ limit, intervalMs }) => (limit * 1_000) / intervalMs <= 1e9)
  const windows = fc.uniqueArray(window, {
    minLength: 1,
    maxLength: MAX_WINDOWS,
    selector: (w) => w.intervalMs,
  })

  it('reads back what it writes, for any windows in bounds (fast-check)', () => {
    fc.assert(
      fc.property(windows, (inputs) => {
        const rates: readonly Rate[] = parseRateWindows(inputs)
        expect(parseRateWindows(formatRateWindows(rates))).toEqual(rates)
      }),
    )
  })
})
