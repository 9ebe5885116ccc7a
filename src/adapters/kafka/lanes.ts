import { Deque } from './deque.js'
import type { LaneItem } from './dispatcher.js'
import { LaneTable } from './lane-table.js'
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
export const LaneWake = { ASK: 0, READY: 1 } as const
export type LaneWake = (typeof LaneWake)[keyof typeof LaneWake]

const STATES: readonly LaneState[] = ['idle', 'waiting', 'ready', 'running']
const STATE_MASK = 0b11
const LATE = 1 << 2
const COUNTED = 1 << 3
const ADMITTED = 1 << 4
const WAKE_READY = 1 << 5
/** ATTEMPT is one attempt in Lane.bits: attempts count above the flags (arithmetic, so any count fits). */
const ATTEMPT = 1 << 6

/**
 * Lane is one merchant's messages of one partition, in offset order. Only the head runs;
 * the rest wait behind it, so a merchant's messages are handled in the order they were
 * produced while other lanes of the same partition run independently.
 *
 * One lane exists per merchant with messages held, so it is kept small: it is its own
 * wake-up (Timed: an entry of the dispatcher's TimerHeap, no timer object or closure), its
 * reservation is a row of the dispatcher's ReservationBook, its state and flags share one
 * small integer, and its items share one field with its key (see items): most lanes hold
 * one message at a time, so the queue exists only while there are more.
 */
export class Lane<I extends LaneItem> implements Timed {
  /**
   * reservation is the row, in the dispatcher's ReservationBook, of the reservation that
   * holds the head's tokens from grant until the handler starts; -1 when none.
   */
  reservation = -1
  heapIndex = -1
  /** bits holds the state and flags (STATE_MASK, LATE, COUNTED, ADMITTED, WAKE_READY) plus attempts × ATTEMPT. */
  private bits = 0
  /**
   * items is the head item when the lane holds one, a Deque from the head on when it holds
   * more, and the merchant key when it holds none. Every item of a lane has the lane's key,
   * so the key is read from the head while there is one: one field instead of three.
   */
  private items: I | Deque<I> | string

  constructor(
    merchantKey: string,
    readonly group: LaneGroup<I>,
  ) {
    this.items = merchantKey
  }

  /** merchantKey is the key of the merchant whose messages the lane holds. */
  get merchantKey(): string {
    const items = this.items
    if (typeof items === 'string') return items
    return items instanceof Deque ? items.peek()!.merchantKey : items.merchantKey
  }

  /** attempts is how many times the head item has been tried; 0 before its first try. */
  get attempts(): number {
    return Math.floor(this.bits / ATTEMPT)
  }

  set attempts(attempts: number) {
    this.bits = this.flags + attempts * ATTEMPT
  }

  get state(): LaneState {
    return STATES[this.flags & STATE_MASK]!
  }

  set state(state: LaneState) {
    this.bits += ((this.flags & ~STATE_MASK) | STATES.indexOf(state)) - this.flags
  }

  /** late: the head's grant came back, or waited through a hold, past LATE_TOLERANCE_MS (it asks again). */
  get late(): boolean {
    return (this.flags & LATE) !== 0
  }

  set late(late: boolean) {
    this.flag(LATE, late)
  }

  /** counted: the head holds one of its merchant's in-flight places, from its admission until its handler ends. */
  get counted(): boolean {
    return (this.flags & COUNTED) !== 0
  }

  set counted(counted: boolean) {
    this.flag(COUNTED, counted)
  }

  /** admitted: the merchant's breaker let the head through (maybe as the probe); its outcome is owed. */
  get admitted(): boolean {
    return (this.flags & ADMITTED) !== 0
  }

  set admitted(admitted: boolean) {
    this.flag(ADMITTED, admitted)
  }

  /** onWake is what the lane does when its wake-up fires (see LaneWake). */
  get onWake(): LaneWake {
    return this.flags & WAKE_READY ? LaneWake.READY : LaneWake.ASK
  }

  set onWake(onWake: LaneWake) {
    this.flag(WAKE_READY, onWake === LaneWake.READY)
  }

  /** size is the number of items in the lane, the head included. */
  get size(): number {
    const items = this.items
    if (typeof items === 'string') return 0
    return items instanceof Deque ? items.length : 1
  }

  /** reserved says whether the lane holds a reservation (see reservation). */
  get reserved(): boolean {
    return this.reservation >= 0
  }

  /** waking says whether the lane's wake-up is pending. */
  get waking(): boolean {
    return this.heapIndex >= 0
  }

  /** push appends `item`, which has the lane's merchant key. */
  push(item: I): void {
    const items = this.items
    if (typeof items === 'string') this.items = item
    else if (items instanceof Deque) items.push(item)
    else {
      const queue = new Deque<I>(2)
      queue.push(items)
      queue.push(item)
      this.items = queue
    }
  }

  /** peek returns the head item, or undefined when empty. */
  peek(): I | undefined {
    const items = this.items
    if (typeof items === 'string') return undefined
    return items instanceof Deque ? items.peek() : items
  }

  /** shift removes the head item; the next one becomes the head, with no attempt made yet. */
  shift(): I | undefined {
    this.bits = this.flags
    const items = this.items
    if (typeof items === 'string') return undefined
    if (!(items instanceof Deque)) {
      this.items = items.merchantKey
      return items
    }
    const item = items.shift()
    if (items.length === 1) this.items = items.peek()!
    return item
  }

  /** flags are the state and flags part of bits. */
  private get flags(): number {
    return this.bits % ATTEMPT
  }

  private flag(bit: number, on: boolean): void {
    const flags = this.flags
    this.bits += (on ? flags | bit : flags & ~bit) - flags
  }
}

/**
 * LaneGroup holds the lanes of one partition, by merchant key (a LaneTable). A lane exists only while
 * it holds items, so memory follows buffered messages, not merchants ever seen. Dropping
 * the group (partition revoked) aborts its signal and makes every later completion of
 * its items a no-op.
 */
export class LaneGroup<I extends LaneItem> {
  readonly lanes = new LaneTable<Lane<I>>()
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
      this.lanes.set(lane)
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
