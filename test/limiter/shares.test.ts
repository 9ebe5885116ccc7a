import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { KeyedLimiter, type KeyedLimiterOptions } from '../../src/limiter/limiter.js'

// A parent 'psp' at 200/s burst 10 (one unit every 5 ms) over merchants at the default
// 1,000/s, so that the parent is the limit that binds. Children ask as the BullMQ adapter
// does: every ms, up to `asksPerMs` reservations within a 1 s horizon, and after a
// Deferred ('beyond-horizon' or 'parent-share') not again before its delay.

const PARENT_EMISSION_MS = 5
const LOOKAHEAD_MS = 250

interface Child {
  key: string
  asksPerMs: number
  /** fromMs and untilMs bound when the child asks (default: the whole run). */
  fromMs?: number
  untilMs?: number
}

function setup(options: Partial<KeyedLimiterOptions> = {}) {
  const clock = new FakeClock(0)
  const limiter = new KeyedLimiter({ rate: '1000/s burst 20', clock, horizonMs: 1_000, ...options })
  limiter.setRate('psp', '200/s burst 10')
  return { clock, limiter }
}

/** simulate runs `children` for `durationMs` and returns each one's reserved times. */
function simulate(
  limiter: KeyedLimiter,
  clock: FakeClock,
  children: Child[],
  durationMs: number,
  onTick?: (nowMs: number) => void,
): Map<string, number[]> {
  const reserved = new Map(children.map((c) => [c.key, [] as number[]]))
  const nextAskMs = new Map(children.map((c) => [c.key, c.fromMs ?? 0]))
  const startMs = clock.now()
  for (let t = 0; t < durationMs; t++) {
    clock.set(startMs + t)
    onTick?.(t)
    for (const child of children) {
      if (t < nextAskMs.get(child.key)! || t >= (child.untilMs ?? durationMs)) continue
      for (let ask = 0; ask < child.asksPerMs; ask++) {
        const answer = limiter.reserve(['psp', child.key])
        if (!answer.ok) {
          nextAskMs.set(child.key, t + answer.delayMs)
          break
        }
        reserved.get(child.key)!.push(answer.reservedAtMs - startMs)
      }
    }
  }
  return reserved
}

/** countIn counts the times in [fromMs, toMs). */
function countIn(times: readonly number[], fromMs: number, toMs: number): number {
  return times.filter((t) => t >= fromMs && t < toMs).length
}

describe('KeyedLimiter: fair shares of a parent', () => {
  it('two backlogged children share a parent of 200/s about equally, though one asks 100 times as often', () => {
    const { clock, limiter } = setup()
    const reserved = simulate(
      limiter,
      clock,
      [
        { key: 'hot', asksPerMs: 100 },
        { key: 'cold', asksPerMs: 1 },
      ],
      10_000,
    )
    const hot = countIn(reserved.get('hot')!, 0, 10_000)
    const cold = countIn(reserved.get('cold')!, 0, 10_000)
    // 2,000 units in 10 s (and the burst): ~1,000 each
    expect(hot + cold).toBeGreaterThanOrEqual(1_990)
    expect(hot + cold).toBeLessThanOrEqual(2_010)
    expect(hot / 10).toBeGreaterThan(95)
    expect(hot / 10).toBeLessThan(105)
    expect(cold / 10).toBeGreaterThan(95)
    expect(limiter.stats().shareDeferrals).toBeGreaterThan(0)
    expect(limiter.parents()).toEqual(['psp'])
    const shares = limiter.childrenOf('psp')
    expect(shares.map((s) => s.key).sort()).toEqual(['cold', 'hot'])
    for (const share of shares) {
      expect(share.backlogged).toBe(true)
      expect(share.weight).toBe(1)
      expect(share.grantedPerSec).toBeGreaterThan(80)
      expect(share.grantedPerSec).toBeLessThan(120)
    }
  })

  it('weights 2:1 share the parent about 2:1, the weight set in the same apply as a rate', () => {
    const { clock, limiter } = setup()
    limiter.apply({ overrides: { psp: '200/s burst 10' }, weights: { heavy: 2 } })
    const reserved = simulate(
      limiter,
      clock,
      [
        { key: 'light', asksPerMs: 100 },
        { key: 'heavy', asksPerMs: 100 },
      ],
      10_000,
    )
    // after the first second (the one asking first takes the parent's burst, alone)
    const heavy = countIn(reserved.get('heavy')!, 1_000, 10_000)
    const light = countIn(reserved.get('light')!, 1_000, 10_000)
    expect(heavy / light).toBeGreaterThan(1.85)
    expect(heavy / light).toBeLessThan(2.15)
    expect(limiter.childrenOf('psp').find((s) => s.key === 'heavy')!.weight).toBe(2)
  })

  it('a child alone takes the whole parent, up to its own limit', () => {
    const { clock, limiter } = setup()
    const alone = simulate(limiter, clock, [{ key: 'solo', asksPerMs: 100 }], 10_000)
    expect(countIn(alone.get('solo')!, 0, 10_000)).toBeGreaterThanOrEqual(1_995)
    const fresh = setup()
    fresh.limiter.setRate('capped', '150/s burst 5')
    const capped = simulate(fresh.limiter, fresh.clock, [{ key: 'capped', asksPerMs: 100 }], 10_000)
    const count = countIn(capped.get('capped')!, 0, 10_000)
    expect(count).toBeGreaterThanOrEqual(1_495)
    expect(count).toBeLessThanOrEqual(1_505)
  })

  it('leaves no parent capacity unused: a child limited below its share leaves the rest to the other', () => {
    const { clock, limiter } = setup()
    limiter.setRate('slow', '50/s burst 5')
    const reserved = simulate(
      limiter,
      clock,
      [
        { key: 'slow', asksPerMs: 100 },
        { key: 'fast', asksPerMs: 100 },
      ],
      10_000,
    )
    expect(countIn(reserved.get('slow')!, 0, 10_000)).toBeGreaterThanOrEqual(495)
    // 200/s less the slow one's 50/s: the other gets ~150/s, not its half of 100/s
    expect(countIn(reserved.get('fast')!, 0, 10_000)).toBeGreaterThan(1_400)
  })

  it('a quiet child waits at most about the lookahead and one parent emission behind two backlogged ones, and leaves them their halves', () => {
    const { clock, limiter } = setup()
    const quietWaits: number[] = []
    const reserved = simulate(
      limiter,
      clock,
      [
        { key: 'a', asksPerMs: 100 },
        { key: 'b', asksPerMs: 1 },
      ],
      6_000,
      (t) => {
        // a quiet child asks once every 1.5 s (after its share window has passed)
        if (t < 1_000 || t % 1_500 !== 0) return
        const answer = limiter.reserve(['psp', `quiet${t}`])
        if (!answer.ok) throw new Error(`the quiet child was deferred: ${answer.reason}`)
        quietWaits.push(answer.delayMs)
      },
    )
    expect(quietWaits.length).toBe(3)
    // without shares the backlogged two fill the parent to the 1 s horizon
    for (const waitMs of quietWaits) expect(waitMs).toBeLessThanOrEqual(LOOKAHEAD_MS + 3 * PARENT_EMISSION_MS)
    // a quiet child's one ask does not hold a share for a window: counted for its whole
    // share window, it left the parent idle, and the child asking most took the rest (120:80)
    const a = countIn(reserved.get('a')!, 1_000, 6_000) / 5
    const b = countIn(reserved.get('b')!, 1_000, 6_000) / 5
    expect(a).toBeGreaterThan(95)
    expect(a).toBeLessThan(105)
    expect(b).toBeGreaterThan(95)
  })

  it('follows a rate change of the parent mid-run: halves before and after, the parent within its bound', () => {
    const { clock, limiter } = setup()
    const reserved = simulate(
      limiter,
      clock,
      [
        { key: 'hot', asksPerMs: 100 },
        { key: 'cold', asksPerMs: 2 },
      ],
      10_000,
      (t) => {
        if (t === 5_000) limiter.setRate('psp', '100/s burst 10')
      },
    )
    const hot = reserved.get('hot')!
    const cold = reserved.get('cold')!
    // the first 5 s at 200/s, then 100/s: each child half of each (after the reservations
    // standing at the change, up to the lookahead, and a share window to settle)
    expect(countIn(hot, 1_000, 5_000) / 4).toBeGreaterThan(95)
    expect(countIn(cold, 1_000, 5_000) / 4).toBeGreaterThan(95)
    expect(countIn(hot, 6_500, 10_000) / 3.5).toBeGreaterThan(45)
    expect(countIn(hot, 6_500, 10_000) / 3.5).toBeLessThan(55)
    expect(countIn(cold, 6_500, 10_000) / 3.5).toBeGreaterThan(45)
    // the parent after the change: at most its burst + 100/s × W in any window
    const after = [...hot, ...cold].filter((t) => t >= 5_500).sort((x, y) => x - y)
    for (let i = 0; i < after.length; i++) {
      for (let j = i; j < after.length && j < i + 400; j++) {
        expect(j - i + 1).toBeLessThanOrEqual(10 + (100 * (after[j]! - after[i]!)) / 1_000 + 1e-6)
      }
    }
  })

  it('a child that stops is no longer counted once its share window passes: the other gets the whole parent', () => {
    const { clock, limiter } = setup()
    const reserved = simulate(
      limiter,
      clock,
      [
        { key: 'stays', asksPerMs: 100 },
        { key: 'leaves', asksPerMs: 100, untilMs: 3_000 },
      ],
      8_000,
    )
    expect(countIn(reserved.get('stays')!, 5_000, 8_000)).toBeGreaterThanOrEqual(595)
    expect(limiter.childrenOf('psp').find((s) => s.key === 'leaves')?.backlogged ?? false).toBe(false)
  })

  it('keeps the shares across a move of the limiter epoch (every 2^22 ms)', () => {
    const { clock, limiter } = setup()
    clock.set(2 ** 22 - 2_500)
    const reserved = simulate(
      limiter,
      clock,
      [
        { key: 'hot', asksPerMs: 100 },
        { key: 'cold', asksPerMs: 1 },
      ],
      6_000,
    )
    // the epoch moves 2.5 s in: the clocks move with it, the halves go on
    expect(countIn(reserved.get('hot')!, 3_000, 6_000) / 3).toBeGreaterThan(95)
    expect(countIn(reserved.get('cold')!, 3_000, 6_000) / 3).toBeGreaterThan(95)
  })

  it('explain names the parent share when it is what a child waits for', () => {
    const { clock, limiter } = setup()
    simulate(
      limiter,
      clock,
      [
        { key: 'a', asksPerMs: 100 },
        { key: 'b', asksPerMs: 100 },
      ],
      2_000,
    )
    const deferred = limiter.reserve(['psp', 'a'])
    expect(deferred).toMatchObject({ ok: false, reason: 'parent-share', bindingKey: 'psp' })
    expect(limiter.explain(['psp', 'a'])).toMatchObject({ bindingKey: 'psp', reason: 'parent-share' })
  })
})

describe('KeyedLimiter: fair shares for lanes holding one reservation each (the Kafka adapter)', () => {
  // each lane reserves its head item, runs it at its reserved time, then asks for the next;
  // after a Deferred it asks again after the delay
  function lanes(limiter: KeyedLimiter, clock: FakeClock, keys: string[], durationMs: number) {
    const nextAskMs = new Map(keys.map((k) => [k, 0]))
    const granted = new Map(keys.map((k) => [k, 0]))
    for (let t = 0; t < durationMs; t++) {
      clock.set(t)
      for (const key of keys) {
        if (t < nextAskMs.get(key)!) continue
        const answer = limiter.reserve(['psp', key])
        nextAskMs.set(key, t + Math.max(answer.delayMs, answer.ok ? 0 : 0.5))
        if (answer.ok && answer.reservedAtMs < durationMs) granted.set(key, granted.get(key)! + 1)
      }
    }
    return granted
  }

  it('three lanes share a parent of 200/s in thirds, and each stays within its own rate', () => {
    const { clock, limiter } = setup()
    limiter.setRate('capped', '40/s burst 2')
    const granted = lanes(limiter, clock, ['x', 'y', 'capped'], 10_000)
    expect(granted.get('capped')! / 10).toBeGreaterThan(38)
    expect(granted.get('capped')! / 10).toBeLessThanOrEqual(40.3)
    // the 160/s the capped lane leaves is split between the other two
    for (const key of ['x', 'y']) {
      expect(granted.get(key)! / 10).toBeGreaterThan(75)
      expect(granted.get(key)! / 10).toBeLessThan(85)
    }
  })
})

describe('KeyedLimiter: weights and share state are bounded', () => {
  it('refuses a bad weight with a TypeError, a weight past maxOverrides with a RangeError, nothing changed', () => {
    const { limiter } = setup({ maxOverrides: 3 })
    expect(() => limiter.setWeight('m1', 0)).toThrow(
      /expected a weight above 0 and at most 1000000 for 'm1', got 0/,
    )
    expect(() => limiter.setWeight('m1', Number.NaN)).toThrow(TypeError)
    expect(() => limiter.apply({ weights: { m1: 2, m2: -1 } })).toThrow(/for 'm2', got -1/)
    limiter.setWeight('m1', 2)
    limiter.setWeight('m2', 3)
    limiter.setWeight('m3', 3)
    expect(() => limiter.apply({ overrides: { m9: '1/s' }, weights: { m4: 1 } })).toThrow(
      /4 weights would exceed maxOverrides \(3\)/,
    )
    expect(limiter.rates().overrides.m9).toBeUndefined()
    limiter.setWeight('m3', null)
    limiter.setWeight('m4', 1)
    // a snapshot clears the weights it does not list
    limiter.apply({ replace: true, overrides: { psp: '200/s burst 10' }, weights: { m1: 5 } })
    expect(() => limiter.apply({ weights: { m5: 1, m6: 1 } })).not.toThrow()
  })

  it('tracks at most maxShareEntries children, forgets quiet ones, and leaves the parent the hard limit', () => {
    const { clock, limiter } = setup({ maxShareEntries: 50 })
    const children: Child[] = Array.from({ length: 200 }, (_, i) => ({ key: `m${i}`, asksPerMs: 1 }))
    const reserved = simulate(limiter, clock, children, 2_000)
    const total = [...reserved.values()].reduce((sum, times) => sum + countIn(times, 0, 2_000), 0)
    expect(total).toBeLessThanOrEqual(10 + 400)
    expect(limiter.childrenOf('psp').length).toBeLessThanOrEqual(50)
    // all quiet for longer than two share windows: forgotten at the next sweep
    clock.advance(5_000)
    limiter.reserve(['psp', 'late'])
    simulate(limiter, clock, [{ key: 'late', asksPerMs: 100 }], 1_000)
    expect(limiter.childrenOf('psp').length).toBeLessThanOrEqual(2)
    expect(limiter.stats().parentsTracked).toBe(1)
  })
})
