import { RetryableFailureError } from '../../errors.js'
import type { CircuitBreakers, InFlightTable } from '../../limiter/index.js'
import type { LaneItem } from './dispatcher.js'
import type { Lane } from './lanes.js'

/** LaneSlots is the part of InFlightTable the lanes use for in-flight caps and fair slots. */
export type LaneSlots = Pick<InFlightTable, 'tryStart' | 'finish' | 'count'>

/** LaneBreakers is the part of CircuitBreakers the lanes use. */
export type LaneBreakers = Pick<CircuitBreakers, 'admit' | 'release' | 'success' | 'failure'>

/** LaneGateOptions wire a LaneGate; see ThrottledConsumerOptions for inFlight and breakers. */
export interface LaneGateOptions<I extends LaneItem> {
  inFlight?: LaneSlots
  breakers?: LaneBreakers
  /** isEndpointFailure says whether a handler error counts against the breaker. Default: RetryableFailureError. */
  isEndpointFailure?: (error: unknown) => boolean
  /** wait puts the lane to sleep for `delayMs`, then asks again for it. */
  wait: (lane: Lane<I>, delayMs: number) => void
  /** retry asks again for a lane whose merchant got an in-flight place back. */
  retry: (lane: Lane<I>) => void
}

/**
 * LaneGate takes a lane's head past its merchant's circuit breaker and in-flight cap,
 * before the limiter is asked (no token charged and no attempt spent for a head that
 * cannot pass), gives back what it took when the head's handler ends, and feeds the
 * breaker each outcome. Lanes of a merchant at its cap wait in the gate, oldest first.
 */
export class LaneGate<I extends LaneItem> {
  /** capped: times a lane waited because its merchant was at its in-flight cap. */
  capped = 0
  /** breakerOpen: times a lane waited because its merchant's breaker was open. */
  breakerOpen = 0
  /** cappedLanes: per merchant, the lanes waiting for one of its jobs in flight to end, oldest first. */
  private readonly cappedLanes = new Map<string, Lane<I>[]>()
  private readonly isEndpointFailure: (error: unknown) => boolean

  constructor(private readonly options: LaneGateOptions<I>) {
    this.isEndpointFailure = options.isEndpointFailure ?? ((error) => error instanceof RetryableFailureError)
  }

  /** inFlight is the table of the merchants' in-flight counts, when caps are on. */
  get inFlight(): LaneSlots | undefined {
    return this.options.inFlight
  }

  /**
   * admit says whether the lane's head may ask the limiter now. When it may not, the lane
   * waits (for the breaker's retry time, or for one of its merchant's jobs to end).
   */
  admit(lane: Lane<I>): boolean {
    const { breakers, inFlight } = this.options
    if (breakers !== undefined && !lane.admitted) {
      const admission = breakers.admit(lane.merchantKey)
      if (!admission.allowed) {
        this.breakerOpen++
        this.options.wait(lane, admission.retryInMs)
        return false
      }
      lane.admitted = true
    }
    if (inFlight !== undefined && !lane.counted) {
      if (!inFlight.tryStart(lane.merchantKey)) {
        this.releaseAdmission(lane)
        this.capped++
        lane.state = 'waiting'
        const waiting = this.cappedLanes.get(lane.merchantKey)
        if (waiting === undefined) this.cappedLanes.set(lane.merchantKey, [lane])
        else waiting.push(lane)
        return false
      }
      lane.counted = true
    }
    return true
  }

  /** ended gives back what the head's admission took once its handler has ended, and feeds the breaker. */
  ended(lane: Lane<I>, error: unknown, failed: boolean): void {
    if (lane.admitted) {
      lane.admitted = false
      if (failed && this.isEndpointFailure(error)) this.options.breakers?.failure(lane.merchantKey)
      else this.options.breakers?.success(lane.merchantKey)
    }
    this.uncount(lane)
  }

  /** release gives up a lane that is not running: out of the capped queue, admission and place returned. */
  release(lane: Lane<I>): void {
    this.unqueueCapped(lane)
    if (lane.state === 'running') return
    this.releaseAdmission(lane)
    this.uncount(lane)
  }

  private releaseAdmission(lane: Lane<I>): void {
    if (!lane.admitted) return
    lane.admitted = false
    this.options.breakers?.release(lane.merchantKey)
  }

  /** uncount ends the lane's in-flight place and retries the oldest lane of its merchant waiting for one. */
  private uncount(lane: Lane<I>): void {
    if (!lane.counted) return
    lane.counted = false
    this.options.inFlight?.finish(lane.merchantKey)
    const waiting = this.cappedLanes.get(lane.merchantKey)
    const next = waiting?.shift()
    if (waiting !== undefined && waiting.length === 0) this.cappedLanes.delete(lane.merchantKey)
    if (next !== undefined) {
      next.state = 'idle'
      this.options.retry(next)
    }
  }

  private unqueueCapped(lane: Lane<I>): void {
    const waiting = this.cappedLanes.get(lane.merchantKey)
    if (waiting === undefined) return
    const at = waiting.indexOf(lane)
    if (at >= 0) waiting.splice(at, 1)
    if (waiting.length === 0) this.cappedLanes.delete(lane.merchantKey)
  }
}
