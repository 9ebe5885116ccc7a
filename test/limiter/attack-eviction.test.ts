import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FakeClock, KeyedLimiter, parseRate } from '../../src/limiter/index.js'

// Attacks on promise (5): a hard bound on keys, eviction never hands out extra tokens
// (a key in debt, partly drawn or inside a Retry-After is never evicted, so it cannot come
// back with a fresh full bucket earlier than it would have had one).

function drain(limiter: KeyedLimiter, key: string): number {
  let taken = 0
  while (limiter.tryAcquire(key)) taken++
  return taken
}

describe('eviction never hands out extra tokens (promise 5)', () => {
  it('a key in debt is never evicted for a new one; the new key is told when room comes', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '10/s', clock, maxKeys: 1 })
    for (let i = 0; i < 15; i++) expect(limiter.reserve('debt', 1).ok).toBe(true) // 5 in debt: full at 1.5 s
    const refused = limiter.reserve('new', 1)
    expect(refused).toMatchObject({ ok: false, reason: 'table-full' })
    expect(refused.delayMs).toBeCloseTo(1_500, 6)
    clock.set(1_499)
    expect(limiter.tryAcquire('new')).toBe(false)
    expect(limiter.inspect('debt')).toBeDefined()
    clock.set(1_500)
    expect(limiter.tryAcquire('new')).toBe(true)
  })

  it('a partly drawn bucket is never evicted: coming back full would hand out what it had spent', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '10/s burst 10', clock, maxKeys: 1 })
    expect(limiter.tryAcquire('a')).toBe(true) // 9 left, full again at 100 ms
    clock.set(99)
    expect(limiter.tryAcquire('b')).toBe(false)
    expect(drain(limiter, 'a')).toBe(9)
  })

  it('a key inside its Retry-After is never evicted, however many new keys press on the table', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '10/s', clock, maxKeys: 4 })
    limiter.penalize('blocked', 20_000)
    for (let t = 0; t < 20_000; t += 250) {
      clock.set(t)
      for (let i = 0; i < 20; i++) limiter.tryAcquire(`churn-${t}-${i}`)
      expect(limiter.tryAcquire('blocked')).toBe(false)
    }
    expect(limiter.stats().keys).toBeLessThanOrEqual(4)
    expect(limiter.stats().evictions).toBeGreaterThan(100)
    clock.set(20_000)
    expect(limiter.tryAcquire('blocked')).toBe(true)
  })

  it('a key with its own rate, evicted once full, comes back at its own rate, not the default', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '100/s', clock, maxKeys: 1 })
    limiter.setRate('slow', '1/s burst 2')
    expect(drain(limiter, 'slow')).toBe(2)
    clock.set(2_000)
    expect(limiter.tryAcquire('other')).toBe(true) // evicts 'slow', full
    expect(limiter.inspect('slow')).toBeUndefined()
    clock.set(3_000)
    expect(drain(limiter, 'slow')).toBe(2)
    clock.set(3_500)
    expect(drain(limiter, 'slow')).toBe(0)
  })

  it('holds at most maxKeys keys among 50,000 distinct ones (unicode, 128-character, look-alike)', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '10/s', clock, maxKeys: 1_000 })
    const shapes = [
      (i: number) => `商户-${i}-😀`,
      (i: number) => `${i}`.padEnd(128, 'x'),
      (i: number) => `m${i}\u0000`,
    ]
    for (let i = 0; i < 50_000; i++) {
      if (i % 500 === 0) clock.advance(200)
      limiter.tryAcquire(shapes[i % 3]!(i))
      expect(limiter.size).toBeLessThanOrEqual(1_000)
    }
    const stats = limiter.stats()
    expect(stats.keys).toBeLessThanOrEqual(1_000)
    expect(stats.evictions + stats.tableFull + stats.keys).toBeGreaterThanOrEqual(50_000)
  })

  it('keeps 100,000 keys in far below 1 KB each', () => {
    const limiter = new KeyedLimiter({ rate: '10/s', clock: new FakeClock(0) })
    const keys = Array.from({ length: 100_000 }, (_, i) => `merchant-${i}`)
    const before = process.memoryUsage().heapUsed
    for (const key of keys) limiter.tryAcquire(key)
    const perKey = (process.memoryUsage().heapUsed - before) / keys.length
    expect(limiter.size).toBe(100_000)
    expect(perKey).toBeLessThan(500) // docs/benchmarks.md records ≈ 70 bytes at 1M keys; without a forced GC the heap delta is loose
  })
})

const POOL = ['a', 'b', 'c', 'd', 'e', 'f'] as const
const RATES = ['10/s', '5/s burst 2', '1/s burst 3', '1000/s burst 20'] as const

describe('eviction under maxKeys pressure with shares, penalties and rate changes (fast-check)', () => {
  it('no key ever exceeds one burst per change + the fastest rate × W, nor runs inside a Retry-After it was given', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...RATES),
        fc.constantFrom(0, 1.7e12),
        fc.array(
          fc.oneof(
            {
              weight: 3,
              arbitrary: fc.record({
                kind: fc.constant('advance' as const),
                ms: fc.integer({ min: 0, max: 700 }),
              }),
            },
            {
              weight: 4,
              arbitrary: fc.record({ kind: fc.constant('try' as const), key: fc.constantFrom(...POOL) }),
            },
            {
              weight: 3,
              arbitrary: fc.record({ kind: fc.constant('reserve' as const), key: fc.constantFrom(...POOL) }),
            },
            {
              weight: 1,
              arbitrary: fc.record({
                kind: fc.constant('penalize' as const),
                key: fc.constantFrom(...POOL),
                ms: fc.integer({ min: 0, max: 3_000 }),
              }),
            },
            {
              weight: 1,
              arbitrary: fc.record({
                kind: fc.constant('share' as const),
                n: fc.integer({ min: 1, max: 3 }),
              }),
            },
            {
              weight: 1,
              arbitrary: fc.record({
                kind: fc.constant('rate' as const),
                key: fc.constantFrom('*', ...POOL),
                rate: fc.constantFrom(...RATES),
              }),
            },
          ),
          { maxLength: 120, size: 'max' },
        ),
        (initial, origin, ops) => {
          const clock = new FakeClock(origin)
          const limiter = new KeyedLimiter({ rate: initial, clock, maxKeys: 3, horizonMs: 5_000 })
          const runs: Array<{ key: string; at: number; seq: number }> = []
          const blocks: Array<{ key: string; seq: number; from: number; until: number }> = []
          const changes: number[] = []
          const seen = [parseRate(initial)]
          let seq = 0
          for (const op of ops) {
            const now = limiter.now()
            if (op.kind === 'advance') clock.advance(op.ms)
            else if (op.kind === 'try') {
              if (limiter.tryAcquire(op.key)) runs.push({ key: op.key, at: now, seq: seq++ })
            } else if (op.kind === 'reserve') {
              const r = limiter.reserve(op.key)
              if (r.ok) runs.push({ key: op.key, at: r.reservedAtMs, seq: seq++ })
            } else if (op.kind === 'penalize') {
              limiter.penalize(op.key, op.ms)
              changes.push(now)
              // a key the table could not hold keeps its Retry-After too
              blocks.push({ key: op.key, seq: seq++, from: now, until: now + op.ms })
            } else if (op.kind === 'share') {
              limiter.setShare(op.n)
              changes.push(now)
            } else {
              limiter.setRate(op.key, op.rate)
              seen.push(parseRate(op.rate))
              changes.push(now)
            }
            expect(limiter.size).toBeLessThanOrEqual(3)
          }
          const maxBurst = Math.max(...seen.map((r) => r.burst))
          const maxPerMs = Math.max(...seen.map((r) => r.limit / r.intervalMs))
          const slack = 1e-6 + 4 * maxPerMs * origin * Number.EPSILON
          for (const key of POOL) {
            const mine = runs.filter((r) => r.key === key).sort((x, y) => x.at - y.at)
            for (let i = 0; i < mine.length; i++) {
              for (let j = i; j < mine.length; j++) {
                const inside = changes.filter((t) => t >= mine[i]!.at && t <= mine[j]!.at).length
                const bound = (inside + 1) * maxBurst + maxPerMs * (mine[j]!.at - mine[i]!.at)
                expect(j - i + 1 - bound).toBeLessThanOrEqual(slack)
              }
            }
          }
          for (const block of blocks) {
            const inside = runs.filter(
              (r) => r.key === block.key && r.seq > block.seq && r.at >= block.from && r.at < block.until,
            )
            expect(inside).toEqual([])
          }
        },
      ),
      { numRuns: 300 },
    )
  })
})
