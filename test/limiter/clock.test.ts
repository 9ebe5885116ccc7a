import { describe, expect, it } from 'vitest'
import { FakeClock, monotonicClock, type SkewEvent, SkewGuard, wallClock } from '../../src/limiter/clock.js'

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

describe('SkewGuard with a monotonic witness', () => {
  it('never lets time pass faster than the witness, and follows the raw clock otherwise', () => {
    const events: SkewEvent[] = []
    const witness = new FakeClock(0)
    const guard = new SkewGuard(100, (event) => events.push(event), witness)
    const rows: Array<[raw: number, witnessed: number, guarded: number, comment: string]> = [
      [1_000, 0, 1_000, 't0: raw is wall time, the witness starts at 0'],
      [1_100, 100, 1_100, 'both move 100 ms'],
      [1_050, 150, 1_100, 'back 100 ms from where it should be: tolerated, time stands still'],
      [1_150, 250, 1_150, 'caught up: time moves with the raw clock'],
      [2_150, 350, 1_250, 'a forward step of 900 ms the witness did not see: 100 ms pass, not 1000'],
      [2_250, 450, 1_350, 'behind the raw clock by 900 ms: time moves with the witness'],
      [1_450, 550, 1_450, 'the clock steps back 900 ms, to where guarded time is: nothing to absorb'],
      [950, 650, 1_550, 'back 600 ms: rebased, and the 100 ms the witness saw pass'],
      [2_950, 2_650, 3_550, 'an idle gap of 2 s before the correction: 2 s pass'],
      [3_551, 2_651, 3_551, 'the correction, 600 ms forward in 1 ms: undoes the rebase, 1 ms passes'],
      [3_651, 2_751, 3_651, 'on the raw clock again'],
    ]
    for (const [raw, witnessed, guarded, comment] of rows) {
      witness.set(witnessed)
      expect(guard.read(raw), comment).toBe(guarded)
    }
    expect(events).toEqual([
      { kind: 'tolerated', backMs: 100 },
      { kind: 'rebased', backMs: 600 },
    ])
    expect(guard.corrected).toBe(1)
  })

  it('rebases a step back hidden in an idle gap (the raw clock moved less than the witness saw)', () => {
    const witness = new FakeClock(0)
    const guard = new SkewGuard(100, undefined, witness)
    guard.read(1_000)
    witness.set(5_000)
    expect(guard.read(3_000)).toBe(6_000) // 5 s passed; the clock reads 3 s back
    expect(guard.rebased).toBe(1)
    witness.set(5_001)
    expect(guard.read(6_001)).toBe(6_001) // corrected: back on the raw clock
    expect(guard.corrected).toBe(1)
  })

  it('takes a witness that goes back as no time passing', () => {
    const witness = new FakeClock(10)
    const guard = new SkewGuard(100, undefined, witness)
    guard.read(0)
    witness.set(5)
    expect(guard.read(500)).toBe(0)
    witness.set(20)
    expect(guard.read(520)).toBe(10)
  })

  it('is what the wall clock comes with: wallClock is witnessed by monotonicClock', () => {
    expect(wallClock.witness).toBe(monotonicClock)
    expect(monotonicClock.witness).toBeUndefined()
  })
})
