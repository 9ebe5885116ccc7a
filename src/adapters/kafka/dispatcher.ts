import type { Logger } from 'pino'
import { PermanentFailureError, RetryableFailureError, RetryLaterError } from '../../errors.js'
import type { CircuitBreakers, InFlightTable, Reservation } from '../../limiter/index.js'
import { type Lane, LaneGroup } from './lanes.js'
import type { WakeQueue } from './wake-queue.js'

/** LaneLimiter is what the dispatcher needs of a KeyedLimiter. */
export interface LaneLimiter {
  tryAcquire(key: string, cost?: number): boolean
  reserve(key: string, cost?: number): Reservation
  penalize(key: string, retryAfterMs: number): void
}

/** LaneSlots is the part of InFlightTable the dispatcher uses for in-flight caps and fair slots. */
export type LaneSlots = Pick<InFlightTable, 'tryStart' | 'finish' | 'count'>

/** LaneBreakers is the part of CircuitBreakers the dispatcher uses. */
export type LaneBreakers = Pick<CircuitBreakers, 'admit' | 'release' | 'success' | 'failure'>

/**
 * FAIR_SCAN_LANES is how many ready lanes, from the front of the ready queue, the
 * dispatcher compares when it picks the next one to start: the one whose merchant has the
 * fewest jobs in flight. Bounded, so that a start costs the same with 100,000 lanes ready.
 */
export const FAIR_SCAN_LANES = 32

/**
 * DeadLetterReason says why a message went to the dead-letter topic: no usable merchant
 * key, a value the decoder refused, a handler that kept failing for maxAttempts, or a
 * handler that threw PermanentFailureError (dead-lettered at once).
 */
export type DeadLetterReason = 'invalid-key' | 'undecodable' | 'handler-failed' | 'permanent-failure'

/** DeadLetter is a message's failure: why, the error or check that refused it, attempts spent. */
export interface DeadLetter {
  reason: DeadLetterReason
  /** error is the handler's last error, the decoder's error, or the key check's reason. */
  error: unknown
  /** attempts is the number of handler calls made (0 when the handler never ran). */
  attempts: number
}

/** LaneItem is what a lane carries: anything with a merchant key. */
export interface LaneItem {
  readonly merchantKey: string
}

/** Outcome is how a message ended: its handler succeeded, or it was dead-lettered. */
export type Outcome = 'handled' | 'dead-lettered'

/** DispatcherOptions wire a Dispatcher to its limiter, handler and dead-letter sink. */
export interface DispatcherOptions<I extends LaneItem> {
  limiter: LaneLimiter
  /** wakes schedules reservation waits and retries on the limiter's clock. */
  wakes: WakeQueue
  /** concurrency is the most handlers running at once, over all partitions. */
  concurrency: number
  /**
   * maxAttempts is the most handler calls per message before it is dead-lettered
   * (RetryLaterError spends none; PermanentFailureError dead-letters at once).
   */
  maxAttempts: number
  /** retryDelayMs gives the wait after failed attempt number `attempt` (1-based), in ms. */
  retryDelayMs: (attempt: number) => number
  /** deadLetterRetryDelayMs gives the wait after a failed dead-letter write number `failures`, in ms. */
  deadLetterRetryDelayMs: (failures: number) => number
  /** run calls the handler for `item`; `attempt` is 1-based. */
  run: (item: I, attempt: number, signal: AbortSignal) => Promise<void>
  /** deadLetter writes `item` to the dead-letter topic; a rejection is retried after a delay. */
  deadLetter: (item: I, failure: DeadLetter) => Promise<void>
  /**
   * inFlight counts each merchant's jobs in flight and holds its cap: a lane whose merchant
   * is at its cap waits, before the limiter is asked (no token charged, no attempt spent),
   * and is scheduled when one of the merchant's jobs ends. With it, the next ready lane to
   * start is the one whose merchant has the fewest in flight among the first
   * FAIR_SCAN_LANES ready. Default: none (no caps, ready lanes start in order).
   */
  inFlight?: LaneSlots
  /**
   * breakers: per-merchant circuit breakers. A lane whose merchant's breaker is open waits
   * until it lets a call through, without an attempt; each attempt's outcome is reported.
   */
  breakers?: LaneBreakers
  /** isEndpointFailure says whether a handler error counts against the breaker. Default: RetryableFailureError. */
  isEndpointFailure?: (error: unknown) => boolean
  /** done is told of each item that is finished, once, unless its group was dropped first. */
  done: (item: I, group: LaneGroup<I>, outcome: Outcome) => void
  logger: Logger
}

/** DispatcherStats are the dispatcher's counters and gauges. */
export interface DispatcherStats {
  /** lanes holding at least one message. */
  lanes: number
  /** lanesWaiting: lanes waiting for a reservation, a retry delay or a Retry-After. */
  lanesWaiting: number
  /** lanesReady: lanes granted and queued for a concurrency slot. */
  lanesReady: number
  /** inFlight: handlers running now. */
  inFlight: number
  /** deadLettersInFlight: dead-letter writes in progress. */
  deadLettersInFlight: number
  /** grantedNow: reservations that let the head run at once. */
  grantedNow: number
  /** delayed: reservations granted for a later time. */
  delayed: number
  /** deferred: reservations refused for now (beyond the horizon, table full); asked again later. */
  deferred: number
  handled: number
  /** failedAttempts: handler calls that threw (RetryLaterError excluded). */
  failedAttempts: number
  /** retryLater: handler calls that threw RetryLaterError. */
  retryLater: number
  deadLettered: Record<DeadLetterReason, number>
  /** deadLetterWriteFailures: dead-letter writes that failed and were retried. */
  deadLetterWriteFailures: number
  /** capped: times a lane waited because its merchant was at its in-flight cap. */
  capped: number
  /** breakerOpen: times a lane waited because its merchant's breaker was open. */
  breakerOpen: number
}

type Counters = Omit<
  DispatcherStats,
  'lanes' | 'lanesWaiting' | 'lanesReady' | 'inFlight' | 'deadLettersInFlight'
>

/**
 * Dispatcher runs the lanes: it asks the limiter for each lane's head, waits for the
 * reservation without holding a concurrency slot, runs handlers up to `concurrency` at
 * once, retries failures with backoff in place (order kept), honours RetryLaterError,
 * and dead-letters what keeps failing. It knows nothing of Kafka: a LaneGroup stands
 * for a partition, and `done` tells the owner which items are finished.
 */
export class Dispatcher<I extends LaneItem> {
  private readonly groups = new Set<LaneGroup<I>>()
  private readonly readyQueue: (Lane<I> | undefined)[] = []
  private readyHead = 0
  private running = 0
  private deadLettersRunning = 0
  private held = false
  private closed = false
  private idleWaiters: (() => void)[] = []
  private readonly counters: Counters = {
    grantedNow: 0,
    delayed: 0,
    deferred: 0,
    handled: 0,
    failedAttempts: 0,
    retryLater: 0,
    deadLettered: { 'invalid-key': 0, undecodable: 0, 'handler-failed': 0, 'permanent-failure': 0 },
    deadLetterWriteFailures: 0,
    capped: 0,
    breakerOpen: 0,
  }
  /** cappedLanes: per merchant, the lanes waiting for one of its jobs in flight to end, oldest first. */
  private readonly cappedLanes = new Map<string, Lane<I>[]>()
  private readonly isEndpointFailure: (error: unknown) => boolean

  constructor(private readonly options: DispatcherOptions<I>) {
    this.isEndpointFailure = options.isEndpointFailure ?? ((error) => error instanceof RetryableFailureError)
  }

  /** createGroup returns a new lane group (one per assigned partition). */
  createGroup(name: string): LaneGroup<I> {
    const group = new LaneGroup<I>(name)
    this.groups.add(group)
    return group
  }

  /** push appends `item` to its merchant's lane in `group`; the lane starts if it was idle. */
  push(group: LaneGroup<I>, item: I): void {
    if (group.dropped) return
    const lane = group.laneFor(item.merchantKey)
    lane.push(item)
    if (lane.state === 'idle') this.schedule(lane)
  }

  /**
   * deadLetterNow sends `item` straight to the dead-letter sink, outside any lane (it has
   * no usable key or value, so no merchant order to keep).
   */
  deadLetterNow(group: LaneGroup<I>, item: I, failure: DeadLetter): void {
    this.writeDeadLetter(group, item, failure, 0, () => undefined)
  }

  /**
   * drop gives up a group: its waiting lanes stop, their reservations are returned, its
   * signal aborts, and completions of its in-flight items are ignored.
   */
  drop(group: LaneGroup<I>, reason: string): void {
    if (!this.groups.delete(group)) return
    for (const lane of group.lanes.values()) this.release(lane)
    group.lanes.clear()
    group.abort(reason)
    this.pump()
  }

  /** hold stops handlers from starting (during a rebalance); lanes keep their place. */
  hold(): void {
    this.held = true
  }

  /** resume lets held lanes start again. */
  resume(): void {
    this.held = false
    this.pump()
  }

  /**
   * close stops for good: no handler starts any more, waits are cancelled and their
   * reservations returned. In-flight handlers finish (see whenIdle).
   */
  close(): void {
    this.closed = true
    for (const group of this.groups) for (const lane of group.lanes.values()) this.release(lane)
    this.options.wakes.clear()
  }

  /** whenIdle resolves once no handler and no dead-letter write is in flight. */
  whenIdle(): Promise<void> {
    if (this.running === 0 && this.deadLettersRunning === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  /** giveUp drops every group (after close, when in-flight work outlives the stop deadline). */
  giveUp(reason: string): void {
    for (const group of [...this.groups]) this.drop(group, reason)
  }

  stats(): DispatcherStats {
    let lanes = 0
    let lanesWaiting = 0
    let lanesReady = 0
    for (const group of this.groups) {
      lanes += group.lanes.size
      for (const lane of group.lanes.values()) {
        if (lane.state === 'waiting') lanesWaiting++
        else if (lane.state === 'ready') lanesReady++
      }
    }
    return {
      ...this.counters,
      deadLettered: { ...this.counters.deadLettered },
      lanes,
      lanesWaiting,
      lanesReady,
      inFlight: this.running,
      deadLettersInFlight: this.deadLettersRunning,
    }
  }

  /**
   * schedule asks the limiter for the lane's head and waits for the answer's time. A token
   * there now is taken with tryAcquire (no reservation object on the hot path); only a
   * lane that must wait holds a reservation, which drop and close hand back.
   */
  private schedule(lane: Lane<I>): void {
    if (this.closed || lane.group.dropped) return
    if (!this.admit(lane)) return
    const limiter = this.options.limiter
    if (limiter.tryAcquire(lane.merchantKey)) {
      this.counters.grantedNow++
      this.enqueueReady(lane)
      return
    }
    const reservation = limiter.reserve(lane.merchantKey)
    if (!reservation.ok) {
      this.counters.deferred++
      this.waitThen(lane, reservation.delayMs, () => this.schedule(lane))
      return
    }
    lane.reservation = reservation
    if (reservation.delayMs <= 0) {
      this.counters.grantedNow++
      this.enqueueReady(lane)
      return
    }
    this.counters.delayed++
    this.waitThen(lane, reservation.delayMs, () => this.enqueueReady(lane))
  }

  /**
   * admit takes the lane's head past its merchant's breaker and in-flight cap, before the
   * limiter is asked; when it cannot pass, the lane waits (for the breaker's retry time,
   * or for one of the merchant's jobs to end) and admit says false.
   */
  private admit(lane: Lane<I>): boolean {
    const { breakers, inFlight } = this.options
    if (breakers !== undefined && !lane.admitted) {
      const admission = breakers.admit(lane.merchantKey)
      if (!admission.allowed) {
        this.counters.breakerOpen++
        this.waitThen(lane, admission.retryInMs, () => this.schedule(lane))
        return false
      }
      lane.admitted = true
    }
    if (inFlight !== undefined && !lane.counted) {
      if (!inFlight.tryStart(lane.merchantKey)) {
        if (lane.admitted) {
          breakers?.release(lane.merchantKey)
          lane.admitted = false
        }
        this.counters.capped++
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
  private ended(lane: Lane<I>, error: unknown, failed: boolean): void {
    if (lane.admitted) {
      lane.admitted = false
      if (failed && this.isEndpointFailure(error)) this.options.breakers?.failure(lane.merchantKey)
      else this.options.breakers?.success(lane.merchantKey)
    }
    this.uncount(lane)
  }

  /** uncount ends the lane's in-flight place and schedules the oldest lane of its merchant waiting for one. */
  private uncount(lane: Lane<I>): void {
    if (!lane.counted) return
    lane.counted = false
    this.options.inFlight?.finish(lane.merchantKey)
    const waiting = this.cappedLanes.get(lane.merchantKey)
    const next = waiting?.shift()
    if (waiting !== undefined && waiting.length === 0) this.cappedLanes.delete(lane.merchantKey)
    if (next !== undefined) {
      next.state = 'idle'
      this.schedule(next)
    }
  }

  private unqueueCapped(lane: Lane<I>): void {
    const waiting = this.cappedLanes.get(lane.merchantKey)
    if (waiting === undefined) return
    const at = waiting.indexOf(lane)
    if (at >= 0) waiting.splice(at, 1)
    if (waiting.length === 0) this.cappedLanes.delete(lane.merchantKey)
  }

  private waitThen(lane: Lane<I>, delayMs: number, then: () => void): void {
    lane.state = 'waiting'
    lane.wake = this.options.wakes.after(delayMs, () => {
      lane.wake = undefined
      then()
    })
  }

  private enqueueReady(lane: Lane<I>): void {
    lane.state = 'ready'
    const queueEmpty = this.readyHead === this.readyQueue.length
    if (queueEmpty && !this.held && !this.closed && this.running < this.options.concurrency) {
      this.start(lane)
      return
    }
    this.readyQueue.push(lane)
    this.pump()
  }

  /** pump starts ready lanes while slots are free. */
  private pump(): void {
    while (!this.held && !this.closed && this.running < this.options.concurrency) {
      const lane = this.nextReady()
      if (lane === undefined) return
      this.start(lane)
    }
  }

  private nextReady(): Lane<I> | undefined {
    if (this.options.inFlight !== undefined) this.fewestInFlightFirst(this.options.inFlight)
    while (this.readyHead < this.readyQueue.length) {
      const lane = this.readyQueue[this.readyHead]
      this.readyQueue[this.readyHead] = undefined
      this.readyHead++
      if (lane !== undefined && lane.state === 'ready' && !lane.group.dropped) {
        this.compactReadyQueue()
        return lane
      }
    }
    this.readyQueue.length = 0
    this.readyHead = 0
    return undefined
  }

  /**
   * fewestInFlightFirst moves, among the first FAIR_SCAN_LANES ready lanes, the one whose
   * merchant has the fewest jobs in flight to the front (the front lane takes its place).
   */
  private fewestInFlightFirst(inFlight: LaneSlots): void {
    const end = Math.min(this.readyQueue.length, this.readyHead + FAIR_SCAN_LANES)
    let best = -1
    let bestCount = Number.POSITIVE_INFINITY
    for (let i = this.readyHead; i < end; i++) {
      const lane = this.readyQueue[i]
      if (lane === undefined || lane.state !== 'ready' || lane.group.dropped) continue
      const count = inFlight.count(lane.merchantKey)
      if (count < bestCount) {
        best = i
        bestCount = count
      }
    }
    if (best > this.readyHead) {
      const front = this.readyQueue[this.readyHead]
      this.readyQueue[this.readyHead] = this.readyQueue[best]
      this.readyQueue[best] = front
    }
  }

  private compactReadyQueue(): void {
    if (this.readyHead >= 1024 && this.readyHead * 2 >= this.readyQueue.length) {
      this.readyQueue.splice(0, this.readyHead)
      this.readyHead = 0
    }
  }

  private start(lane: Lane<I>): void {
    const item = lane.peek()!
    lane.state = 'running'
    lane.reservation = undefined
    lane.attempts++
    this.running++
    let result: Promise<void>
    try {
      result = this.options.run(item, lane.attempts, lane.group.signal)
    } catch (error) {
      result = Promise.reject(error)
    }
    result.then(
      () => this.succeeded(lane, item),
      (error: unknown) => this.failed(lane, item, error),
    )
  }

  private succeeded(lane: Lane<I>, item: I): void {
    this.running--
    this.ended(lane, undefined, false)
    if (!lane.group.dropped) {
      this.counters.handled++
      lane.shift()
      this.options.done(item, lane.group, 'handled')
      this.next(lane)
    }
    this.settle()
  }

  private failed(lane: Lane<I>, item: I, error: unknown): void {
    this.running--
    this.ended(lane, error, true)
    if (!lane.group.dropped) {
      if (error instanceof RetryLaterError) {
        this.counters.retryLater++
        lane.attempts--
        this.options.limiter.penalize(lane.merchantKey, error.retryAfterMs)
        this.waitThen(lane, error.retryAfterMs, () => this.schedule(lane))
      } else if (error instanceof PermanentFailureError) {
        this.counters.failedAttempts++
        const failure: DeadLetter = { reason: 'permanent-failure', error, attempts: lane.attempts }
        this.writeDeadLetter(lane.group, item, failure, 0, () => {
          lane.shift()
          this.next(lane)
        })
      } else if (lane.attempts < this.options.maxAttempts) {
        this.counters.failedAttempts++
        this.options.logger.debug(
          { merchantKey: lane.merchantKey, attempt: lane.attempts, err: error },
          'handler failed; retrying',
        )
        this.waitThen(lane, this.options.retryDelayMs(lane.attempts), () => this.schedule(lane))
      } else {
        this.counters.failedAttempts++
        const failure: DeadLetter = { reason: 'handler-failed', error, attempts: lane.attempts }
        this.writeDeadLetter(lane.group, item, failure, 0, () => {
          lane.shift()
          this.next(lane)
        })
      }
    }
    this.settle()
  }

  /** next schedules the lane's new head, or retires the lane when it is empty. */
  private next(lane: Lane<I>): void {
    if (lane.size > 0) {
      lane.state = 'idle'
      this.schedule(lane)
      return
    }
    lane.state = 'idle'
    if (lane.group.lanes.get(lane.merchantKey) === lane) lane.group.lanes.delete(lane.merchantKey)
  }

  private writeDeadLetter(
    group: LaneGroup<I>,
    item: I,
    failure: DeadLetter,
    failures: number,
    then: () => void,
  ): void {
    if (group.dropped || this.closed) return
    this.deadLettersRunning++
    let result: Promise<void>
    try {
      result = this.options.deadLetter(item, failure)
    } catch (error) {
      result = Promise.reject(error)
    }
    result.then(
      () => {
        this.deadLettersRunning--
        if (!group.dropped) {
          this.counters.deadLettered[failure.reason]++
          this.options.done(item, group, 'dead-lettered')
          then()
        }
        this.settle()
      },
      (error: unknown) => {
        this.deadLettersRunning--
        this.counters.deadLetterWriteFailures++
        this.options.logger.warn({ err: error, reason: failure.reason }, 'dead-letter write failed')
        this.options.wakes.after(this.options.deadLetterRetryDelayMs(failures + 1), () =>
          this.writeDeadLetter(group, item, failure, failures + 1, then),
        )
        this.settle()
      },
    )
  }

  /** release cancels a lane's wait and returns its reservation's tokens. */
  private release(lane: Lane<I>): void {
    if (lane.wake !== undefined) {
      this.options.wakes.cancel(lane.wake)
      lane.wake = undefined
    }
    lane.reservation?.cancel()
    lane.reservation = undefined
    this.unqueueCapped(lane)
    if (lane.state !== 'running') {
      lane.state = 'idle'
      if (lane.admitted) {
        lane.admitted = false
        this.options.breakers?.release(lane.merchantKey)
      }
      this.uncount(lane)
    }
  }

  /** settle wakes whenIdle waiters and refills free slots. */
  private settle(): void {
    this.pump()
    if (this.running === 0 && this.deadLettersRunning === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters
      this.idleWaiters = []
      for (const resolve of waiters) resolve()
    }
  }
}
