import { describe, expect, it } from 'vitest'
import { FakeClock, type Granted, KeyedLimiter, type Reservation } from '../../src/limiter/index.js'

// Attacks that broke the cancel bound (found 2026-12-04 by an adversarial pass with
// size: 'max' schedules; each failed on cb0c103). Kept as regression tests.

function granted(reservation: Reservation): Granted {
  if (!reservation.ok) throw new Error(`expected a grant, got ${reservation.reason}`)
  return reservation
}

/** worstExcess is the largest excess of `runs` ([atMs, cost]) over burst + perMs × W in any window. */
function worstExcess(runs: Array<[number, number]>, burst: number, perMs: number): number {
  const sorted = [...runs].sort((x, y) => x[0] - y[0])
  let worst = Number.NEGATIVE_INFINITY
  for (let i = 0; i < sorted.length; i++) {
    let work = 0
    for (let j = i; j < sorted.length; j++) {
      work += sorted[j]![1]
      worst = Math.max(worst, work - burst - perMs * (sorted[j]![0] - sorted[i]![0]))
    }
  }
  return worst
}

describe('cancel never returns more than a reservation still holds', () => {
  // refund used to give back span − (time reserved behind it): when that is above 0 and below
  // the span, the frontier moved back over the time the later reservations still occupy, and
  // new work was scheduled into it. Now only the latest reservation gives anything back.
  it('cancelling a middle reservation, then an earlier one, double-books the time of the one behind them (10/s burst 10)', () => {
    const limiter = new KeyedLimiter({ rate: '10/s', clock: new FakeClock(0) })
    expect(limiter.tryAcquire('m', 10)).toBe(true) // 10 run at 0
    const r1 = granted(limiter.reserve('m', 10)) // at 1000
    const r2 = granted(limiter.reserve('m', 10)) // at 2000
    const r3 = granted(limiter.reserve('m', 1)) // at 2100, stands
    expect([r1.reservedAtMs, r2.reservedAtMs, r3.reservedAtMs]).toEqual([1_000, 2_000, 2_100])
    r2.cancel()
    r1.cancel()
    const r4 = granted(limiter.reserve('m', 10)) // was at 1400
    const r5 = granted(limiter.reserve('m', 10)) // was at 2400
    const runs: Array<[number, number]> = [
      [0, 10],
      [r3.reservedAtMs, 1],
      [r4.reservedAtMs, 10],
      [r5.reservedAtMs, 10],
    ]
    // was: window [1400, 2400] runs 10 + 1 + 10 = 21 units, the bound is 10 + 10/s × 1 s = 20
    expect(worstExcess(runs, 10, 0.01)).toBeLessThanOrEqual(1e-6)
  })

  it('cancelling the oldest reservation after a rate raise gives back old-rate time the later ones occupy (1/s burst 3 to 10/s)', () => {
    const limiter = new KeyedLimiter({ rate: '1/s burst 3', clock: new FakeClock(0) })
    expect(limiter.tryAcquire('m', 3)).toBe(true)
    const r1 = granted(limiter.reserve('m', 3)) // at 3000
    limiter.setRate('*', '10/s') // burst 10; the debt is kept in time
    const r2 = granted(limiter.reserve('m', 10)) // at 4000
    const r3 = granted(limiter.reserve('m', 10)) // at 5000
    r1.cancel()
    const r4 = granted(limiter.reserve('m', 1)) // was at 4100
    const runs: Array<[number, number]> = [
      [r2.reservedAtMs, 10],
      [r3.reservedAtMs, 10],
      [r4.reservedAtMs, 1],
    ]
    // no change inside [4000, 5000]: the bound is 10 + 10/s × 1 s = 20; was 21
    expect(worstExcess(runs, 10, 0.01)).toBeLessThanOrEqual(1e-6)
  })
})
