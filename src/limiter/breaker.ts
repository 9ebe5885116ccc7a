import { backoffMs } from './backoff.js'
import { type Clock, monotonicClock } from './clock.js'

/** BreakerOptions tune the per-merchant circuit breakers. */
export interface BreakerOptions {
  /** failureThreshold failures within windowMs open the breaker. Default 5. */
  failureThreshold?: number
  /** windowMs is the window the failures are counted in, in ms. Default 30 000. */
  windowMs?: number
  /** coolDownMs is how long the first opening lasts; each further one doubles it. Default 5 000. */
  coolDownMs?: number
  /** maxCoolDownMs caps the cool-down. Default 300 000. */
  maxCoolDownMs?: number
  clock?: Clock
  /** onChange is told of every state change, synchronously; it must not throw. */
  onChange?: (change: BreakerChange) => void
}

/** BreakerState: closed lets everything through, open nothing, half-open one probe. */
export type BreakerState = 'closed' | 'open' | 'half-open'

/** BreakerChange reports a breaker moving from one state to another. */
export interface BreakerChange {
  key: string
  from: BreakerState
  to: BreakerState
  /** openings counts consecutive openings; the cool-down doubles with each. */
  openings: number
  /** retryInMs is how long until an open breaker lets a probe through, in ms. */
  retryInMs: number
}

/** Admission is the breaker's answer for one call: go ahead (maybe as the probe), or wait. */
export type Admission = { allowed: true; probe: boolean } | { allowed: false; retryInMs: number }

/** BreakerView describes one merchant's breaker. */
export interface BreakerView {
  state: BreakerState
  recentFailures: number
  openings: number
  retryInMs: number
}

interface Breaker {
  state: BreakerState
  /** failureTimesMs holds the latest failures, at most failureThreshold of them. */
  failureTimesMs: number[]
  openings: number
  openUntilMs: number
  probeInFlight: boolean
}

/**
 * CircuitBreakers keeps one breaker per merchant endpoint. After `failureThreshold`
 * failures within `windowMs` a breaker opens: calls are refused (the caller delays the
 * job, spending no attempt) for a cool-down that doubles with each consecutive opening.
 * Then one probe is let through (half-open): its success closes the breaker, its failure
 * opens it again. Only merchants with recent failures are held in memory.
 */
export class CircuitBreakers {
  private readonly failureThreshold: number
  private readonly windowMs: number
  private readonly coolDownMs: number
  private readonly maxCoolDownMs: number
  private readonly clock: Clock
  private readonly onChange: ((change: BreakerChange) => void) | undefined
  private readonly breakers = new Map<string, Breaker>()
  private refused = 0

  constructor(options: BreakerOptions = {}) {
    this.failureThreshold = checkWhole(options.failureThreshold ?? 5, 'failureThreshold')
    this.windowMs = checkWhole(options.windowMs ?? 30_000, 'windowMs')
    this.coolDownMs = checkWhole(options.coolDownMs ?? 5_000, 'coolDownMs')
    this.maxCoolDownMs = checkWhole(options.maxCoolDownMs ?? 300_000, 'maxCoolDownMs')
    this.clock = options.clock ?? monotonicClock
    this.onChange = options.onChange
  }

  /**
   * admit says whether a call to `key` may go now. In half-open state the first caller is
   * the probe; the others wait for its outcome. An allowed call must be followed by
   * success or failure (or release, when it was never made).
   */
  admit(key: string): Admission {
    const breaker = this.breakers.get(key)
    if (breaker === undefined || breaker.state === 'closed') return { allowed: true, probe: false }
    const now = this.clock.now()
    if (breaker.state === 'open') {
      if (now < breaker.openUntilMs) return this.refuse(breaker.openUntilMs - now)
      this.move(key, breaker, 'half-open', 0)
    }
    if (breaker.probeInFlight) return this.refuse(Math.min(this.coolDownMs, 1_000))
    breaker.probeInFlight = true
    return { allowed: true, probe: true }
  }

  /** success records a call to `key` that worked: a probe's success closes the breaker. */
  success(key: string): void {
    const breaker = this.breakers.get(key)
    if (breaker === undefined) return
    if (breaker.state === 'half-open' && breaker.probeInFlight) {
      this.move(key, breaker, 'closed', 0)
      this.breakers.delete(key)
      return
    }
    if (breaker.state === 'closed') this.breakers.delete(key)
  }

  /** failure records a call to `key` that failed (timeout, connection error, 5xx). */
  failure(key: string): void {
    const now = this.clock.now()
    let breaker = this.breakers.get(key)
    if (breaker === undefined) {
      breaker = { state: 'closed', failureTimesMs: [], openings: 0, openUntilMs: 0, probeInFlight: false }
      this.breakers.set(key, breaker)
    }
    if (breaker.state === 'half-open') {
      if (breaker.probeInFlight) this.open(key, breaker, now)
      return
    }
    if (breaker.state === 'open') return
    const times = breaker.failureTimesMs
    times.push(now)
    if (times.length > this.failureThreshold) times.shift()
    if (times.length === this.failureThreshold && now - times[0]! <= this.windowMs)
      this.open(key, breaker, now)
  }

  /** release gives back an admission whose call was never made (the probe slot, if it was the probe). */
  release(key: string): void {
    const breaker = this.breakers.get(key)
    if (breaker?.state === 'half-open') breaker.probeInFlight = false
  }

  /** view describes `key`'s breaker; a merchant without one is closed. */
  view(key: string): BreakerView {
    const breaker = this.breakers.get(key)
    if (breaker === undefined) return { state: 'closed', recentFailures: 0, openings: 0, retryInMs: 0 }
    const now = this.clock.now()
    return {
      state: breaker.state,
      recentFailures: breaker.failureTimesMs.filter((t) => now - t <= this.windowMs).length,
      openings: breaker.openings,
      retryInMs: breaker.state === 'open' ? Math.max(0, breaker.openUntilMs - now) : 0,
    }
  }

  /** notClosed lists the merchants whose breaker is open or half-open. */
  notClosed(): Array<{ key: string } & BreakerView> {
    const rows: Array<{ key: string } & BreakerView> = []
    for (const [key, breaker] of this.breakers)
      if (breaker.state !== 'closed') rows.push({ key, ...this.view(key) })
    return rows
  }

  /** stats counts breakers by state and calls refused. */
  stats(): { open: number; halfOpen: number; refused: number } {
    let open = 0
    let halfOpen = 0
    for (const breaker of this.breakers.values()) {
      if (breaker.state === 'open') open++
      else if (breaker.state === 'half-open') halfOpen++
    }
    return { open, halfOpen, refused: this.refused }
  }

  private open(key: string, breaker: Breaker, now: number): void {
    const coolDownMs = backoffMs(breaker.openings + 1, {
      baseMs: this.coolDownMs,
      maxMs: this.maxCoolDownMs,
      jitter: 0,
    })
    breaker.openings++
    breaker.openUntilMs = now + coolDownMs
    breaker.failureTimesMs = []
    this.move(key, breaker, 'open', coolDownMs)
  }

  private move(key: string, breaker: Breaker, to: BreakerState, retryInMs: number): void {
    const from = breaker.state
    breaker.state = to
    breaker.probeInFlight = false
    if (to === 'closed') breaker.openings = 0
    this.onChange?.({ key, from, to, openings: breaker.openings, retryInMs })
  }

  private refuse(retryInMs: number): Admission {
    this.refused++
    return { allowed: false, retryInMs }
  }
}

function checkWhole(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1)
    throw new TypeError(`breaker ${what}: expected a whole number >= 1, got ${value}`)
  return value
}
