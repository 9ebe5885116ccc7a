import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { type Granted, KeyedLimiter } from '../../src/limiter/limiter.js'
import { parseRate, type Rate, windowsOf } from '../../src/limiter/rate.js'

// Random schedules of decisions on lists of keys (a parent P over children A and B, an
// unset parent U over B, and A alone), cancels before and after their time, and rate
// changes on the parent and the children, and weights, checked against the rate guarantee for every
// key and every window of its rate: granted ≤ burst + rate × W, one burst more per change
// inside the window. A grant counts for every key of its list that limits (U only once it
// has a rate); a cancel before its time takes the work back from all of them (it does not
// run), one after it leaves it counted (it may have run).

const KEYS = ['P', 'A', 'B', 'U'] as const
const LISTS = [['P', 'A'], ['P', 'B'], ['U', 'B'], ['A'], ['P', 'U', 'A']] as const
const RATES = [
  '2/s burst 2, 5/10s',
  '5/s burst 3, 8/10s burst 4',
  '10/s, 20/10s burst 5',
  '4/s burst 2',
  '3/s',
  '1/s burst 3',
] as const
const EPS = 1e-6
const HORIZON_MS = 5_000

type Op =
  | { kind: 'advance'; ms: number }
  | { kind: 'try'; list: number; cost: number }
  | { kind: 'reserve'; list: number; costs: number[] }
  | { kind: 'cancel'; pick: number; which: 'pending' | 'passed' | 'latest' }
  | { kind: 'setRate'; key: (typeof KEYS)[number] | '*'; rate: string | null }
  | { kind: 'weight'; key: 'A' | 'B' | 'U'; weight: number | null }

const list = fc.integer({ min: 0, max: LISTS.length - 1 })
const cost = fc.integer({ min: 1, max: 2 })
const decisions: fc.WeightedArbitrary<Op>[] = [
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 150 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 4_000 }) }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('try' as const), list, cost }) },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('reserve' as const),
      list,
      costs: fc.array(cost, { minLength: 1, maxLength: 6 }),
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
      key: fc.constantFrom('*' as const, ...KEYS),
      rate: fc.constantFrom(...RATES),
    }),
  },
  // weights move the children's shares of P (and U's, a child of P in ['P', 'U', 'A'])
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('weight' as const),
      key: fc.constantFrom('A' as const, 'B' as const, 'U' as const),
      weight: fc.constantFrom(null, 0.5, 3),
    }),
  },
  // the unset parent U gains and loses a rate of its own
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('setRate' as const),
      key: fc.constant('U' as const),
      rate: fc.constantFrom(null, ...RATES),
    }),
  },
]

interface Grant {
  keys: string[]
  atMs: number
  cost: number
  reservation?: Granted
}

interface Run {
  grants: Grant[]
  /** changeTimes are the times of the rate changes on each key ('*' counts for all). */
  changeTimes: Map<string, number[]>
  /** ratesSeen are the rates each key was limited at, in force or set. */
  ratesSeen: Map<string, Rate[]>
}

function run(ops: Op[], defaultRate: string, parentRate: string): Run {
  const clock = new FakeClock(1_000)
  const limiter = new KeyedLimiter({ rate: defaultRate, clock, horizonMs: HORIZON_MS })
  limiter.setRate('P', parentRate)
  const grants: Grant[] = []
  const changeTimes = new Map<string, number[]>(KEYS.map((k) => [k, []]))
  const ratesSeen = new Map<string, Rate[]>(
    KEYS.map((k) => [k, [parseRate(k === 'P' ? parentRate : defaultRate)]]),
  )
  // the keys of a list that limit now: every outer key with a rate of its own, and the innermost
  const limiting = (keys: readonly string[]) =>
    keys.filter((k, i) => i === keys.length - 1 || limiter.rates().overrides[k] !== undefined)
  for (const op of ops) {
    switch (op.kind) {
      case 'advance':
        clock.advance(op.ms)
        break
      case 'try': {
        const keys = LISTS[op.list]!
        const now = limiter.now()
        if (limiter.tryAcquire(keys, op.cost)) grants.push({ keys: limiting(keys), atMs: now, cost: op.cost })
        break
      }
      case 'reserve':
        for (const c of op.costs) {
          const keys = LISTS[op.list]!
          const reservation = limiter.reserve(keys, c)
          if (!reservation.ok) {
            expect(reservation.delayMs).toBeGreaterThan(0)
            expect(keys).toContain(reservation.bindingKey)
            break
          }
          expect(reservation.delayMs).toBeLessThanOrEqual(HORIZON_MS)
          grants.push({ keys: limiting(keys), atMs: reservation.reservedAtMs, cost: c, reservation })
        }
        break
      case 'cancel': {
        const now = limiter.now()
        const held = grants.filter((g) => g.reservation)
        const pool =
          op.which === 'latest'
            ? held.slice(-1)
            : held.filter((g) => (op.which === 'pending' ? g.atMs > now : g.atMs <= now))
        const victim = pool[op.pick % Math.max(1, pool.length)]
        if (victim?.reservation) {
          victim.reservation.cancel()
          if (victim.atMs < now - 1) victim.reservation = undefined
          else grants.splice(grants.indexOf(victim), 1)
        }
        break
      }
      case 'weight':
        limiter.setWeight(op.key, op.weight)
        break
      case 'setRate': {
        limiter.setRate(op.key, op.rate)
        const now = limiter.now()
        for (const k of op.key === '*' ? KEYS : [op.key]) {
          changeTimes.get(k)!.push(now)
          if (op.rate !== null) ratesSeen.get(k)!.push(parseRate(op.rate))
        }
        break
      }
    }
  }
  return { grants, changeTimes, ratesSeen }
}

/** worstWindow is the largest excess of `key`'s granted work over `bound(from, to)`. */
function worstWindow(grants: Grant[], key: string, bound: (fromMs: number, toMs: number) => number): number {
  const mine = grants.filter((g) => g.keys.includes(key)).sort((x, y) => x.atMs - y.atMs)
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

/** windowBounds gives, per window interval among `rates`, the largest burst and rate per ms in it. */
function windowBounds(rates: readonly Rate[]): Array<{ burst: number; perMs: number }> {
  const intervals = new Set(rates.flatMap((rate) => windowsOf(rate).map((w) => w.intervalMs)))
  return [...intervals].map((intervalMs) => {
    const windows = rates.map(
      (rate) => windowsOf(rate).find((w) => w.intervalMs === intervalMs) ?? windowsOf(rate)[0]!,
    )
    return {
      burst: Math.max(...windows.map((w) => w.burst)),
      perMs: Math.max(...windows.map((w) => w.limit / w.intervalMs)),
    }
  })
}

describe('KeyedLimiter properties, lists of keys', () => {
  it('never grants a key more than burst + rate × W in any window of its rate, whatever lists it is asked in', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...RATES),
        fc.constantFrom(...RATES),
        fc.array(fc.oneof(...decisions), { maxLength: 150, size: 'max' }),
        (defaultRate, parentRate, ops) => {
          const { grants } = run(ops, defaultRate, parentRate)
          for (const key of ['P', 'A', 'B']) {
            const rate = parseRate(key === 'P' ? parentRate : defaultRate)
            for (const window of windowsOf(rate)) {
              const perMs = window.limit / window.intervalMs
              const excess = worstWindow(grants, key, (from, to) => window.burst + perMs * (to - from))
              expect(excess, `${key} ${window.limit}/${window.intervalMs}ms`).toBeLessThanOrEqual(EPS)
            }
          }
        },
      ),
      { numRuns: 400 },
    )
  })

  it('bounds every window across rate changes on parents and children by one burst per change', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...RATES),
        fc.constantFrom(...RATES),
        fc.array(fc.oneof(...decisions, ...changes), { maxLength: 150, size: 'max' }),
        (defaultRate, parentRate, ops) => {
          const { grants, changeTimes, ratesSeen } = run(ops, defaultRate, parentRate)
          for (const key of KEYS) {
            const times = changeTimes.get(key)!
            for (const bound of windowBounds(ratesSeen.get(key)!)) {
              const excess = worstWindow(grants, key, (from, to) => {
                const inside = times.filter((t) => t >= from && t <= to).length
                return (inside + 1) * bound.burst + bound.perMs * (to - from)
              })
              expect(excess, key).toBeLessThanOrEqual(EPS)
            }
          }
        },
      ),
      { numRuns: 400 },
    )
  })
})
