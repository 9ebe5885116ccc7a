/** Clock gives the time in milliseconds. The limiter reads nothing else. */
export interface Clock {
  /** now returns the current time in ms. A monotonic clock never goes backwards; others may. */
  now(): number
  /**
   * witness, on a clock that can step, is a monotonic clock read beside it (for the wall
   * clock, the same process's `performance.now()`): the skew guard lets no more time pass
   * between two readings than the witness saw pass. A clock without one is guarded on
   * its own readings (see SkewGuard).
   */
  readonly witness?: Clock
}

/**
 * monotonicClock reads `performance.now()`: milliseconds since the process started,
 * fractional, never stepped by NTP or an operator. It is the limiter's default.
 */
export const monotonicClock: Clock = { now: () => performance.now() }

/**
 * wallClock reads `Date.now()`: wall time in ms, which can step backwards and forwards.
 * Its witness is monotonicClock.
 */
export const wallClock: Clock = { now: () => Date.now(), witness: monotonicClock }

/** FakeClock is a clock that moves only when told to, for tests that never sleep. */
export class FakeClock implements Clock {
  private currentMs: number

  /** `witness`, when given, is a second FakeClock standing for true time beside this one's steps. */
  constructor(
    startMs = 0,
    readonly witness?: Clock,
  ) {
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
 * already let pass. How the guard tells the correction apart depends on the clock:
 *
 * - With a `witness` (a monotonic clock read beside the stepping one: wallClock has
 *   performance.now()), guarded time never advances between two readings by more than
 *   the witness saw pass, so no forward step is ever counted as elapsed time, whether it
 *   comes after an idle gap, in steps within the tolerance, or with no step back before it.
 *   What the raw clock moved beyond the witness first undoes the rebases (`corrected`
 *   counts these), so guarded time is back on the raw clock once it is corrected; and an
 *   idle gap counts as the time the witness saw. What it cannot know: whether a forward
 *   step with no step back before it fixes a clock that was behind. Guarded time then
 *   stays behind the raw clock by that step (tokens are never granted for it) and comes
 *   back to it only as far as the raw clock later moves slower than the witness or steps
 *   back. So guarded time is the raw clock plus the outstanding step backs, less the
 *   unmatched forward steps, and never runs faster than the witness (a wall clock that
 *   NTP slews faster than the monotonic clock falls behind by the difference).
 * - Without one, it sees readings only: while a rebase is outstanding, a forward jump of
 *   more than the tolerance between two readings is taken as that correction: it undoes
 *   the rebase (up to the whole jump) and adds no time for the part it undoes. It cannot
 *   tell an idle gap from a correction: when a gap longer than the tolerance comes first
 *   and is taken as the correction, the real correction after it (or one made in steps
 *   within the tolerance) counts as elapsed time, up to the step's length once per step.
 *
 * The default clock, monotonicClock, never steps and needs neither.
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
  private previousWitnessMs = Number.NaN
  private readonly onSkew: ((event: SkewEvent) => void) | undefined
  private readonly witness: Clock | undefined

  constructor(toleranceMs: number, onSkew?: (event: SkewEvent) => void, witness?: Clock) {
    if (!(toleranceMs >= 0) || !Number.isFinite(toleranceMs)) {
      throw new TypeError(`clockSkewToleranceMs: expected a finite number >= 0, got ${toleranceMs}`)
    }
    this.toleranceMs = toleranceMs
    this.onSkew = onSkew
    this.witness = witness
  }

  /** read maps a raw clock reading in ms to guarded time in ms. */
  read(rawMs: number): number {
    return this.witness === undefined ? this.readAlone(rawMs) : this.readWitnessed(rawMs)
  }

  private readAlone(rawMs: number): number {
    if (this.offsetMs > 0 && rawMs - this.previousRawMs > this.toleranceMs) {
      this.undoRebase(rawMs - this.previousRawMs)
    }
    const t = rawMs + this.offsetMs
    if (t >= this.latestMs) {
      this.latestMs = t
      this.previousRawMs = rawMs
      return t
    }
    if (Number.isNaN(t)) throw new TypeError(`clock: expected a number of ms, got ${rawMs}`)
    if (rawMs < this.previousRawMs) this.stepBack(this.latestMs - t, 0)
    this.previousRawMs = rawMs
    return this.latestMs
  }

  /**
   * readWitnessed is read beside a witness that saw `seenMs` pass since the previous
   * reading: guarded time moves by at most that, and a reading further behind it than the
   * tolerance (stepped back, during a gap too) rebases to it.
   */
  private readWitnessed(rawMs: number): number {
    const seenMs = this.witnessed()
    const t = rawMs + this.offsetMs
    if (Number.isNaN(t)) throw new TypeError(`clock: expected a number of ms, got ${rawMs}`)
    const steppedBack = rawMs < this.previousRawMs
    this.previousRawMs = rawMs
    if (seenMs === undefined) {
      this.latestMs = t
      return t
    }
    const behindMs = this.latestMs + seenMs - t
    if (behindMs > this.toleranceMs || (steppedBack && t < this.latestMs)) {
      this.stepBack(behindMs, seenMs)
      return this.latestMs
    }
    if (t < this.latestMs) return this.latestMs
    if (behindMs < 0) {
      // the raw clock moved further than the witness saw: a correction, never elapsed time
      if (this.offsetMs > 0) this.undoRebase(-behindMs)
      this.latestMs += seenMs
      return this.latestMs
    }
    this.latestMs = t
    return t
  }

  /** witnessed is how far the witness moved since the previous reading (never below 0); undefined on the first. */
  private witnessed(): number | undefined {
    const witnessMs = this.witness!.now()
    const previousMs = this.previousWitnessMs
    if (Number.isNaN(previousMs)) {
      this.previousWitnessMs = witnessMs
      return undefined
    }
    // a monotonic witness never goes back: if it does, no time passed
    if (!(witnessMs > previousMs)) return 0
    this.previousWitnessMs = witnessMs
    return witnessMs - previousMs
  }

  /** undoRebase takes a forward jump of `jumpMs` as the correction of outstanding rebases. */
  private undoRebase(jumpMs: number): void {
    this.offsetMs -= Math.min(this.offsetMs, jumpMs)
    this.corrected++
  }

  /**
   * stepBack handles a reading `backMs` behind the latest time plus the `seenMs` the
   * witness saw pass since (0 without a witness): up to the tolerance, time stands still;
   * beyond it, it continues from there.
   */
  private stepBack(backMs: number, seenMs: number): void {
    if (backMs <= this.toleranceMs) {
      this.tolerated++
      this.onSkew?.({ kind: 'tolerated', backMs })
      return
    }
    this.offsetMs += backMs
    this.latestMs += seenMs
    this.rebased++
    this.onSkew?.({ kind: 'rebased', backMs })
  }
}

function checkTime(ms: number, what: string): number {
  if (!Number.isFinite(ms)) throw new TypeError(`${what}: expected a finite number of ms, got ${ms}`)
  return ms
}
