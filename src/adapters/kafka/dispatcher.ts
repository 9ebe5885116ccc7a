import type { Logger } from 'pino'
import { PermanentFailureError, RetryLaterError } from '../../errors.js'
import { type Deferred, type LimitKeys, ReservationBook } from '../../limiter/index.js'
import { innermostKey } from '../limit-keys.js'
import type { DeadLetter, DeadLetterReason } from './dead-letter.js'
import { DeadLetterWriter } from './dead-letter-writer.js'
import { Deque } from './deque.js'
import { type LaneBreakers, LaneGate, type LaneSlots } from './gate.js'
import { type Lane, LaneGroup, LaneWake } from './lanes.js'
import type { TimerHeap, WakeQueue } from './wake-queue.js'

/** LaneLimiter is what the dispatcher needs of a KeyedLimiter. */
export interface LaneLimiter {
  tryAcquire(keys: LimitKeys, cost?: number): boolean
  /** reserveIn reserves with the grant held as a row of `book` (see KeyedLimiter.reserveIn). */
  reserveIn(book: ReservationBook, keys: LimitKeys, cost?: number): number | Deferred
  /** cancelIn cancels the reservation of `row` and frees the row (see KeyedLimiter.cancelIn). */
  cancelIn(book: ReservationBook, row: number): boolean
  penalize(key: string, retryAfterMs: number): void
  /** now is the limiter's clock, in ms: reservation times are on it. */
  now(): number
}

/**
 * FAIR_SCAN_LANES is how many ready lanes, from the front of the ready queue, the
 * dispatcher compares when it picks the next one to start: the one whose merchant has the
 * fewest jobs in flight. Bounded, so that a start costs the same with 100,000 lanes ready.
 */
export const FAIR_SCAN_LANES = 32

/**
 * LATE_TOLERANCE_MS is how late a granted head may start and still use its grant: the
 * limiter's default clock-skew tolerance. A head that starts later (a rebalance held the
 * lanes, the event loop stalled) asks the limiter again, so that a pause never turns into
 * a burst of every slot it missed (issue 15, item 11).
 */
export const LATE_TOLERANCE_MS = 100

/** LaneItem is what a lane carries: anything with a merchant key. */
export interface LaneItem {
  readonly merchantKey: string
  /** limitKeys are the keys its tokens are taken from, when not its merchant key alone. */
  readonly limitKeys?: LimitKeys
}

/** Outcome is how a message ended: its handler succeeded, or it was dead-lettered. */
export type Outcome = 'handled' | 'dead-lettered'

/** DispatcherOptions wire a Dispatcher to its limiter, handler and dead-letter sink. */
export interface DispatcherOptions<I extends LaneItem> {
  limiter: LaneLimiter
  /** wakes times reservation waits and retries on the limiter's clock (the lanes' own heap is made on it). */
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
  /** inFlight: see ThrottledConsumerOptions.inFlight. Without it, ready lanes start in order. */
  inFlight?: LaneSlots
  /** breakers: see ThrottledConsumerOptions.breakers. */
  breakers?: LaneBreakers
  /** isEndpointFailure says whether a handler error counts against the breaker. Default: RetryableFailureError. */
  isEndpointFailure?: (error: unknown) => boolean
  /** done is told of each item that is finished, once, unless its group was dropped first. */
  done: (item: I, group: LaneGroup<I>, outcome: Outcome) => void
  /**
   * behind names the lane that must empty before `lane` may start: the lane of the same
   * merchant holding its older messages (a parking lane waits for its source lane).
   */
  behind?: (lane: Lane<I>) => Lane<I> | undefined
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
  /** deferred: reservations refused for now (beyond the horizon, table full, parent share taken); asked again later. */
  deferred: number
  /** lateGrants: grants given up and asked again because the head started later than LATE_TOLERANCE_MS. */
  lateGrants: number
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

/**
 * Dispatcher runs the lanes: it asks the limiter for each lane's head, waits for the
 * reservation without holding a concurrency slot, runs handlers up to `concurrency` at
 * once, retries failures with backoff in place (order kept), honours RetryLaterError,
 * and dead-letters what keeps failing. It knows nothing of Kafka: a LaneGroup stands
 * for a partition, and `done` tells the owner which items are finished.
 */
export class Dispatcher<I extends LaneItem> {
  private readonly groups = new Set<LaneGroup<I>>()
  private readonly readyQueue = new Deque<Lane<I>>(16)
  private running = 0
  private held = false
  /** heldSinceMs is when the current hold began, on the limiter's clock. */
  private heldSinceMs = 0
  private closed = false
  private idleWaiters: (() => void)[] = []
  private readonly counters = {
    grantedNow: 0,
    delayed: 0,
    deferred: 0,
    lateGrants: 0,
    handled: 0,
    failedAttempts: 0,
    retryLater: 0,
  }
  private readonly gate: LaneGate<I>
  /** waitingBehind: per lane, the lanes waiting for it to empty (see DispatcherOptions.behind). */
  private readonly waitingBehind = new Map<Lane<I>, Lane<I>[]>()
  private readonly deadLetters: DeadLetterWriter<I>
  /** laneWakes times the lanes' waits: each lane is its own entry, so a wait allocates nothing. */
  private readonly laneWakes: TimerHeap<Lane<I>>
  /** reservations holds the waiting lanes' reservations packed, one row each (see Lane.reservation). */
  private readonly reservations = new ReservationBook()

  constructor(private readonly options: DispatcherOptions<I>) {
    this.laneWakes = options.wakes.heapOf<Lane<I>>((lane) => this.woke(lane))
    this.gate = new LaneGate<I>({
      inFlight: options.inFlight,
      breakers: options.breakers,
      isEndpointFailure: options.isEndpointFailure,
      wait: (lane, delayMs) => this.waitThen(lane, delayMs, LaneWake.ASK),
      retry: (lane) => this.schedule(lane),
    })
    this.deadLetters = new DeadLetterWriter<I>({
      write: options.deadLetter,
      retryDelayMs: options.deadLetterRetryDelayMs,
      wakes: options.wakes,
      written: (item, group) => options.done(item, group, 'dead-lettered'),
      settled: () => this.settle(),
      logger: options.logger,
    })
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
    this.deadLetters.write(group, item, failure, () => undefined)
  }

  /**
   * drop gives up a group: its waiting lanes stop, their reservations are cancelled, its
   * signal aborts, and completions of its in-flight items are ignored.
   */
  drop(group: LaneGroup<I>, reason: string): void {
    if (!this.groups.delete(group)) return
    for (const lane of group.lanes.values()) this.release(lane)
    const lanes = [...group.lanes.values()]
    group.lanes.clear()
    group.abort(reason)
    for (const lane of lanes) this.wakeBehind(lane)
    this.pump()
  }

  /** hold stops handlers from starting (during a rebalance); lanes keep their place. */
  hold(): void {
    if (!this.held) this.heldSinceMs = this.options.limiter.now()
    this.held = true
  }

  /**
   * resume lets held lanes start again. After a hold longer than LATE_TOLERANCE_MS the
   * grants of the lanes that waited through it are late: they ask again (see start).
   */
  resume(): void {
    if (this.held && this.options.limiter.now() - this.heldSinceMs > LATE_TOLERANCE_MS) {
      for (const lane of this.readyQueue) lane.late = true
    }
    this.held = false
    this.pump()
  }

  /**
   * close stops for good: no handler starts any more, waits are cancelled and their
   * reservations cancelled. In-flight handlers finish (see whenIdle).
   */
  close(): void {
    this.closed = true
    this.deadLetters.close()
    for (const group of this.groups) for (const lane of group.lanes.values()) this.release(lane)
    this.options.wakes.clear()
    this.laneWakes.clear()
  }

  /** whenIdle resolves once no handler and no dead-letter write is in flight. */
  whenIdle(): Promise<void> {
    if (this.idle) return Promise.resolve()
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
      deadLettered: { ...this.deadLetters.written },
      deadLetterWriteFailures: this.deadLetters.writeFailures,
      capped: this.gate.capped,
      breakerOpen: this.gate.breakerOpen,
      lanes,
      lanesWaiting,
      lanesReady,
      inFlight: this.running,
      deadLettersInFlight: this.deadLetters.running,
    }
  }

  private get idle(): boolean {
    return this.running === 0 && this.deadLetters.running === 0
  }

  /** schedule takes the lane's head past the gate, then asks the limiter for it. */
  private schedule(lane: Lane<I>): void {
    if (this.closed || lane.group.dropped) return
    const before = this.options.behind?.(lane)
    if (before !== undefined && before !== lane && before.size > 0 && !before.group.dropped) {
      lane.state = 'waiting'
      const waiting = this.waitingBehind.get(before)
      if (waiting === undefined) this.waitingBehind.set(before, [lane])
      else waiting.push(lane)
      return
    }
    if (!this.gate.admit(lane)) return
    if (this.ask(lane)) this.enqueueReady(lane, this.options.limiter.now())
  }

  /**
   * ask asks the limiter for the lane's head: true when it may run now, otherwise the lane
   * waits for its reservation (or to ask again) and ask says false. A token there now is
   * taken with tryAcquire (no reservation object on the hot path); only a lane that must
   * wait holds a reservation, which drop and close cancel. The head's limit keys are asked
   * for (its merchant key alone by default); a deferral of any reason (beyond the horizon,
   * the table full, the parent's share taken) asks again after its delay.
   */
  private ask(lane: Lane<I>): boolean {
    const limiter = this.options.limiter
    const keys = limitKeysOf(lane)
    if (limiter.tryAcquire(keys)) {
      this.counters.grantedNow++
      return true
    }
    const reservation = limiter.reserveIn(this.reservations, keys)
    if (typeof reservation !== 'number') {
      this.counters.deferred++
      this.waitThen(lane, reservation.delayMs, LaneWake.ASK)
      return false
    }
    lane.reservation = reservation
    const delayMs = this.reservations.lastDelayMs
    if (delayMs <= 0) {
      this.counters.grantedNow++
      return true
    }
    this.counters.delayed++
    this.waitThen(lane, delayMs, LaneWake.READY)
    return false
  }

  /** waitThen puts the lane to sleep for `delayMs`; then it asks again, or joins the ready queue with its grant. */
  private waitThen(lane: Lane<I>, delayMs: number, then: LaneWake): void {
    lane.state = 'waiting'
    lane.onWake = then
    this.laneWakes.schedule(lane, delayMs)
  }

  private woke(lane: Lane<I>): void {
    if (lane.onWake === LaneWake.READY && lane.reserved)
      this.enqueueReady(lane, this.reservations.reservedAtMs(lane.reservation))
    else this.schedule(lane)
  }

  /**
   * enqueueReady queues a granted lane for a slot; `grantedForMs` is when its grant was for.
   * A grant that comes back more than LATE_TOLERANCE_MS after its time (the event loop
   * stalled) is late: it asks again when it starts. Waiting for a slot afterwards is not
   * lateness: the token was spent for this head, and asking again would charge it twice.
   */
  private enqueueReady(lane: Lane<I>, grantedForMs: number): void {
    lane.state = 'ready'
    lane.late = this.options.limiter.now() - grantedForMs > LATE_TOLERANCE_MS
    if (this.readyQueue.length === 0 && this.canStart()) {
      this.start(lane)
      return
    }
    this.readyQueue.push(lane)
    this.pump()
  }

  private canStart(): boolean {
    return !this.held && !this.closed && this.running < this.options.concurrency
  }

  /** pump starts ready lanes while slots are free. */
  private pump(): void {
    while (this.canStart()) {
      const lane = this.nextReady()
      if (lane === undefined) return
      this.start(lane)
    }
  }

  private nextReady(): Lane<I> | undefined {
    const inFlight = this.gate.inFlight
    if (inFlight !== undefined) this.fewestInFlightFirst(inFlight)
    for (;;) {
      const lane = this.readyQueue.shift()
      if (lane === undefined) return undefined
      if (lane.state === 'ready' && !lane.group.dropped) return lane
    }
  }

  /**
   * fewestInFlightFirst moves, among the first FAIR_SCAN_LANES ready lanes, the one whose
   * merchant has the fewest jobs in flight to the front (the front lane takes its place).
   */
  private fewestInFlightFirst(inFlight: LaneSlots): void {
    const queue = this.readyQueue
    const end = Math.min(queue.length, FAIR_SCAN_LANES)
    let best = -1
    let bestCount = Number.POSITIVE_INFINITY
    for (let i = 0; i < end; i++) {
      const lane = queue.at(i)!
      if (lane.state !== 'ready' || lane.group.dropped) continue
      const count = inFlight.count(lane.merchantKey)
      if (count < bestCount) {
        best = i
        bestCount = count
      }
    }
    if (best > 0) {
      const front = queue.at(0)!
      queue.set(0, queue.at(best)!)
      queue.set(best, front)
    }
  }

  /**
   * start runs the lane's head. A late grant (a stalled wake, or a hold it waited through)
   * no longer holds a slot the merchant can take now: it is given up (a reservation whose
   * time has passed returns nothing) and the head asks again, charged in the window it runs
   * in; it runs at once if a token is there, so it keeps its turn.
   */
  private start(lane: Lane<I>): void {
    if (lane.late) {
      lane.late = false
      this.counters.lateGrants++
      this.forgetReservation(lane)
      if (!this.ask(lane)) return
    }
    const item = lane.peek()!
    lane.state = 'running'
    this.forgetReservation(lane)
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
    this.gate.ended(lane, undefined, false)
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
    this.gate.ended(lane, error, true)
    if (lane.group.dropped) {
      this.settle()
      return
    }
    if (error instanceof RetryLaterError) {
      this.counters.retryLater++
      lane.attempts--
      this.options.limiter.penalize(innermostKey(item.limitKeys ?? item.merchantKey), error.retryAfterMs)
      this.waitThen(lane, error.retryAfterMs, LaneWake.ASK)
    } else {
      this.counters.failedAttempts++
      if (error instanceof PermanentFailureError) this.deadLetterHead(lane, item, 'permanent-failure', error)
      else if (lane.attempts >= this.options.maxAttempts)
        this.deadLetterHead(lane, item, 'handler-failed', error)
      else {
        this.options.logger.debug(
          { merchantKey: lane.merchantKey, attempt: lane.attempts, err: error },
          'handler failed; retrying',
        )
        this.waitThen(lane, this.options.retryDelayMs(lane.attempts), LaneWake.ASK)
      }
    }
    this.settle()
  }

  /** deadLetterHead dead-letters the lane's head, then moves on to the next item. */
  private deadLetterHead(lane: Lane<I>, item: I, reason: DeadLetterReason, error: unknown): void {
    this.deadLetters.write(lane.group, item, { reason, error, attempts: lane.attempts }, () => {
      lane.shift()
      this.next(lane)
    })
  }

  /** next schedules the lane's new head, or retires the lane when it is empty. */
  private next(lane: Lane<I>): void {
    lane.state = 'idle'
    if (lane.size > 0) {
      this.schedule(lane)
      return
    }
    if (lane.group.lanes.get(lane.merchantKey) === lane) lane.group.lanes.delete(lane.merchantKey)
    this.wakeBehind(lane)
  }

  /** wakeBehind schedules the lanes that waited for `lane` to empty. */
  private wakeBehind(lane: Lane<I>): void {
    const waiting = this.waitingBehind.get(lane)
    if (waiting === undefined) return
    this.waitingBehind.delete(lane)
    for (const next of waiting) {
      if (next.state !== 'waiting' || next.group.dropped || next.waking) continue
      next.state = 'idle'
      this.schedule(next)
    }
  }

  /**
   * release cancels a lane's wait and gives back its admission. Its reservation is
   * cancelled only while its time is still ahead: once that time has passed the slot is
   * spent, whether or not the head ran in it (as Go's x/time/rate, which restores nothing
   * for a reservation whose time has passed), so a dropped partition never hands a
   * merchant back tokens for a moment that is gone.
   */
  private release(lane: Lane<I>): void {
    this.laneWakes.cancel(lane)
    this.cancelIfAhead(lane)

    this.gate.release(lane)
    if (lane.state !== 'running') lane.state = 'idle'
  }

  private cancelIfAhead(lane: Lane<I>): void {
    if (!lane.reserved) return
    if (this.reservations.reservedAtMs(lane.reservation) > this.options.limiter.now()) {
      this.options.limiter.cancelIn(this.reservations, lane.reservation)
      lane.reservation = -1
    } else this.forgetReservation(lane)
  }

  /** forgetReservation frees the lane's reservation row, refunding nothing (the head runs, or its time passed). */
  private forgetReservation(lane: Lane<I>): void {
    if (!lane.reserved) return
    this.reservations.release(lane.reservation)
    lane.reservation = -1
  }

  /** settle wakes whenIdle waiters and refills free slots. */
  private settle(): void {
    this.pump()
    if (this.idle && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters
      this.idleWaiters = []
      for (const resolve of waiters) resolve()
    }
  }
}

/** limitKeysOf is the keys the lane's head is limited by. */
function limitKeysOf<I extends LaneItem>(lane: Lane<I>): LimitKeys {
  const head = lane.peek()
  return head?.limitKeys ?? lane.merchantKey
}
