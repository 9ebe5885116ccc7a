/** Clock gives the time in milliseconds. The limiter reads nothing else. */
export interface Clock {
  /** now returns the current time in ms. A monotonic clock never goes backwards; others may. */
  now(): number
}

/**
 * monotonicClock reads `performance.now()`: milliseconds since the process started,
 * fractional, never stepped by NTP or an operator. It is the limiter's default.
 */
export const monotonicClock: Clock = { now: () => performance.now() }

/** wallClock reads `Date.now()`: wall time in ms, which can step backwards. */
export const wallClock: Clock = { now: () => Date.now() }

/** FakeClock is a clock that moves only when told to, for tests that never sleep. */
export class FakeClock implements Clock {
  private currentMs: number

  constructor(startMs = 0) {
    this.currentMs = checkTime(startMs, 'FakeClock start')
  }

  now(): number {
    return this.currentMs
  }

  /** set moves the clock to `ms`, backwards too (to simulate a clock step). */
  set(ms: number): void {
    this.currentMs = checkTime(ms, 'FakeClock.set')
  }

  /** advance moves the clock by `ms`; a negative `ms` steps it back. */
  advance(ms: number): void {
    this.currentMs = checkTime(this.currentMs + ms, 'FakeClock.advance')
  }
}

/** SkewKind says how a backward clock step was handled. */
export type SkewKind = 'tolerated' | 'rebased'

/** SkewEvent describes one backward clock step, for logs and metrics. */
export interface SkewEvent {
  kind: SkewKind
  /** backMs is how far behind the latest time seen the clock stepped, in ms. */
  backMs: number
}

/**
 * SkewGuard turns raw clock readings into a time that never goes backwards.
 *
 * A reading up to `toleranceMs` behind the latest time seen is treated as that latest
 * time: it adds no tokens and removes none. A larger step back rebases: the guard
 * shifts every later reading by the step, so time continues from where it was. Neither
 * case ever moves time forwards, so neither grants a token. Each step is reported once,
 * on the reading that first observes it.
 *
 * A clock stepped back is usually stepped forward again when it is corrected, and after
 * a rebase that forward step would count as elapsed time on top of the time the guard
 * already let pass. So while a rebase is outstanding, a forward jump of more than the
 * tolerance between two readings is taken first as that correction: it undoes the
 * rebase (up to the whole jump) and adds no time for the part it undoes (`corrected`
 * counts these). The price, when the step back was right and the process simply read
 * nothing for a while, is that up to the step's length of real time is not counted:
 * fewer tokens. The guard sees readings only, so it cannot tell an idle gap from a
 * correction: when a gap longer than the tolerance comes first and is taken as the
 * correction, the real correction after it (or one made in steps within the tolerance)
 * counts as elapsed time, up to the step's length once per step (found by an adversarial
 * pass; known, not yet fixed: telling the two apart needs a monotonic witness beside the
 * stepping clock). The default clock,
 * monotonicClock, never steps.
 */
export class SkewGuard {
  readonly toleranceMs: number
  tolerated = 0
  rebased = 0
  /** corrected counts forward jumps taken as the correction of an earlier rebase. */
  corrected = 0
  private offsetMs = 0
  private latestMs = Number.NEGATIVE_INFINITY
  private previousRawMs = Number.NEGATIVE_INFINITY
  private readonly onSkew: ((event: SkewEvent) => void) | undefined

  constructor(toleranceMs: number, onSkew?: (event: SkewEvent) => void) {
    if (!(toleranceMs >= 0) || !Number.isFinite(toleranceMs)) {
      throw new TypeError(`clockSkewToleranceMs: expected a finite number >= 0, got ${toleranceMs}`)
    }
    this.toleranceMs = toleranceMs
    this.onSkew = onSkew
  }

  /** read maps a raw clock reading in ms to guarded time in ms. */
  read(rawMs: number): number {
    if (this.offsetMs > 0 && rawMs - this.previousRawMs > this.toleranceMs) this.correct(rawMs)
    const t = rawMs + this.offsetMs
    if (t >= this.latestMs) {
      this.latestMs = t
      this.previousRawMs = rawMs
      return t
    }
    if (Number.isNaN(t)) throw new TypeError(`clock: expected a number of ms, got ${rawMs}`)
    if (rawMs < this.previousRawMs) this.stepBack(t)
    this.previousRawMs = rawMs
    return this.latestMs
  }

  private correct(rawMs: number): void {
    this.offsetMs -= Math.min(this.offsetMs, rawMs - this.previousRawMs)
    this.corrected++
  }

  private stepBack(t: number): void {
    const backMs = this.latestMs - t
    if (backMs <= this.toleranceMs) {
      this.tolerated++
      this.onSkew?.({ kind: 'tolerated', backMs })
      return
    }
    this.offsetMs += backMs
    this.rebased++
    this.onSkew?.({ kind: 'rebased', backMs })
  }
}

function checkTime(ms: number, what: string): number {
  if (!Number.isFinite(ms)) throw new TypeError(`${what}: expected a finite number of ms, got ${ms}`)
  return ms
}
