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
})
