import type { Batch, KafkaMessage } from 'kafkajs'
import type { Dispatcher } from './dispatcher.js'
import type { Lane } from './lanes.js'
import { decodeValue, type MerchantKeySource, readKey } from './message-key.js'
import type { ConsumerLimiter } from './options.js'
import { type ParkingMoves, parkedOrigin } from './parking-moves.js'
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
  maxKeyLength: number | undefined
  decode: ((value: Buffer | null, message: KafkaMessage) => T) | undefined
  /** maxBufferedPerMerchant: a source lane this full whose merchant is behind has its next messages parked. */
  maxBufferedPerMerchant: number
  /** limiter tells whether a full lane's merchant is behind (see isBehind). */
  limiter: Pick<ConsumerLimiter, 'inspect'>
  dispatcher: Pick<Dispatcher<BufferedMessage<T>>, 'push' | 'deadLetterNow'>
  partitions: Pick<
    PartitionTable<T>,
    'hold' | 'complete' | 'laneBound' | 'overBudget' | 'pauseIfOverBound' | 'live'
  >
  /** stopping says whether the consumer is stopping (a batch being taken stops with it). */
  stopping: () => boolean
  /** parking is the parking path, with parking on. */
  parking: Pick<ParkingMoves<T>, 'park' | 'parksFrom' | 'holdsBack' | 'sourceRead'> | undefined
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
      if (next !== undefined && offset < next) this.refetchedSkipped++
      else this.buffer(state, message, offset)
    }
    const next = tracker.nextOffset
    if (next !== undefined) {
      const resolved = String(next - 1)
      resolveOffset(resolved)
      // kafkajs resolves the batch's last offset instead when given its last message's
      // offset, so that trailing transaction markers are passed too: follow it.
      if (resolved === messages[messages.length - 1]?.offset)
        tracker.advanceTo(Number(batch.lastOffset()) + 1)
    }
    if (this.options.parking?.parksFrom(state)) this.options.parking.sourceRead(state)
    this.options.partitions.pauseIfOverBound(state)
  }

  private buffer(state: PartitionState<T>, message: KafkaMessage, offset: number): void {
    const { dispatcher, partitions } = this.options
    const seq = state.tracker.track(offset)
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
    const merchantKey = state.group.lanes.get(key)?.merchantKey ?? key
    const item: BufferedMessage<T> =
      this.options.decode === undefined && origin === undefined
        ? { merchantKey, partition: state, seq, message, bytes }
        : { merchantKey, partition: state, seq, message, bytes, value, origin }
    if (this.routeToParking(state, item, offset)) return
    if (origin !== undefined && this.options.parking?.holdsBack(item)) return
    this.toLane(item)
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
   * than the lane holds messages (it cannot run them all now), or it waits for a retry, its
   * breaker or its cap. A merchant whose limit does not bind may hold a whole fetch in its
   * lane (up to maxBufferedPerPartition): parking it would only cost a second write.
   */
  private isBehind(lane: Lane<BufferedMessage<T>>): boolean {
    if (lane.state === 'waiting' && !lane.reserved) return true
    const limiter = this.options.limiter
    if (limiter.inspect === undefined) return true
    const bucket = limiter.inspect(lane.merchantKey)
    return bucket === undefined || bucket.tokens < lane.size
  }
}
