import type { Batch, KafkaMessage } from 'kafkajs'
import type { LimitKeys } from '../../limiter/index.js'
import { limitKeysOf, sameKeys } from '../limit-keys.js'
import type { Dispatcher } from './dispatcher.js'
import type { Lane } from './lanes.js'
import { decodeValue, type MerchantKeySource, readKey } from './message-key.js'
import type { ConsumerLimiter } from './options.js'
import { type ParkingMoves, parkedOrigin } from './parking-moves.js'
import { SKIPPED_PER_LANE_BOUND } from './parking-reads.js'
import { type BufferedMessage, messageBytes, type PartitionState } from './partition-state.js'
import type { PartitionTable } from './partition-table.js'

/**
 * BUFFER_SLICE_MS is the longest stretch MessageRouter.take buffers without letting the
 * timers run: a fetch of small messages can hold 50,000 (1 MB), and buffering them in one go
 * held the event loop ~100-260 ms, so that a throttled merchant whose reservations fell in it
 * started late and ran below its rate in the windows around it (issue 14).
 */
const BUFFER_SLICE_MS = 10

/** MessageRouterOptions give a MessageRouter where messages can go. */
export interface MessageRouterOptions<T> {
  keyOf: MerchantKeySource<T>
  /** limitKeys gives a message's limit keys (see ThrottledConsumerOptions.limitKeys); undefined: its merchant key. */
  limitKeys: ((merchantKey: string, value: T) => LimitKeys) | undefined
  maxKeyLength: number | undefined
  decode: ((value: Buffer | null, message: KafkaMessage) => T) | undefined
  /** maxBufferedPerMerchant: a source lane this full whose merchant is behind has its next messages parked. */
  maxBufferedPerMerchant: number
  /** limiter tells whether a full lane's merchant is behind (see isBehind). */
  limiter: Pick<ConsumerLimiter, 'inspect'>
  dispatcher: Pick<Dispatcher<BufferedMessage<T>>, 'push' | 'deadLetterNow'>
  partitions: Pick<
    PartitionTable<T>,
    | 'hold'
    | 'unhold'
    | 'complete'
    | 'laneBound'
    | 'overBudget'
    | 'pauseIfOverBound'
    | 'live'
    | 'resumeForReadAgain'
  >
  /** stopping says whether the consumer is stopping (a batch being taken stops with it). */
  stopping: () => boolean
  /** parking is the parking path, with parking on. */
  parking:
    | Pick<ParkingMoves<T>, 'park' | 'parksFrom' | 'holdsBack' | 'sourceRead' | 'othersToRead'>
    | undefined
  /** seek has kafkajs read a partition from `offset` on its next fetch; false when it could not. */
  seek: (state: PartitionState<T>, offset: number) => boolean
}

/**
 * MessageRouter decides where each fetched message goes: its merchant's lane, the
 * parking topic (its merchant is parked, its lane is full and behind, or the buffer is
 * over budget), the dead-letter topic (no usable key or value), or nowhere (already held,
 * or already parked by a committed move); and it pauses a partition over a bound.
 */
export class MessageRouter<T> {
  /** refetchedSkipped: messages fetched again after a rejoin and skipped (already held or done). */
  refetchedSkipped = 0
  /** parkedSkipped: source messages skipped because a committed move had parked them already. */
  parkedSkipped = 0

  constructor(private readonly options: MessageRouterOptions<T>) {}

  /**
   * take buffers a fetched batch of `state` and moves kafkajs's fetch position past what
   * it buffered with resolveOffset, which SETS the position (it is not a maximum): it is
   * always given the partition's next offset minus one. Offsets below that are already
   * held or done: a rejoin makes kafkajs fetch again from the committed offset, and those
   * duplicates are skipped here.
   *
   * A batch is taken whole, then the partition is paused if it is over a bound: taking
   * part of a batch would make kafkajs fetch and decode the rest again after every resume
   * (measured: a 5,000 bound with 1 MB fetches of small messages cut throughput by two
   * thirds). A partition thus holds at most its bounds plus one fetch. A large batch is
   * buffered in slices of BUFFER_SLICE_MS with a turn of the timers between two, so that the
   * lanes waiting for their reservations keep their pace (see BUFFER_SLICE_MS).
   */
  async take(state: PartitionState<T>, batch: Batch, resolveOffset: (offset: string) => void): Promise<void> {
    const { tracker } = state
    const messages = batch.messages
    let sliceStartMs = performance.now()
    for (let i = 0; i < messages.length; i++) {
      if ((i & 255) === 255 && performance.now() - sliceStartMs > BUFFER_SLICE_MS) {
        await new Promise((resolve) => setTimeout(resolve, 0))
        if (!this.options.partitions.live(state) || this.options.stopping()) return
        sliceStartMs = performance.now()
      }
      const message = messages[i]!
      const offset = Number(message.offset)
      const next = tracker.nextOffset
      if (next === undefined || offset >= next) this.buffer(state, message, offset)
      else if (state.reads?.merchantAt(offset) !== undefined) this.readAgain(state, message, offset)
      else this.refetchedSkipped++
    }
    const next = tracker.nextOffset
    const again = this.readAgainFrom(state, Number(messages[0]?.offset))
    if (next !== undefined && again !== undefined && again < next) resolveOffset(String(again - 1))
    else if (next !== undefined) {
      const resolved = String(next - 1)
      resolveOffset(resolved)
      // kafkajs resolves the batch's last offset instead when given its last message's
      // offset, so that trailing transaction markers are passed too: follow it.
      if (resolved === messages[messages.length - 1]?.offset)
        tracker.advanceTo(Number(batch.lastOffset()) + 1)
    }
    if (state.reads !== undefined) state.reads.seeking = false
    if (this.options.parking?.parksFrom(state)) this.options.parking.sourceRead(state)
    this.options.partitions.pauseIfOverBound(state)
  }

  /** buffer holds a message read for the first time, or again (`skippedSeq`: its place in the tracker, see ParkingReads). */
  private buffer(state: PartitionState<T>, message: KafkaMessage, offset: number, skippedSeq?: number): void {
    const { dispatcher, partitions } = this.options
    const seq = skippedSeq ?? state.tracker.track(offset)
    const bytes = messageBytes(message)
    partitions.hold(state, bytes)
    const origin = state.isParking ? parkedOrigin(message) : undefined
    let value = message.value as T
    if (this.options.decode !== undefined) {
      const decoded = decodeValue(this.options.decode, message)
      if (!decoded.ok) {
        const item = { merchantKey: '', partition: state, seq, message, value, bytes, origin }
        dispatcher.deadLetterNow(state.group, item, {
          reason: 'undecodable',
          error: decoded.error,
          attempts: 0,
        })
        return
      }
      value = decoded.value
    }
    const key = readKey(this.options.keyOf, message, value, this.options.maxKeyLength)
    if (typeof key !== 'string') {
      const item = { merchantKey: '', partition: state, seq, message, value, bytes, origin }
      const error = `invalid merchant key: ${key.reason}`
      dispatcher.deadLetterNow(state.group, item, { reason: 'invalid-key', error, attempts: 0 })
      return
    }
    // The lane's own copy of the key, when it has one: a backlog of N messages holds one key string, not N.
    const lane = state.group.lanes.get(key)
    const merchantKey = lane?.merchantKey ?? key
    const limitKeys = this.limitKeysOf(state, merchantKey, lane, { message, value, seq, bytes, origin })
    if (limitKeys === null) return
    const item: BufferedMessage<T> & { limitKeys?: LimitKeys } =
      this.options.decode === undefined && origin === undefined
        ? { merchantKey, partition: state, seq, message, bytes }
        : { merchantKey, partition: state, seq, message, bytes, value, origin }
    // Only with the option: without it an item is kept to the fields it needs.
    if (limitKeys !== undefined) item.limitKeys = limitKeys
    if (this.routeToParking(state, item, offset)) return
    // A message read again passed the read-back gate when it was first read: straight to its lane.
    if (skippedSeq !== undefined) this.toLane(item)
    else if (origin === undefined || !this.options.parking?.holdsBack(item)) this.admit(item)
  }

  /**
   * limitKeysOf is a message's limit keys (undefined without the option: its merchant key
   * alone), or null when the option refused them and the message was dead-lettered as
   * `invalid-key`. A list equal to its lane head's is that list: a lane of N messages
   * holds one list, not N.
   */
  private limitKeysOf(
    state: PartitionState<T>,
    merchantKey: string,
    lane: Lane<BufferedMessage<T>> | undefined,
    read: Pick<BufferedMessage<T>, 'message' | 'seq' | 'bytes' | 'origin'> & { value: T },
  ): LimitKeys | undefined | null {
    const { limitKeys, maxKeyLength } = this.options
    if (limitKeys === undefined) return undefined
    const check = limitKeysOf(limitKeys, merchantKey, read.value, maxKeyLength)
    if (!check.ok) {
      const item = { merchantKey, partition: state, ...read }
      const error = `invalid limit keys: ${check.reason}`
      this.options.dispatcher.deadLetterNow(state.group, item, { reason: 'invalid-key', error, attempts: 0 })
      return null
    }
    const head = lane?.peek()?.limitKeys
    return head !== undefined && sameKeys(head, check.keys) ? head : check.keys
  }

  /** admit puts a message in its lane, or passes over it when its lane is full on a shared parking partition. */
  admit(item: BufferedMessage<T>): void {
    if (item.origin !== undefined) item.partition.reads?.read(item.merchantKey, item.origin.offset)
    if (!this.skips(item)) this.toLane(item)
  }

  /**
   * skips passes over a message of a parking partition (see ParkingReads) when its merchant
   * has messages passed over already (its order), or when its lane is full and another
   * merchant of the partition has messages to read or passed over: it is read again once
   * the lane has drained to half. A full lane alone on its partition fills past its bound
   * and pauses the partition, as before (reading on would serve no one), and so does any at
   * SKIPPED_PER_LANE_BOUND messages passed over, the last resort.
   */
  private skips(item: BufferedMessage<T>): boolean {
    const state = item.partition
    const { reads } = state
    const parking = this.options.parking
    if (reads === undefined || parking === undefined) return false
    const { merchantKey } = item
    const hasRoom = (merchant: string) => this.hasRoom(state, merchant)
    const atBound = reads.size >= this.options.partitions.laneBound(state) * SKIPPED_PER_LANE_BOUND
    let othersToRead: boolean | undefined
    const readOn = () => {
      othersToRead ??= !atBound && parking.othersToRead(state, merchantKey, hasRoom)
      return othersToRead
    }
    if (!reads.skipping(merchantKey)) {
      if (hasRoom(merchantKey) || atBound || (reads.size === 0 && !readOn())) return false
    }
    reads.passOver(merchantKey, Number(item.message.offset), item.seq)
    this.options.partitions.unhold(state, item.bytes)
    if (readOn()) return true
    // Reading on serves no one: pause while this lane drains, or read its skipped messages
    // again now if it already has (a paused partition with no lane left would never resume).
    const lane = state.group.lanes.get(merchantKey)
    if ((lane?.size ?? 0) > this.options.partitions.laneBound(state) / 2) state.fullLane = merchantKey
    else this.readAgainIfRoom(state)
    return true
  }

  private hasRoom(state: PartitionState<T>, merchantKey: string): boolean {
    return (state.group.lanes.get(merchantKey)?.size ?? 0) < this.options.partitions.laneBound(state)
  }

  /** readAgain takes back a message passed over, if it is its merchant's oldest and its lane has room. */
  private readAgain(state: PartitionState<T>, message: KafkaMessage, offset: number): void {
    const reads = state.reads!
    const merchantKey = reads.merchantAt(offset)!
    if (reads.front(merchantKey)?.offset !== offset || !this.hasRoom(state, merchantKey)) return
    this.buffer(state, message, offset, reads.take(merchantKey)!.seq)
  }

  /**
   * readAgainFrom is where a batch of a parking partition goes on reading when a merchant
   * can take back a message passed over at or after the batch's first offset: there, not
   * at the partition's end. Further back is for readAgainIfRoom's seek.
   */
  private readAgainFrom(state: PartitionState<T>, firstOffset: number): number | undefined {
    const reads = state.reads
    if (reads === undefined || reads.size === 0 || !Number.isSafeInteger(firstOffset)) return undefined
    return reads.earliest((merchant) => this.hasRoom(state, merchant), firstOffset - 1)
  }

  /**
   * readAgainIfRoom asks kafkajs to read parking partition `state` again from the oldest
   * message passed over of a merchant whose lane has drained to half (a seek), unless one
   * is on its way: a partition read to its end gets no batch that could go back by itself.
   */
  readAgainIfRoom(state: PartitionState<T>): void {
    const reads = state.reads
    if (reads === undefined || reads.size === 0 || reads.seeking) return
    const half = this.options.partitions.laneBound(state) / 2
    const from = reads.earliest((merchant) => (state.group.lanes.get(merchant)?.size ?? 0) <= half)
    if (from === undefined) return
    reads.seeking = this.options.seek(state, from)
    // Paused for a full lane: the read again is for another lane, and needs the partition fetched.
    if (reads.seeking) this.options.partitions.resumeForReadAgain(state)
  }

  /** toLane puts a message in its merchant's lane, marking the partition's lane over its bound. */
  toLane(item: BufferedMessage<T>): void {
    const state = item.partition
    this.options.dispatcher.push(state.group, item)
    const lane = state.group.lanes.get(item.merchantKey)
    if (lane !== undefined && lane.size > this.options.partitions.laneBound(state))
      state.fullLane = item.merchantKey
  }

  /**
   * routeToParking sends a source message to the parking topic when its merchant has
   * messages parked (so its order holds), when its lane is full, or when the buffer is over
   * its byte budget; a message a committed move already parked (before a restart) is
   * skipped. It says whether the message took that path.
   */
  private routeToParking(state: PartitionState<T>, item: BufferedMessage<T>, offset: number): boolean {
    const parking = this.options.parking
    if (parking === undefined || !parking.parksFrom(state)) return false
    const { merchantKey } = item
    if (state.parked.covers(merchantKey, offset)) {
      this.parkedSkipped++
      this.options.partitions.complete(item)
      return true
    }
    // Read again after a restart: older than the parked stretch, so it runs from the lane first.
    if (state.parked.precedes(merchantKey, offset)) return false
    const lane = state.group.lanes.get(merchantKey)
    const full = lane !== undefined && lane.size >= this.options.maxBufferedPerMerchant && this.isBehind(lane)
    if (!state.parked.has(merchantKey) && !full && !this.options.partitions.overBudget) return false
    // What the merchant's source lane holds stays there and runs first: its parking lane
    // waits behind it (ParkingMoves.sourceLane), so the merchant keeps its pace while the move is made.
    return parking.park(item)
  }

  /**
   * isBehind says whether a full lane is a backlog: its merchant's bucket holds fewer tokens
   * than the lane holds messages (it cannot run them all now), or so does a parent key of
   * its head's limit keys, or it waits for a retry, its breaker, its cap or its parent's
   * share. A merchant whose limits do not bind may hold a whole fetch in its lane (up to
   * maxBufferedPerPartition): parking it would only cost a second write.
   */
  private isBehind(lane: Lane<BufferedMessage<T>>): boolean {
    if (lane.state === 'waiting' && !lane.reserved) return true
    const limiter = this.options.limiter
    if (limiter.inspect === undefined) return true
    const keys = lane.peek()?.limitKeys
    if (keys === undefined || typeof keys === 'string') {
      const bucket = limiter.inspect(keys ?? lane.merchantKey)
      return bucket === undefined || bucket.tokens < lane.size
    }
    const innermost = limiter.inspect(keys[keys.length - 1]!)
    if (innermost === undefined || innermost.tokens < lane.size) return true
    // A parent not held has no bucket: it has no rate of its own, or nothing spent from it.
    for (let i = 0; i < keys.length - 1; i++) {
      const parent = limiter.inspect(keys[i]!)
      if (parent !== undefined && parent.tokens < lane.size) return true
    }
    return false
  }
}
