import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  FakeClock,
  type Granted,
  KeyedLimiter,
  parseRate,
  type Reservation,
} from '../../src/limiter/index.js'

// Attacks on "cancel() never returns more than a reservation still holds" and promise (2),
// rate changes carrying tokens over without dropping work: cancels before and after their
// time, out of order, across cuts and raises of the rate made while the key is in debt.

function granted(reservation: Reservation): Granted {
  if (!reservation.ok) throw new Error(`expected a grant, got ${reservation.reason}`)
  return reservation
}

interface Run {
  at: number
  cost: number
  reservation?: Granted
}

/** worst is the largest excess of the runs over bound(from, to) in any window. */
function worst(runs: Run[], bound: (from: number, to: number) => number): number {
  const sorted = [...runs].sort((a, b) => a.at - b.at)
  let excess = Number.NEGATIVE_INFINITY
  for (let i = 0; i < sorted.length; i++) {
    let work = 0
    for (let j = i; j < sorted.length; j++) {
      work += sorted[j]!.cost
      excess = Math.max(excess, work - bound(sorted[i]!.at, sorted[j]!.at))
    }
  }
  return excess
}

describe('cancel never returns more than a reservation still holds', () => {
  it('cancels out of order (oldest first) give back nothing a later reservation stands behind', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '10/s burst 1', clock })
    const rs = Array.from({ length: 5 }, () => granted(limiter.reserve('m', 1)))
    expect(rs.map((r) => r.delayMs)).toEqual([0, 100, 200, 300, 400])
    for (const r of rs.slice(0, 4)) expect(r.cancel()).toBe(true)
    // the last still stands at 400 ms: nothing may be scheduled before 500 ms
    expect(granted(limiter.reserve('m', 1)).delayMs).toBeGreaterThanOrEqual(500 - 1e-9)
    expect(rs[0]!.cancel()).toBe(false)
  })

  it('cancelling the newest first gives every slot back, one at a time, never above the burst', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '10/s burst 3', clock })
    const rs = Array.from({ length: 6 }, () => granted(limiter.reserve('m', 1)))
    for (const r of rs.reverse()) r.cancel()
    expect(limiter.inspect('m')?.tokens).toBeCloseTo(3, 9)
    let taken = 0
    while (limiter.tryAcquire('m')) taken++
    expect(taken).toBe(3)
  })

  it('a cancel after its time has passed gives nothing back, even across a rate raise', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '1/s burst 5', clock })
    const big = granted(limiter.reserve('m', 5))
    expect(big.delayMs).toBe(0)
    clock.set(10)
    limiter.setRate('*', '100/s burst 5')
    big.cancel()
    // the bucket refills from empty at t = 0 under the raised rate: 10 ms × 100/s = 1 unit
    expect(limiter.inspect('m')!.tokens).toBeLessThanOrEqual(1 + 1e-6)
  })

  it('cut, raise, cut inside one window while in debt, with cancels in between, stays within one burst per change', () => {
    const clock = new FakeClock(1.7e12)
    const limiter = new KeyedLimiter({ rate: '100/s burst 20', clock, horizonMs: 60_000 })
    const runs: Run[] = []
    const reserve = (cost: number) => {
      const r = limiter.reserve('m', cost)
      if (r.ok) runs.push({ at: r.reservedAtMs, cost, reservation: r })
    }
    const cancel = (index: number) => {
      const run = runs[index]
      if (run?.reservation?.cancel()) runs.splice(index, 1)
    }
    for (let i = 0; i < 30; i++) reserve(1) // 10 in debt
    limiter.setRate('*', '5/s burst 2') // cut
    clock.advance(50)
    cancel(runs.length - 1)
    cancel(3)
    for (let i = 0; i < 5; i++) reserve(1)
    limiter.setRate('*', '1000/s burst 50') // raise
    cancel(runs.length - 2)
    for (let i = 0; i < 20; i++) reserve(2)
    clock.advance(30)
    limiter.setRate('*', '2/s burst 1') // cut
    cancel(0)
    cancel(runs.length - 1)
    for (let i = 0; i < 5; i++) reserve(1)
    const excess = worst(runs, (from, to) => 4 * 50 + (1000 * (to - from)) / 1000)
    expect(excess).toBeLessThanOrEqual(1e-6)
    // no reservation handed out before a cut is moved or dropped by it
    for (const run of runs) expect(Number.isFinite(run.at)).toBe(true)
  })
})

const RATES = ['10/s', '7/s burst 2', '1/min burst 3', '99000/s burst 200', '1000/s burst 1'] as const
describe('cancels and rate changes in debt, at random (fast-check)', () => {
  it('the reservations that stand never exceed one burst per change + the fastest rate × W', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...RATES),
        fc.constantFrom(0, 2 ** 35, 1.7e12),
        fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 400 }) }),
            fc.record({ kind: fc.constant('reserve' as const), cost: fc.constantFrom(0.5, 1, 1, 2) }),
            fc.record({ kind: fc.constant('cancel' as const), pick: fc.nat() }),
            fc.record({
              kind: fc.constant('rate' as const),
              rate: fc.constantFrom(...RATES),
              inheritance: fc.constantFrom('proportional' as const, 'as-is' as const, 'reset' as const),
            }),
          ),
          { maxLength: 80, size: 'max' },
        ),
        (initial, origin, ops) => {
          const clock = new FakeClock(origin)
          const limiter = new KeyedLimiter({ rate: initial, clock, horizonMs: 120_000 })
          const runs: Run[] = []
          const changes: number[] = []
          const seen = [parseRate(initial)]
          for (const op of ops) {
            if (op.kind === 'advance') clock.advance(op.ms)
            else if (op.kind === 'reserve') {
              const r = limiter.reserve('m', Math.min(op.cost, limiter.inspect('m')?.capacity ?? 1))
              if (r.ok) runs.push({ at: r.reservedAtMs, cost: r.cost, reservation: r })
            } else if (op.kind === 'cancel') {
              const index = op.pick % Math.max(1, runs.length)
              const run = runs[index]
              // cancel only work that has not run: a reservation whose time has passed ran
              if (run && run.at > limiter.now() && run.reservation!.cancel()) runs.splice(index, 1)
            } else {
              limiter.setRate('*', op.rate, { inheritance: op.inheritance })
              seen.push(parseRate(op.rate))
              changes.push(limiter.now())
            }
          }
          const maxBurst = Math.max(...seen.map((r) => r.burst))
          const maxPerMs = Math.max(...seen.map((r) => r.limit / r.intervalMs))
          const slack = 1e-6 + 4 * maxPerMs * origin * Number.EPSILON
          const excess = worst(runs, (from, to) => {
            const inside = changes.filter((t) => t >= from && t <= to).length
            return (inside + 1) * maxBurst + maxPerMs * (to - from)
          })
          expect(excess).toBeLessThanOrEqual(slack)
        },
      ),
      { numRuns: 300 },
    )
  })
})
