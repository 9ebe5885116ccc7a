import { describe, expect, it } from 'vitest'
import { WakeQueue } from '../../../src/adapters/kafka/wake-queue.js'
import { FakeClock } from '../../../src/limiter/index.js'
import { FakeTimers } from './support/fake-timers.js'

function setup() {
  const clock = new FakeClock(0)
  const timers = new FakeTimers(clock)
  const wakes = new WakeQueue(clock, timers)
  const fired: string[] = []
  const at = (name: string) => () => fired.push(`${name}@${clock.now()}`)
  return { clock, timers, wakes, fired, at }
}

describe('WakeQueue', () => {
  it('fires callbacks at their due time, in due order, then scheduling order', async () => {
    const { timers, wakes, fired, at } = setup()
    wakes.after(300, at('c'))
    wakes.after(100, at('a'))
    wakes.after(100, at('b'))
    wakes.after(0, at('now'))
    await timers.advance(1_000)
    expect(fired).toEqual(['now@0', 'a@100', 'b@100', 'c@300'])
  })

  it('keeps one timer armed however many callbacks wait', () => {
    const { timers, wakes } = setup()
    for (let i = 0; i < 1_000; i++) wakes.after(1 + (i % 37), () => undefined)
    expect(wakes.size).toBe(1_000)
    expect(timers.armed).toBe(1)
  })

  it('does not fire a cancelled callback and re-arms for the next one', async () => {
    const { timers, wakes, fired, at } = setup()
    const first = wakes.after(50, at('cancelled'))
    wakes.after(80, at('kept'))
    expect(wakes.cancel(first)).toBe(true)
    expect(wakes.cancel(first)).toBe(false)
    await timers.advance(100)
    expect(fired).toEqual(['kept@80'])
  })

  it('runs a callback scheduled by a callback when it falls due', async () => {
    const { timers, wakes, fired, at } = setup()
    wakes.after(10, () => {
      at('outer')()
      wakes.after(15, at('inner'))
    })
    await timers.advance(100)
    expect(fired).toEqual(['outer@10', 'inner@25'])
  })

  it('clear drops every pending callback and the timer', async () => {
    const { timers, wakes, fired, at } = setup()
    wakes.after(10, at('a'))
    wakes.after(20, at('b'))
    wakes.clear()
    expect(timers.armed).toBe(0)
    await timers.advance(100)
    expect(fired).toEqual([])
  })

  it('fires in due order, then scheduling order, after cancels and reschedules across a grown heap', async () => {
    const { timers, wakes, fired, at } = setup()
    // A fixed pseudo-random schedule: 500 wakes on 40 distinct times, every third cancelled,
    // every fifth (not third) moved to a new time; the heap grows past its first typed-array
    // block many times over, and cancels take entries from its middle.
    let seed = 7
    const next = () => {
      seed = (seed * 48_271) % 2_147_483_647
      return seed
    }
    const pending = new Map<string, { wake: ReturnType<typeof wakes.after>; dueMs: number }>()
    for (let i = 0; i < 500; i++) {
      const dueMs = 10 * (next() % 40)
      pending.set(`w${i}`, { wake: wakes.after(dueMs, at(`w${i}`)), dueMs })
    }
    for (let i = 0; i < 500; i++) {
      const name = `w${i}`
      if (i % 3 === 0) {
        expect(wakes.cancel(pending.get(name)!.wake)).toBe(true)
        pending.delete(name)
      } else if (i % 5 === 0) {
        wakes.cancel(pending.get(name)!.wake)
        const dueMs = 10 * (next() % 40)
        pending.set(name, { wake: wakes.after(dueMs, at(name)), dueMs })
      }
    }
    expect(wakes.size).toBe(pending.size)
    await timers.advance(1_000)
    // scheduling order: the untouched wakes by index, then the moved ones (scheduled later) by index
    const scheduledAt = (name: string) => {
      const i = Number(name.slice(1))
      return i % 5 === 0 ? 1_000 + i : i
    }
    const want = [...pending]
      .map(([name, { dueMs }]) => ({ name, dueMs }))
      .sort((a, b) => a.dueMs - b.dueMs || scheduledAt(a.name) - scheduledAt(b.name))
      .map(({ dueMs, name }) => `${name}@${dueMs}`)
    expect(fired).toEqual(want)
  })
})
