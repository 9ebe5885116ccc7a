import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { KeyedLimiter, ReservationBook } from '../../src/limiter/limiter.js'

// Rates that refill one unit an hour, so that over the test's few seconds a key's tokens
// are its burst less what was charged to it, to a thousandth: the count of charges per
// key can be read back from inspect and compared with the grants the callers saw.
const PARENTS = { 'psp:a': '1/h burst 300', 'psp:b': '1/h burst 120' } as const
const CHILD_BURST = 30
const CHILDREN = 60

/** seeded is a small deterministic generator (mulberry32), so a failure replays. */
function seeded(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}

describe('KeyedLimiter: a list of keys is charged atomically', () => {
  it('1,000 interleaved callers: each job charged every limiting key or none, with children and parents refusing and the table full', async () => {
    const random = seeded(18)
    const clock = new FakeClock(0)
    // 40 keys: the two parents and 38 children fit, the others find the table full of buckets in debt
    const limiter = new KeyedLimiter({ rate: `1/h burst ${CHILD_BURST}`, clock, maxKeys: 40 })
    for (const [key, rate] of Object.entries(PARENTS)) limiter.setRate(key, rate)
    const book = new ReservationBook()
    const charged = new Map<string, number>()
    const answers = { granted: 0, refused: 0, parent: 0, child: 0, tableFull: 0 }
    const caller = async (): Promise<void> => {
      for (let step = 0; step < 6; step++) {
        const pauses = Math.floor(random() * 4)
        for (let i = 0; i < pauses; i++) await Promise.resolve()
        if (random() < 0.05) clock.advance(1)
        const parent = random() < 0.6 ? 'psp:a' : random() < 0.8 ? 'psp:b' : 'psp:unset'
        const child = `m${Math.floor(random() * CHILDREN)}`
        const keys = [parent, child]
        const cost = 1 + Math.floor(random() * 3)
        const how = random()
        let ok: boolean
        if (how < 0.4) {
          ok = limiter.tryAcquire(keys, cost)
          if (!ok) answers.refused++
        } else {
          const answer = how < 0.7 ? limiter.reserve(keys, cost) : limiter.reserveIn(book, keys, cost)
          ok = typeof answer === 'number' || answer.ok
          if (typeof answer !== 'number' && !answer.ok) {
            if (answer.reason === 'table-full') answers.tableFull++
            else if (answer.bindingKey === parent) answers.parent++
            else if (answer.bindingKey === child) answers.child++
            else throw new Error(`unexpected answer ${JSON.stringify(answer)}`)
          }
        }
        if (!ok) continue
        answers.granted++
        for (const key of parent === 'psp:unset' ? [child] : keys) {
          charged.set(key, (charged.get(key) ?? 0) + cost)
        }
      }
    }
    await Promise.all(Array.from({ length: 1_000 }, caller))
    // every kind of refusal happened, and grants beside them
    expect(answers.granted).toBeGreaterThan(100)
    expect(answers.refused).toBeGreaterThan(100)
    expect(answers.parent).toBeGreaterThan(10)
    expect(answers.child).toBeGreaterThan(10)
    expect(answers.tableFull).toBeGreaterThan(10)
    expect(limiter.inspect('psp:unset')).toBeUndefined()
    for (const [key, rate] of Object.entries(PARENTS)) {
      const burst = Number(rate.split(' ').pop())
      expect(limiter.inspect(key)!.tokens, key).toBeCloseTo(burst - (charged.get(key) ?? 0), 2)
    }
    let children = 0
    for (let i = 0; i < CHILDREN; i++) {
      const state = limiter.inspect(`m${i}`)
      if (state === undefined) {
        expect(charged.get(`m${i}`), `m${i} is not held, so was never charged`).toBeUndefined()
        continue
      }
      children++
      expect(state.tokens, `m${i}`).toBeCloseTo(CHILD_BURST - (charged.get(`m${i}`) ?? 0), 2)
    }
    expect(children).toBe(38)
  })
})
