import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { type Granted, KeyedLimiter } from '../../src/limiter/limiter.js'
import { parseRate, type Rate } from '../../src/limiter/rate.js'

// Random schedules of decisions, cancels, rate changes and clock steps, checked against
// the rate guarantee of DESIGN.md: for every key and every window of length W, the work
// granted is at most burst + rate × W, and under a standing backlog at least rate × W − 1.

const KEYS = ['a', 'b', 'c'] as const
const RATES = ['10/s', '5/s burst 2', '1200/min burst 10', '100/min', '2/s'] as const
const EPS = 1e-6

type Op =
  | { kind: 'advance'; ms: number }
  | { kind: 'back'; ms: number }
  | { kind: 'try'; key: string; cost: number }
  | { kind: 'reserve'; key: string; cost: number }
  | { kind: 'cancel'; pick: number }
  | { kind: 'setRate'; key: string; rate: string }
  | { kind: 'penalize'; key: string; retryAfterMs: number }
  | { kind: 'share'; instances: number }

const key = fc.constantFrom(...KEYS)
const cost = fc.integer({ min: 1, max: 2 })
const decisions: fc.Arbitrary<Op>[] = [
  fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 400 }) }),
  fc.record({ kind: fc.constant('back' as const), ms: fc.integer({ min: 1, max: 100 }) }),
  fc.record({ kind: fc.constant('back' as const), ms: fc.integer({ min: 101, max: 5_000 }) }),
  fc.record({ kind: fc.constant('try' as const), key, cost }),
  fc.record({ kind: fc.constant('reserve' as const), key, cost }),
  fc.record({ kind: fc.constant('cancel' as const), pick: fc.nat() }),
]
const changes: fc.Arbitrary<Op>[] = [
  fc.record({
    kind: fc.constant('setRate' as const),
    key: fc.constantFrom('*', ...KEYS),
    rate: fc.constantFrom(...RATES),
  }),
  fc.record({
    kind: fc.constant('penalize' as const),
    key,
    retryAfterMs: fc.integer({ min: 0, max: 2_000 }),
  }),
  fc.record({ kind: fc.constant('share' as const), instances: fc.integer({ min: 1, max: 3 }) }),
]

interface Grant {
  key: string
  atMs: number
  cost: number
  reservation?: Granted
}

interface Run {
  grants: Grant[]
  /** changeTimes are the guarded times of rate, share and penalty changes. */
  changeTimes: number[]
  ratesSeen: Rate[]
}

function run(ops: Op[], defaultRate: string): Run {
  const clock = new FakeClock(1_000)
  const limiter = new KeyedLimiter({ rate: defaultRate, clock, horizonMs: 5_000 })
  const grants: Grant[] = []
  const changeTimes: number[] = []
  const ratesSeen: Rate[] = [parseRate(defaultRate)]
  for (const op of ops) {
    switch (op.kind) {
      case 'advance':
        clock.advance(op.ms)
        break
      case 'back':
        clock.advance(-op.ms)
        break
      case 'try':
        if (limiter.tryAcquire(op.key, op.cost))
          grants.push({ key: op.key, atMs: limiter.now(), cost: op.cost })
        break
      case 'reserve': {
        const reservation = limiter.reserve(op.key, op.cost)
        if (reservation.ok) {
          expect(reservation.delayMs).toBeGreaterThanOrEqual(0)
          expect(reservation.delayMs).toBeLessThanOrEqual(5_000)
          grants.push({ key: op.key, atMs: reservation.reservedAtMs, cost: op.cost, reservation })
        } else {
          expect(Number.isFinite(reservation.delayMs) && reservation.delayMs > 0).toBe(true)
        }
        break
      }
      case 'cancel': {
        // only work that has not run yet may be cancelled
        const pending = grants.filter((g) => g.reservation && g.atMs > limiter.now())
        const victim = pending[op.pick % Math.max(1, pending.length)]
        if (victim?.reservation) {
          victim.reservation.cancel()
          grants.splice(grants.indexOf(victim), 1)
        }
        break
      }
      case 'setRate':
        limiter.setRate(op.key, op.rate)
        ratesSeen.push(parseRate(op.rate))
        changeTimes.push(limiter.now())
        break
      case 'penalize':
        limiter.penalize(op.key, op.retryAfterMs)
        changeTimes.push(limiter.now())
        break
      case 'share':
        limiter.setShare(op.instances)
        changeTimes.push(limiter.now())
        break
    }
    for (const k of KEYS) {
      const state = limiter.inspect(k)
      if (state === undefined) continue
      expect(Number.isFinite(state.tokens)).toBe(true)
      expect(state.tokens).toBeLessThanOrEqual(state.capacity + EPS)
      expect(state.capacity).toBeGreaterThanOrEqual(1)
      expect(Number.isFinite(state.rate.limit) && state.rate.limit > 0).toBe(true)
    }
  }
  return { grants, changeTimes, ratesSeen }
}

/** worstWindow returns the largest excess of granted work over `bound(W, from, to)` for a key. */
function worstWindow(grants: Grant[], key: string, bound: (fromMs: number, toMs: number) => number): number {
  const mine = grants.filter((g) => g.key === key).sort((x, y) => x.atMs - y.atMs)
  let worst = Number.NEGATIVE_INFINITY
  for (let i = 0; i < mine.length; i++) {
    let work = 0
    for (let j = i; j < mine.length; j++) {
      work += mine[j]!.cost
      worst = Math.max(worst, work - bound(mine[i]!.atMs, mine[j]!.atMs))
    }
  }
  return worst
}

describe('KeyedLimiter properties', () => {
  it('never grants more than burst + rate × W in any window, whatever the clock does', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...RATES),
        fc.array(fc.oneof(...decisions), { maxLength: 150 }),
        (rateText, ops) => {
          const rate = parseRate(rateText)
          const { grants } = run(ops, rateText)
          for (const k of KEYS) {
            const excess = worstWindow(
              grants,
              k,
              (from, to) => rate.burst + (rate.limit * (to - from)) / rate.intervalMs,
            )
            expect(excess).toBeLessThanOrEqual(EPS)
          }
        },
      ),
      { numRuns: 300 },
    )
  })

  it('bounds windows that span rate, share and penalty changes by one burst per change', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...RATES),
        fc.array(fc.oneof(...decisions, ...changes), { maxLength: 150 }),
        (rateText, ops) => {
          const { grants, changeTimes, ratesSeen } = run(ops, rateText)
          const maxBurst = Math.max(...ratesSeen.map((r) => r.burst))
          const maxPerMs = Math.max(...ratesSeen.map((r) => r.limit / r.intervalMs))
          for (const k of KEYS) {
            const excess = worstWindow(grants, k, (from, to) => {
              const changesInside = changeTimes.filter((t) => t >= from && t <= to).length
              return (changesInside + 1) * maxBurst + maxPerMs * (to - from)
            })
            expect(excess).toBeLessThanOrEqual(EPS)
          }
        },
      ),
      { numRuns: 300 },
    )
  })

  it('grants at least rate × W − 1 under a standing backlog', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...RATES),
        fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 200 }) }),
            fc.record({ kind: fc.constant('back' as const), ms: fc.integer({ min: 1, max: 100 }) }),
            fc.record({ kind: fc.constant('back' as const), ms: fc.integer({ min: 101, max: 5_000 }) }),
          ),
          { minLength: 1, maxLength: 100 },
        ),
        (rateText, steps) => {
          const rate = parseRate(rateText)
          const clock = new FakeClock(0)
          const limiter = new KeyedLimiter({ rate: rateText, clock })
          // the backlog never empties: at every instant the worker takes all it may
          const times: number[] = []
          const drainNow = () => {
            while (limiter.tryAcquire('m')) times.push(limiter.now())
          }
          drainNow()
          const startMs = limiter.now()
          for (const step of steps) {
            // steps stay within one bucket's refill time, so the backlog is always standing
            const ms = Math.min(step.ms, (rate.burst * rate.intervalMs) / rate.limit)
            clock.advance(step.kind === 'advance' ? ms : -step.ms)
            drainNow()
          }
          const endMs = limiter.now()
          const granted = times.filter((t) => t > startMs).length
          expect(granted).toBeGreaterThanOrEqual((rate.limit * (endMs - startMs)) / rate.intervalMs - 1 - EPS)
        },
      ),
      { numRuns: 300 },
    )
  })
})
