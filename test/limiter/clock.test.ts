import { describe, expect, it } from 'vitest'
import { FakeClock, type SkewEvent, SkewGuard } from '../../src/limiter/clock.js'

describe('FakeClock', () => {
  it('moves only when told, backwards too', () => {
    const clock = new FakeClock(1_000)
    expect(clock.now()).toBe(1_000)
    clock.advance(250)
    expect(clock.now()).toBe(1_250)
    clock.set(900)
    expect(clock.now()).toBe(900)
    clock.advance(-100)
    expect(clock.now()).toBe(800)
  })

  it('refuses a time that is not finite', () => {
    expect(() => new FakeClock(Number.NaN)).toThrow(TypeError)
    expect(() => new FakeClock(0).set(Number.POSITIVE_INFINITY)).toThrow(TypeError)
  })
})

describe('SkewGuard', () => {
  // Timeline t0 … t9, 100 ms apart, with steps backwards in between.
  it('never goes backwards: absorbs small steps, rebases large ones', () => {
    const events: SkewEvent[] = []
    const guard = new SkewGuard(100, (event) => events.push(event))
    const rows: Array<[raw: number, guarded: number, comment: string]> = [
      [0, 0, 't0'],
      [100, 100, 't1'],
      [200, 200, 't2'],
      [150, 200, 'back 50 ms: within tolerance, time stands still'],
      [180, 200, 'still catching up: not a new step'],
      [300, 300, 't3: caught up, time moves again'],
      [100, 300, 'back 200 ms: beyond tolerance, rebased to where it was'],
      [200, 400, 'after a rebase time moves at the clock rate from the old point'],
      [300, 500, 'a step of the tolerance or less is time passing'],
      [600, 600, 'a jump of 300 ms after the rebase: 200 undo it, only 100 pass'],
      [595, 600, 'back 5 ms: tolerated'],
      [700, 700, 'the rebase is undone: time moves with the raw clock again'],
    ]
    for (const [raw, guarded, comment] of rows) expect(guard.read(raw), comment).toBe(guarded)
    expect(events).toEqual([
      { kind: 'tolerated', backMs: 50 },
      { kind: 'rebased', backMs: 200 },
      { kind: 'tolerated', backMs: 5 },
    ])
    expect(guard.tolerated).toBe(2)
    expect(guard.rebased).toBe(1)
    expect(guard.corrected).toBe(1)
  })

  it('treats a step of exactly the tolerance as tolerated', () => {
    const guard = new SkewGuard(100)
    guard.read(1_000)
    expect(guard.read(900)).toBe(1_000)
    expect(guard.tolerated).toBe(1)
    expect(guard.rebased).toBe(0)
  })

  it('refuses NaN readings and a negative tolerance', () => {
    const guard = new SkewGuard(100)
    guard.read(10)
    expect(() => guard.read(Number.NaN)).toThrow(TypeError)
    expect(() => new SkewGuard(-1)).toThrow(/clockSkewToleranceMs/)
  })
})
