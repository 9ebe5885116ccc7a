import type { KafkaMessage, Message, Producer } from 'kafkajs'
import type { Logger } from 'pino'
import { backoffMs } from '../../limiter/backoff.js'
import { Deque } from './deque.js'

/**
 * PARK_HEADERS name the headers a parked message carries besides its own: where it was
 * read from. The parking side uses them to tell the source side a merchant caught up.
 */
export const PARK_HEADERS = {
  topic: 'mt-parked-topic',
  partition: 'mt-parked-partition',
  offset: 'mt-parked-offset',
} as const

/** PARKED_METADATA_VERSION tags the offset-commit metadata that lists a partition's parked merchants. */
const PARKED_METADATA_VERSION = 1

/**
 * MAX_PARKED_METADATA_LENGTH keeps the commit metadata under the broker's
 * offset.metadata.max.bytes (4 096 by default). A merchant that does not fit is not parked:
 * its partition pauses instead (the last resort), so no parked merchant is ever forgotten.
 */
export const MAX_PARKED_METADATA_LENGTH = 4_000

/** ParkedRange is one merchant's parked stretch of a source partition. */
interface ParkedRange {
  /** first is the source offset of its first parked message. */
  first: number
  /** lastRouted is the offset of its last message sent to be parked. */
  lastRouted: number
  /** lastMoved is the offset of its last message whose move committed; -1 before the first. */
  lastMoved: number
  /**
   * count is how many of its messages were routed to parking and not yet handled: on their
   * way to the parking topic, in it, or read back from it and held in a lane (after a
   * restart: the moved stretch's length, an upper bound).
   */
  count: number
  /** oldestTimestampMs is the timestamp of its oldest parked message not yet handled (NaN once unknown). */
  oldestTimestampMs: number
}

/**
 * ParkedMerchants are the merchants of one source partition that have messages parked.
 * While a merchant is here, its newer messages are parked too (its order holds); it leaves
 * once the parking side has handled the last one routed there. The moved stretch of each
 * merchant ([first, lastMoved]: every message of the merchant in it is in the parking
 * topic) is written into the partition's offset-commit metadata with every commit, the
 * move's own transaction included, so that a restarted or new owner keeps parking the
 * same merchants and skips what is already parked instead of moving it twice.
 */
export class ParkedMerchants {
  private readonly ranges = new Map<string, ParkedRange>()
  private encodedLength = 20
  private waitingTotal = 0

  get size(): number {
    return this.ranges.size
  }

  /** total is the sum of the merchants' counts: parked messages not yet handled (see ParkedRange.count). */
  get total(): number {
    return this.waitingTotal
  }

  has(merchantKey: string): boolean {
    return this.ranges.has(merchantKey)
  }

  /** hasRoomFor says whether the merchant is parked already or fits in the commit metadata. */
  hasRoomFor(merchantKey: string): boolean {
    return (
      this.ranges.has(merchantKey) ||
      this.encodedLength + entryLength(merchantKey) <= MAX_PARKED_METADATA_LENGTH
    )
  }

  /**
   * route records `offset` as the merchant's newest message sent to be parked; false
   * (nothing recorded) when a new merchant would not fit in the commit metadata.
   */
  route(merchantKey: string, offset: number, timestampMs: number): boolean {
    const range = this.ranges.get(merchantKey)
    if (range !== undefined) {
      range.lastRouted = offset
      range.count++
      this.waitingTotal++
      return true
    }
    const length = entryLength(merchantKey)
    if (this.encodedLength + length > MAX_PARKED_METADATA_LENGTH) return false
    this.encodedLength += length
    this.ranges.set(merchantKey, {
      first: offset,
      lastRouted: offset,
      lastMoved: -1,
      count: 1,
      oldestTimestampMs: timestampMs,
    })
    this.waitingTotal++
    return true
  }

  /** lastMovedOf is the source offset of the merchant's last message in the parking topic (-1 before the first), if parked. */
  lastMovedOf(merchantKey: string): number | undefined {
    return this.ranges.get(merchantKey)?.lastMoved
  }

  /** precedes says whether `offset` comes before the merchant's parked stretch (older: not to be parked). */
  precedes(merchantKey: string, offset: number): boolean {
    const range = this.ranges.get(merchantKey)
    return range !== undefined && offset < range.first
  }

  /** moved records that the merchant's message at `offset` is in the parking topic. */
  moved(merchantKey: string, offset: number): void {
    const range = this.ranges.get(merchantKey)
    if (range !== undefined && offset > range.lastMoved) range.lastMoved = offset
  }

  /** covers says whether the merchant's message at `offset` is already in the parking topic. */
  covers(merchantKey: string, offset: number): boolean {
    const range = this.ranges.get(merchantKey)
    return range !== undefined && offset >= range.first && offset <= range.lastMoved
  }

  /**
   * handled tells of a parked message handled: the merchant leaves the set when it was the
   * last one routed to parking. It returns true when the merchant caught up.
   */
  handled(merchantKey: string, offset: number): boolean {
    const range = this.ranges.get(merchantKey)
    if (range === undefined) return false
    if (range.count > 0) {
      range.count--
      this.waitingTotal--
    }
    range.oldestTimestampMs = Number.NaN
    if (offset < range.lastRouted) return false
    this.waitingTotal -= range.count
    this.ranges.delete(merchantKey)
    this.encodedLength -= entryLength(merchantKey)
    return true
  }

  /** waiting lists the merchants parked, with their count and oldest timestamp (see ParkedRange). */
  waiting(): IterableIterator<[string, { readonly count: number; readonly oldestTimestampMs: number }]> {
    return this.ranges.entries()
  }

  /**
   * encode is the commit metadata: null when nothing is moved. `moving` adds the moves of a
   * transaction about to commit (merchant → offset of its last message in it).
   */
  encode(moving?: ReadonlyMap<string, number>): string | null {
    const parked: Record<string, [number, number]> = {}
    let any = false
    for (const [merchantKey, range] of this.ranges) {
      const lastMoved = Math.max(range.lastMoved, moving?.get(merchantKey) ?? -1)
      if (lastMoved < range.first) continue
      parked[merchantKey] = [range.first, lastMoved]
      any = true
    }
    return any ? JSON.stringify({ v: PARKED_METADATA_VERSION, parked }) : null
  }

  /** decode reads commit metadata written by encode; anything else (another tool's metadata) parks nothing. */
  static decode(metadata: string | null | undefined): ParkedMerchants {
    const merchants = new ParkedMerchants()
    if (typeof metadata !== 'string' || metadata.length === 0) return merchants
    let parsed: unknown
    try {
      parsed = JSON.parse(metadata)
    } catch {
      return merchants
    }
    const { v, parked } = (parsed ?? {}) as { v?: unknown; parked?: unknown }
    if (v !== PARKED_METADATA_VERSION || typeof parked !== 'object' || parked === null) return merchants
    for (const [merchantKey, range] of Object.entries(parked)) {
      if (!Array.isArray(range) || !range.every((offset) => Number.isSafeInteger(offset))) continue
      const [first, lastMoved] = range as [number, number]
      if (lastMoved < first || !merchants.route(merchantKey, first, Number.NaN)) continue
      const restored = merchants.ranges.get(merchantKey)!
      restored.lastRouted = lastMoved
      restored.lastMoved = lastMoved
      restored.count = lastMoved - first + 1
      merchants.waitingTotal += restored.count - 1
    }
    return merchants
  }
}

/** entryLength is what one merchant adds to the encoded metadata, at most. */
function entryLength(merchantKey: string): number {
  return JSON.stringify(merchantKey).length + 36
}

/**
 * parkingPartition is where a merchant's parked messages from source partition
 * `partition` go: the parking topic has `perSource` partitions for each source partition,
 * at partition + sourcePartitions × (hash of the merchant mod perSource). Partition q of
 * the parking topic thus belongs to source partition q mod sourcePartitions, and the
 * parking assigner gives both to the same member; two hot merchants of one source
 * partition share a parking partition with a chance of 1 in perSource.
 */
export function parkingPartition(
  partition: number,
  merchantKey: string,
  sourcePartitions: number,
  perSource: number,
): number {
  return partition + sourcePartitions * (fnv1a(merchantKey) % perSource)
}

/** fnv1a is the 32-bit FNV-1a hash of a string's UTF-16 code units: stable across processes. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}

/** ParkItem is one message on its way to the parking topic. */
export interface ParkItem {
  readonly merchantKey: string
  readonly sourceTopic: string
  readonly sourcePartition: number
  readonly message: KafkaMessage
  /** parkingTopic and parkingPartition are where it goes. */
  readonly parkingTopic: string
  readonly parkingPartition: number
}

/** SourceOffset is a source partition's offset (and metadata) to commit with a move. */
export interface SourceOffset {
  topic: string
  partition: number
  offset: string
  metadata: string | null
}

/** ParkerOptions wire a Parker to its transactional producer and to the consumer's offsets. */
export interface ParkerOptions<P extends ParkItem> {
  /** producer is transactional (transactionalId, idempotent, maxInFlightRequests 1). */
  producer: Producer
  groupId: string
  /** maxBatch is the most messages moved in one transaction. */
  maxBatch: number
  /** live says whether the item's source partition is still this consumer's (false: skip it). */
  live: (item: P) => boolean
  /** offsets are the source offsets to commit once `items` are moved (they count as done). */
  offsets: (items: readonly P[]) => SourceOffset[]
  /** moved is told of items whose transaction committed. */
  moved: (items: readonly P[], offsets: SourceOffset[]) => void
  /** exclusive runs a move so that no other offset commit of the consumer runs meanwhile. */
  exclusive: (task: () => Promise<void>) => Promise<void>
  logger: Logger
}

/** ParkerStats count the moves to the parking topic. */
export interface ParkerStats {
  /** parked: messages moved to the parking topic (committed transactions). */
  parked: number
  /** parkQueued: messages waiting to be moved. */
  parkQueued: number
  parkTransactions: number
  /** parkFailures: transactions that failed (aborted and tried again). */
  parkFailures: number
}

/**
 * Parker moves messages to the parking topic in Kafka transactions: each transaction
 * writes a batch of parked messages and commits the source offsets that pass them, so a
 * moved message is either still in its source partition's uncommitted range or in the
 * parking topic, and the consumers of the parking topic (read committed) never see a
 * move that did not commit. Moves run one at a time, in the order messages were parked.
 */
export class Parker<P extends ParkItem> {
  // A deque, not an array: taking a batch from the front of an array of 100,000 shifts the
  // rest each time, which held the event loop ~30 ms a move and slowed the handlers beside it.
  private readonly queue = new Deque<P>(16)
  /** failed is the batch whose move failed: it is tried again first, keeping the order. */
  private failed: P[] | undefined
  private flushing: Promise<void> | undefined
  private failuresInARow = 0
  private retryTimer: NodeJS.Timeout | undefined
  private closed = false
  private readonly counters = { parked: 0, parkTransactions: 0, parkFailures: 0 }

  constructor(private readonly options: ParkerOptions<P>) {}

  /** park queues `item` to be moved; moves start on the next turn of the event loop. */
  park(item: P): void {
    this.queue.push(item)
    if (this.flushing === undefined && this.retryTimer === undefined) {
      this.flushing = Promise.resolve().then(() => this.flush())
    }
  }

  stats(): ParkerStats {
    return { ...this.counters, parkQueued: this.queue.length + (this.failed?.length ?? 0) }
  }

  /** close stops moving; what is queued stays in its source partition's uncommitted range. */
  async close(): Promise<void> {
    this.closed = true
    clearTimeout(this.retryTimer)
    await this.flushing
  }

  private async flush(): Promise<void> {
    while (!this.closed && (this.failed !== undefined || this.queue.length > 0)) {
      const batch = this.failed ?? this.takeBatch()
      this.failed = undefined
      if (batch.length === 0) continue
      try {
        await this.options.exclusive(() => this.move(batch))
        this.failuresInARow = 0
        // A long backlog is many moves: let the handlers' timers run between two of them.
        await new Promise((resolve) => setImmediate(resolve))
      } catch (error) {
        this.counters.parkFailures++
        this.failuresInARow++
        this.failed = batch
        const delayMs = backoffMs(this.failuresInARow, { baseMs: 200, maxMs: 5_000, jitter: 0 })
        this.options.logger.warn(
          { err: error, delayMs, messages: batch.length },
          'parking move failed; retrying',
        )
        this.flushing = undefined
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined
          this.flushing = this.flush()
        }, delayMs)
        return
      }
    }
    this.flushing = undefined
  }

  private takeBatch(): P[] {
    const batch: P[] = []
    while (batch.length < this.options.maxBatch && this.queue.length > 0) {
      const item = this.queue.shift()!
      if (this.options.live(item)) batch.push(item)
    }
    return batch
  }

  private async move(batch: P[]): Promise<void> {
    const live = batch.filter((item) => this.options.live(item))
    if (live.length === 0) return
    const offsets = this.options.offsets(live)
    const transaction = await this.options.producer.transaction()
    try {
      // One produce request per slice, each awaited: kafkajs encodes a request in one go
      // (about 14 µs a small parked message here), and 500 at once held the event loop
      // 7-23 ms, a throttled merchant's starts with it (issue 14).
      for (const slice of sendSlices(live)) await transaction.sendBatch({ acks: -1, topicMessages: slice })
      await transaction.sendOffsets({
        consumerGroupId: this.options.groupId,
        topics: groupByTopic(offsets),
      })
      await transaction.commit()
    } catch (error) {
      await transaction.abort().catch((abortError: unknown) => {
        this.options.logger.debug({ err: abortError }, 'parking transaction abort failed')
      })
      throw error
    }
    this.counters.parkTransactions++
    this.counters.parked += live.length
    this.options.moved(live, offsets)
  }
}

/**
 * SEND_SLICE_MESSAGES and SEND_SLICE_BYTES bound one produce request of a move (see
 * sendSlices): about 1.5 ms of kafkajs's encoding for small messages, and the event loop
 * turns while each request is on its way.
 */
export const SEND_SLICE_MESSAGES = 100
export const SEND_SLICE_BYTES = 256 * 1024

/** TopicMessages is one produce request's records, by topic (kafkajs's sendBatch `topicMessages`). */
export type TopicMessages = { topic: string; messages: Message[] }[]

/**
 * sendSlices cuts a move's items, in order, into produce requests of at most
 * SEND_SLICE_MESSAGES records and about SEND_SLICE_BYTES (a record larger than that goes
 * alone), each grouping its records by parking topic.
 */
export function sendSlices(items: readonly ParkItem[]): TopicMessages[] {
  const slices: TopicMessages[] = []
  let byTopic = new Map<string, Message[]>()
  let count = 0
  let bytes = 0
  const close = () => {
    slices.push([...byTopic].map(([topic, messages]) => ({ topic, messages })))
    byTopic = new Map()
    count = 0
    bytes = 0
  }
  for (const item of items) {
    const size = (item.message.key?.length ?? 0) + (item.message.value?.length ?? 0)
    if (count > 0 && (count === SEND_SLICE_MESSAGES || bytes + size > SEND_SLICE_BYTES)) close()
    const messages = byTopic.get(item.parkingTopic)
    if (messages === undefined) byTopic.set(item.parkingTopic, [parkedMessage(item)])
    else messages.push(parkedMessage(item))
    count++
    bytes += size
  }
  if (count > 0) close()
  return slices
}

/** parkedMessage is the record written to the parking topic: the original plus where it came from. */
function parkedMessage(item: ParkItem): Message {
  const { message } = item
  return {
    key: message.key,
    value: message.value,
    partition: item.parkingPartition,
    // The original time, so that a parked message's age counts from when it was produced.
    timestamp: message.timestamp,
    headers: {
      ...message.headers,
      [PARK_HEADERS.topic]: item.sourceTopic,
      [PARK_HEADERS.partition]: String(item.sourcePartition),
      [PARK_HEADERS.offset]: message.offset,
    },
  }
}

function groupByTopic(offsets: SourceOffset[]) {
  const topics = new Map<string, { partition: number; offset: string; metadata: string | null }[]>()
  for (const { topic, partition, offset, metadata } of offsets) {
    const partitions = topics.get(topic) ?? []
    partitions.push({ partition, offset, metadata })
    topics.set(topic, partitions)
  }
  return [...topics].map(([topic, partitions]) => ({ topic, partitions }))
}
