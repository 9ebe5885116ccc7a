import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { type Granted, KeyedLimiter } from '../../src/limiter/limiter.js'
import { parseRate, type Rate } from '../../src/limiter/rate.js'

// Random schedules of decisions, cancels, rate changes, share changes, penalties and clock
// steps, at clock origins 0, 2^35 and 1.7e12 ms, checked against the rate guarantee of
// DESIGN.md: for every key and every window of length W, the work granted is at most
// burst + rate × W (one burst more per change inside the window), under a standing
// backlog at least rate × W − 1, and nothing is granted inside a Retry-After. Half the
// schedules run on a stepping clock with a monotonic witness beside it (as the wall clock
// has performance.now()), with forward steps, corrections and idle gaps, and are checked
// in true time: the witness's.

const KEYS = ['a', 'b'] as const
const RATES = [
  '10/s',
  '5/s burst 2',
  '1200/min burst 10',
  '100/min',
  '2/s',
  '1/s burst 3',
  '99000/s burst 200',
] as const
const ORIGINS = [0, 2 ** 35, 1.7e12] as const
const EPS = 1e-6

type Op =
  | { kind: 'advance'; ms: number }
  | { kind: 'back'; ms: number }
  /** jump steps the clock forward by `ms` that do not pass (the witness does not move). */
  | { kind: 'jump'; ms: number }
  /** correct sets the clock back on true time, undoing every step so far. */
  | { kind: 'correct' }
  | { kind: 'try'; key: string; cost: number }
  | { kind: 'reserve'; key: string; cost: number; times: number }
  | { kind: 'cancel'; pick: number; which: 'pending' | 'passed' | 'latest' }
  | { kind: 'setRate'; key: string; rate: string }
  | { kind: 'penalize'; key: string; retryAfterMs: number }
  | { kind: 'share'; instances: number }

// two keys and costs up to 3 keep buckets in debt and reservations behind one another:
// the schedules where cancels and changes meet, not only the easy ones
const key = fc.constantFrom(...KEYS)
// cost 0 stands for the key's whole bucket as it is now (a burst-sized job)
const cost = fc.oneof(fc.integer({ min: 1, max: 3 }), fc.constant(0))
const decisions: fc.WeightedArbitrary<Op>[] = [
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 120 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 3_000 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('back' as const), ms: fc.integer({ min: 1, max: 100 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('back' as const), ms: fc.integer({ min: 101, max: 5_000 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('jump' as const), ms: fc.integer({ min: 1, max: 5_000 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('jump' as const), ms: fc.integer({ min: 1, max: 99 }) }),
  },
  // an idle gap: true time passes with no reading
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('advance' as const),
      ms: fc.integer({ min: 101, max: 10_000 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'correct' as const }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('try' as const), key, cost }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('reserve' as const),
      key,
      cost,
      times: fc.integer({ min: 1, max: 8 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('cancel' as const),
      pick: fc.nat(),
      which: fc.constantFrom('pending' as const, 'passed' as const, 'latest' as const),
    }),
  },
]
const changes: fc.WeightedArbitrary<Op>[] = [
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('setRate' as const),
      key: fc.constantFrom('*', ...KEYS),
      rate: fc.constantFrom(...RATES),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('penalize' as const),
      key,
      retryAfterMs: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 3_000 })),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('share' as const), instances: fc.integer({ min: 1, max: 3 }) }),
  },
]

interface Grant {
  key: string
  /** atMs is when the work runs on the limiter's clock; trueMs in true time (see run). */
  atMs: number
  trueMs: number
  /** seq counts the decisions and penalties, in the order they were made. */
  seq: number
  cost: number
  reservation?: Granted
}

interface Block {
  key: string
  seq: number
  fromMs: number
  untilMs: number
}

interface Run {
  grants: Grant[]
  /** changeTimes are the true times of rate, share and penalty changes. */
  changeTimes: number[]
  ratesSeen: Rate[]
  blocks: Block[]
}

/**
 * run plays `ops` on a limiter. With `witnessed`, its clock steps beside a witness that
 * reads true time, and every time recorded is true time: the witness's reading when the
 * work was granted plus its delay. Without, the clock is all there is, and times are the
 * limiter's.
 */
function run(ops: Op[], defaultRate: string, originMs: number, witnessed = false): Run {
  const witness = witnessed ? new FakeClock(0) : undefined
  const clock = new FakeClock(originMs + 1_000, witness)
  const limiter = new KeyedLimiter({ rate: defaultRate, clock, horizonMs: 5_000 })
  const trueNow = () => witness?.now() ?? limiter.now()
  const grants: Grant[] = []
  const changeTimes: number[] = []
  const ratesSeen: Rate[] = [parseRate(defaultRate)]
  const blocks: Block[] = []
  let seq = 0
  const decide = (op: Extract<Op, { kind: 'try' | 'reserve' }>) => {
    const now = limiter.now()
    const cost = op.cost === 0 ? Math.max(1, Math.floor(limiter.inspect(op.key)?.capacity ?? 1)) : op.cost
    try {
      if (op.kind === 'try') {
        if (limiter.tryAcquire(op.key, cost)) {
          grants.push({ key: op.key, atMs: now, trueMs: trueNow(), seq: seq++, cost })
        }
        return
      }
      for (let i = 0; i < op.times; i++) {
        const reservation = limiter.reserve(op.key, cost)
        if (!reservation.ok) {
          expect(Number.isFinite(reservation.delayMs) && reservation.delayMs > 0).toBe(true)
          return
        }
        expect(reservation.delayMs).toBeGreaterThanOrEqual(0)
        expect(reservation.delayMs).toBeLessThanOrEqual(5_000)
        const { reservedAtMs, delayMs } = reservation
        const trueMs = witness === undefined ? reservedAtMs : witness.now() + delayMs
        grants.push({ key: op.key, atMs: reservedAtMs, trueMs, seq: seq++, cost, reservation })
      }
    } catch (error) {
      // a cost above this process's share of the burst is refused up front, never deferred forever
      expect(error).toBeInstanceOf(RangeError)
      expect(String(error)).toMatch(/above the bucket's capacity/)
    }
  }
  for (const op of ops) {
    switch (op.kind) {
      case 'advance':
        clock.advance(op.ms)
        witness?.advance(op.ms)
        break
      case 'back':
        clock.advance(-op.ms)
        break
      case 'jump':
        clock.advance(op.ms)
        break
      case 'correct':
        if (witness !== undefined) clock.set(originMs + 1_000 + witness.now())
        break
      case 'try':
      case 'reserve':
        decide(op)
        break
      case 'cancel': {
        // cancelled work does not run: before its time (it gives back what no later one
        // stands behind) and after it (it gives back nothing)
        const now = limiter.now()
        const held = grants.filter((g) => g.reservation)
        const pool =
          op.which === 'latest'
            ? held.slice(-1)
            : held.filter((g) => (op.which === 'pending' ? g.atMs > now : g.atMs <= now))
        const victim = pool[op.pick % Math.max(1, pool.length)]
        if (victim?.reservation) {
          victim.reservation.cancel()
          grants.splice(grants.indexOf(victim), 1)
        }
        break
      }
      case 'setRate':
        limiter.setRate(op.key, op.rate)
        ratesSeen.push(parseRate(op.rate))
        changeTimes.push(trueNow())
        break
      case 'penalize': {
        const now = trueNow()
        limiter.penalize(op.key, op.retryAfterMs)
        blocks.push({ key: op.key, seq: seq++, fromMs: now, untilMs: now + op.retryAfterMs })
        changeTimes.push(now)
        break
      }
      case 'share':
        limiter.setShare(op.instances)
        changeTimes.push(trueNow())
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
  return { grants, changeTimes, ratesSeen, blocks }
}

/**
 * slack is what the windows may exceed their bound by: float rounding, and the
 * resolution of the times a caller reads (reservedAtMs, now()), which far from 0 is
 * coarser than a unit at a fast rate: two steps of it at the fastest rate seen.
 */
function slack(originMs: number, rates: readonly Rate[]): number {
  const perMs = Math.max(...rates.map((r) => r.limit / r.intervalMs))
  return EPS + 4 * perMs * originMs * Number.EPSILON
}

/** worstWindow returns the largest excess of granted work over `bound(W, from, to)` for a key. */
function worstWindow(grants: Grant[], key: string, bound: (fromMs: number, toMs: number) => number): number {
  const mine = grants.filter((g) => g.key === key).sort((x, y) => x.trueMs - y.trueMs)
  let worst = Number.NEGATIVE_INFINITY
  for (let i = 0; i < mine.length; i++) {
    let work = 0
    for (let j = i; j < mine.length; j++) {
      work += mine[j]!.cost
      worst = Math.max(worst, work - bound(mine[i]!.trueMs, mine[j]!.trueMs))
    }
  }
  return worst
}

describe('KeyedLimiter properties', () => {
  it('never grants more than burst + rate × W in any window, whatever the clock does (with a witness, in true time)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...RATES),
        fc.constantFrom(...ORIGINS),
        fc.boolean(),
        fc.array(fc.oneof(...decisions), { maxLength: 150, size: 'max' }),
        (rateText, originMs, witnessed, ops) => {
          const rate = parseRate(rateText)
          const { grants } = run(ops, rateText, originMs, witnessed)
          for (const k of KEYS) {
            const excess = worstWindow(
              grants,
              k,
              (from, to) => rate.burst + (rate.limit * (to - from)) / rate.intervalMs,
            )
            expect(excess).toBeLessThanOrEqual(slack(originMs, [rate]))
          }
        },
      ),
      { numRuns: 300 },
    )
  })

  it('bounds windows that span rate, share and penalty changes by one burst per change, and grants nothing inside a Retry-After', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...RATES),
        fc.constantFrom(...ORIGINS),
        fc.boolean(),
        fc.array(fc.oneof(...decisions, ...changes), { maxLength: 150, size: 'max' }),
        (rateText, originMs, witnessed, ops) => {
          const { grants, changeTimes, ratesSeen, blocks } = run(ops, rateText, originMs, witnessed)
          const maxBurst = Math.max(...ratesSeen.map((r) => r.burst))
          const maxPerMs = Math.max(...ratesSeen.map((r) => r.limit / r.intervalMs))
          for (const k of KEYS) {
            const excess = worstWindow(grants, k, (from, to) => {
              const changesInside = changeTimes.filter((t) => t >= from && t <= to).length
              return (changesInside + 1) * maxBurst + maxPerMs * (to - from)
            })
            expect(excess).toBeLessThanOrEqual(slack(originMs, ratesSeen))
          }
          for (const block of blocks) {
            const inside = grants.filter(
              (g) =>
                g.key === block.key &&
                g.seq > block.seq &&
                g.trueMs >= block.fromMs &&
                g.trueMs < block.untilMs,
            )
            expect(inside).toEqual([])
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
        fc.constantFrom(...ORIGINS),
        fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 200 }) }),
            fc.record({ kind: fc.constant('back' as const), ms: fc.integer({ min: 1, max: 100 }) }),
            fc.record({ kind: fc.constant('back' as const), ms: fc.integer({ min: 101, max: 5_000 }) }),
          ),
          { minLength: 1, maxLength: 100, size: 'max' },
        ),
        (rateText, originMs, steps) => {
          const rate = parseRate(rateText)
          const clock = new FakeClock(originMs)
          const limiter = new KeyedLimiter({ rate: rateText, clock })
          // the backlog never empties: at every instant the worker takes all it may
          let granted = 0
          const drainNow = () => {
            let taken = 0
            while (limiter.tryAcquire('m')) taken++
            return taken
          }
          drainNow()
          const startMs = limiter.now()
          for (const step of steps) {
            // steps stay within one bucket's refill time, so the backlog is always standing
            const ms = Math.min(step.ms, (rate.burst * rate.intervalMs) / rate.limit)
            clock.advance(step.kind === 'advance' ? ms : -step.ms)
            granted += drainNow()
          }
          const endMs = limiter.now()
          expect(granted).toBeGreaterThanOrEqual((rate.limit * (endMs - startMs)) / rate.intervalMs - 1 - EPS)
        },
      ),
      { numRuns: 300 },
    )
  })
})
