import { Deque } from './deque.js'
import type { Timed } from './wake-queue.js'

/**
 * LaneState is where a lane's head message is: `idle` (lane empty, or not scheduled),
 * `waiting` (for its reservation, a retry delay or a Retry-After), `ready` (granted,
 * queued for a concurrency slot) or `running` (handler or dead-letter in flight).
 */
export type LaneState = 'idle' | 'waiting' | 'ready' | 'running'

/**
 * LaneWake says what a waiting lane does when its wake-up fires: ask again (`ASK`), or
 * join the ready queue with the grant it holds (`READY`).
 */
export const LaneWake = { ASK: 1, READY: 2 } as const
export type LaneWake = (typeof LaneWake)[keyof typeof LaneWake]

/**
 * Lane is one merchant's messages of one partition, in offset order. Only the head runs;
 * the rest wait behind it, so a merchant's messages are handled in the order they were
 * produced while other lanes of the same partition run independently. A lane is its own
 * wake-up (Timed: an entry of the dispatcher's TimerHeap), and holds its head inline: most
 * lanes only ever hold one message, so the queue behind the head exists only once needed.
 */
export class Lane<I> implements Timed {
  state: LaneState = 'idle'
  /** attempts is how many times the head item has been tried; 0 before its first try. */
  attempts = 0
  /**
   * reservation is the row, in the dispatcher's ReservationBook, of the reservation that
   * holds the head's tokens from grant until the handler starts; -1 when none.
   */
  reservation = -1
  /** late: the head's grant came back, or waited through a hold, past LATE_TOLERANCE_MS (it asks again). */
  late = false
  /** counted: the head holds one of its merchant's in-flight places, from its admission until its handler ends. */
  counted = false
  /** admitted: the merchant's breaker let the head through (maybe as the probe); its outcome is owed. */
  admitted = false
  dueMs = 0
  heapIndex = -1
  seq = 0
  /** onWake is what the lane does when its wake-up fires (see LaneWake). */
  onWake: LaneWake = LaneWake.ASK
  private head: I | undefined
  private rest: Deque<I> | undefined
  private count = 0

  constructor(
    readonly merchantKey: string,
    readonly group: LaneGroup<I>,
  ) {}

  /** size is the number of items in the lane, the head included. */
  get size(): number {
    return this.count
  }

  /** reserved says whether the lane holds a reservation (see reservation). */
  get reserved(): boolean {
    return this.reservation >= 0
  }

  /** waking says whether the lane's wake-up is pending. */
  get waking(): boolean {
    return this.heapIndex >= 0
  }

  push(item: I): void {
    if (this.count === 0) this.head = item
    else {
      this.rest ??= new Deque<I>(2)
      this.rest.push(item)
    }
    this.count++
  }

  /** peek returns the head item, or undefined when empty. */
  peek(): I | undefined {
    return this.head
  }

  /** shift removes the head item; the next one becomes the head, with no attempt made yet. */
  shift(): I | undefined {
    this.attempts = 0
    if (this.count === 0) return undefined
    const item = this.head
    this.head = this.rest?.shift()
    this.count--
    return item
  }
}

/**
 * LaneGroup holds the lanes of one partition, by merchant key. A lane exists only while
 * it holds items, so memory follows buffered messages, not merchants ever seen. Dropping
 * the group (partition revoked) aborts its signal and makes every later completion of
 * its items a no-op.
 */
export class LaneGroup<I> {
  readonly lanes = new Map<string, Lane<I>>()
  private readonly controller = new AbortController()
  private isDropped = false

  constructor(readonly name: string) {}

  /** signal aborts when the group is dropped or the consumer gives up in-flight work. */
  get signal(): AbortSignal {
    return this.controller.signal
  }

  /** dropped is true once the group's partition is no longer this consumer's. */
  get dropped(): boolean {
    return this.isDropped
  }

  /** laneFor returns the lane of `merchantKey`, creating it when absent. */
  laneFor(merchantKey: string): Lane<I> {
    let lane = this.lanes.get(merchantKey)
    if (lane === undefined) {
      lane = new Lane(merchantKey, this)
      this.lanes.set(merchantKey, lane)
    }
    return lane
  }

  /**
   * abort marks the group dropped (every later completion of its items is a no-op) and
   * aborts its signal with `reason`, telling in-flight handlers their result no longer counts.
   */
  abort(reason: string): void {
    this.isDropped = true
    this.controller.abort(new Error(reason))
  }
}
