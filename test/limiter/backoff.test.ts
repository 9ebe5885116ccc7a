import { describe, expect, it } from 'vitest'
import { backoffMs } from '../../src/limiter/backoff.js'

describe('backoffMs', () => {
  const none = { jitter: 0 }
  it('doubles from baseMs with each attempt and stops at maxMs', () => {
    const delays = [1, 2, 3, 4, 5, 6].map((attempt) =>
      backoffMs(attempt, { ...none, baseMs: 100, maxMs: 2_000 }),
    )
    expect(delays).toEqual([100, 200, 400, 800, 1_600, 2_000])
  })

  it('defaults to 1 s doubling up to 5 min', () => {
    expect(backoffMs(1, none)).toBe(1_000)
    expect(backoffMs(9, none)).toBe(256_000)
    expect(backoffMs(10, none)).toBe(300_000)
  })

  it('stays at maxMs for attempts far past the cap, without overflowing to NaN or Infinity', () => {
    expect(backoffMs(5_000, { ...none, baseMs: 1_000, maxMs: 60_000 })).toBe(60_000)
    expect(backoffMs(5_000, { ...none, baseMs: 0 })).toBe(0)
  })

  it('takes the jitter fraction off the delay at random', () => {
    const options = { baseMs: 1_000, maxMs: 60_000, jitter: 0.5 }
    expect(backoffMs(3, { ...options, random: () => 0 })).toBe(4_000) // no reduction
    expect(backoffMs(3, { ...options, random: () => 0.5 })).toBe(3_000)
    expect(backoffMs(3, { ...options, random: () => 0.999_999 })).toBe(2_000) // half off at most
    expect(backoffMs(3, { ...options, jitter: 1, random: () => 0.75 })).toBe(1_000) // full jitter
  })

  it('spreads many jobs that failed together over the jittered range', () => {
    const delays = Array.from({ length: 1_000 }, () => backoffMs(4, { baseMs: 1_000, jitter: 0.5 }))
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(4_000)
    expect(Math.max(...delays)).toBeLessThanOrEqual(8_000)
    expect(new Set(delays).size).toBeGreaterThan(100)
  })

  it.each([
    [0, {}],
    [1.5, {}],
    [1, { baseMs: -1 }],
    [1, { maxMs: Number.NaN }],
    [1, { jitter: 1.5 }],
  ])('throws TypeError on attempt %j with %j', (attempt, options) => {
    expect(() => backoffMs(attempt, options)).toThrow(TypeError)
  })
})
