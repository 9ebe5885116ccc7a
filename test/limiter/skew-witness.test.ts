import { describe, expect, it } from 'vitest'
import { FakeClock, KeyedLimiter } from '../../src/limiter/index.js'

// SkewGuard's known case (issue 15, item 10, found by an adversarial pass): reading the
// clock alone, the guard cannot tell an idle gap from the forward correction of a clock it
// rebased, so a correction that came after a gap, or in steps within the tolerance, counted
// as elapsed time. A monotonic witness beside the stepping clock tells them apart.

/**
 * Stepped is a clock whose readings are true time less `backMs`, beside a witness that
 * reads true time: the wall clock and performance.now() of one process.
 */
function stepped(rate: string) {
  const witness = new FakeClock(0)
  const clock = new FakeClock(0, witness)
  const limiter = new KeyedLimiter({ rate, clock })
  const state = { backMs: 0, granted: 0 }
  /** readAt moves true time to `trueMs` and drains 'm' on the clock as it reads then. */
  const readAt = (trueMs: number, drain = true) => {
    witness.set(trueMs)
    clock.set(trueMs - state.backMs)
    if (!drain) return limiter.tryAcquire('other')
    while (limiter.tryAcquire('m')) state.granted++
    return true
  }
  return { limiter, state, readAt }
}

describe('a clock correction after a rebase grants nothing, whatever came first (issue 15, item 10)', () => {
  it('an idle gap longer than the tolerance is not taken as the correction: 10/s burst 100, back 500 ms, 2 s idle, then corrected, grants 135 (was 140) from 2 s to 5.5 s', () => {
    const { limiter, state, readAt } = stepped('10/s burst 100')
    readAt(0, false)
    state.backMs = 500
    readAt(0, false) // the step back: rebased
    readAt(2_000) // 2 s with no readings: 'm' drains its burst
    state.backMs = 0 // the clock is corrected forward
    for (let t = 2_100; t <= 5_500; t += 100) readAt(t)
    // the window from 2 s to 5.5 s allows burst + 10/s × 3.5 s
    expect(state.granted).toBe(135)
    expect(limiter.stats().skewRebased).toBe(1)
    expect(limiter.stats().skewCorrected).toBe(1)
    expect(limiter.now()).toBe(5_500)
  })

  it('a correction made in 99 ms forward steps (each within the tolerance) is not elapsed time: 10/s burst 10 over 5 s grants 60 (was 64)', () => {
    const { limiter, state, readAt } = stepped('10/s burst 10')
    for (let t = 0; t < 1_000; t++) readAt(t)
    state.backMs = 500 // rebased at 1 s
    for (let t = 1_000; t < 3_000; t++) readAt(t)
    let t = 3_000
    for (; state.backMs > 0; t++) {
      state.backMs -= Math.min(99, state.backMs)
      readAt(t)
    }
    for (; t <= 5_000; t++) readAt(t)
    expect(state.granted).toBe(10 + 50)
    expect(limiter.now()).toBe(5_000)
  })

  it('still counts the real time of an idle gap after a rebase: 2 s idle reads as 2 s', () => {
    const { limiter, state, readAt } = stepped('10/s burst 100')
    readAt(0, false)
    state.backMs = 500
    readAt(0, false)
    readAt(2_000, false) // 2 s idle, clock not yet corrected: the 2 s did pass
    expect(limiter.now()).toBe(2_000)
    expect(limiter.stats().skewCorrected).toBe(0)
  })
})
