import { randomUUID } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type {
  Admin,
  Consumer,
  ConsumerCommitOffsetsEvent,
  ConsumerCrashEvent,
  ConsumerGroupJoinEvent,
  EachBatchPayload,
  KafkaMessage,
  Producer,
} from 'kafkajs'
import { type Logger, pino } from 'pino'
import { backoffMs } from '../../limiter/backoff.js'
import { type DeadLetter, type DeadLetterReason, deadLetterMessage } from './dead-letter.js'
import { Dispatcher, type DispatcherStats } from './dispatcher.js'
import type { Lane } from './lanes.js'
import { decodeValue, errorMessage, headerText, jsonDecoder, readKey } from './message-key.js'
import { type ResolvedOptions, resolveOptions, type ThrottledConsumerOptions } from './options.js'
import {
  PARK_HEADERS,
  ParkedMerchants,
  Parker,
  type ParkerStats,
  type ParkItem,
  parkingPartition,
  type SourceOffset,
} from './parking.js'
import { parkingAssigner } from './parking-assigner.js'
import {
  type BufferedMessage,
  messageBytes,
  type ParkedOrigin,
  PartitionState,
  partitionId,
} from './partition-state.js'
import { WakeQueue } from './wake-queue.js'

/** ThrottledConsumerStats are gauges and counters for the service's metrics. */
export interface ThrottledConsumerStats extends DispatcherStats, ParkerStats {
  assignedPartitions: number
  pausedPartitions: number
  /** buffered: messages held, over all partitions (waiting, running, being dead-lettered or parked). */
  buffered: number
  /** bufferedBytes: what the held messages count against maxBufferedBytes. */
  bufferedBytes: number
  /** parkedMerchants: merchants with messages parked now, over the source partitions held. */
  parkedMerchants: number
  /**
   * parkedWaiting: parked messages not yet handled now, over every merchant of the source
   * partitions held (the sum of MerchantBacklog.parked over all merchants, not only those
   * listed). `parked` is the cumulative count of moves since start.
   */
  parkedWaiting: number
  /** parkedHandled: messages read back from a parking topic and finished. */
  parkedHandled: number
  /** parkedSkipped: source messages skipped because a committed move had parked them already (after a restart or rebalance). */
  parkedSkipped: number
  /** backlog: the merchants with the most messages waiting (at most BACKLOG_MERCHANTS), most first. */
  backlog: MerchantBacklog[]
  /** refetchedSkipped: messages fetched again after a rejoin and skipped (already held or done). */
  refetchedSkipped: number
  pauses: number
  resumes: number
  /** commits: offset commits the broker accepted. */
  commits: number
  commitFailures: number
  /** rebalances: assignments received (the first join included). */
  rebalances: number
  /** restarts: times the consumer ran kafkajs again after a crash kafkajs would not restart from. */
  restarts: number
  /** committed: the last committed offset per partition, by "topic:partition". */
  committed: Record<string, number>
  /** watermarks: the offset that would be committed now, per partition. */
  watermarks: Record<string, number>
}

/** BACKLOG_MERCHANTS is how many merchants ThrottledConsumerStats.backlog lists at most. */
export const BACKLOG_MERCHANTS = 20

/** MerchantBacklog is one merchant's messages waiting in this consumer, and how old the oldest is. */
export interface MerchantBacklog {
  merchantKey: string
  /**
   * buffered: its messages held in source-partition lanes, plus those read back into a
   * parking lane whose source partition this consumer does not hold (during a rebalance):
   * never one counted in `parked`, so buffered + parked is what waits.
   */
  buffered: number
  /**
   * parked: its messages routed to parking and not yet handled, on their way to the parking
   * topic, in it, or read back from it into a lane (after a restart or rebalance: the moved
   * stretch's length, an upper bound, until the merchant catches up).
   */
  parked: number
  /** oldestAgeMs: age of its oldest message held, from the message's timestamp (wall clock). */
  oldestAgeMs: number
}

/** DeadLetterEvent tells of a message written to the dead-letter topic. */
export interface DeadLetterEvent {
  topic: string
  partition: number
  offset: string
  reason: DeadLetterReason
  error: string
  attempts: number
}

/** AssignmentEvent tells of a new assignment: what is now this consumer's, what was taken away. */
export interface AssignmentEvent {
  assigned: string[]
  revoked: string[]
}

/** ThrottledConsumerEvents are the events a ThrottledConsumer emits. */
export interface ThrottledConsumerEvents {
  'dead-letter': [DeadLetterEvent]
  commit: [{ offsets: { topic: string; partition: number; offset: number }[] }]
  assignment: [AssignmentEvent]
  /**
   * crash: kafkajs crashed; `restart` says whether consuming will resume (kafkajs restarts
   * by itself, or the consumer runs it again) or not (the consumer is stopping).
   */
  crash: [{ error: Error; restart: boolean }]
}

/** ThrottledConsumer is a running (or ready to run) throttled Kafka consumer. */
export interface ThrottledConsumer {
  /**
   * run connects, joins the group and starts consuming; it resolves once consuming. When it
   * cannot connect it rejects, and may be called again.
   */
  run(): Promise<void>
  /**
   * stop stops fetching, lets in-flight handlers finish within stopTimeoutMs (the rest is
   * given up and delivered again later), commits the watermarks and disconnects.
   */
  stop(): Promise<void>
  stats(): ThrottledConsumerStats
  on<E extends keyof ThrottledConsumerEvents>(
    event: E,
    listener: (...args: ThrottledConsumerEvents[E]) => void,
  ): ThrottledConsumer
}

/**
 * createThrottledConsumer consumes `topics` with per-merchant lanes: within a partition
 * each merchant's messages run in offset order, a throttled merchant waits for its
 * reservation while the other merchants of the partition keep flowing, and the committed
 * offset of each partition is its watermark (the lowest offset not yet done). See
 * ThrottledConsumerOptions.
 */
export function createThrottledConsumer<T = Buffer | null>(
  options: ThrottledConsumerOptions<T>,
): ThrottledConsumer {
  return new KafkaLaneConsumer(resolveOptions(options))
}

/** ParkedMessage is a message on its way to the parking topic. */
interface ParkedMessage<T> extends ParkItem {
  readonly item: BufferedMessage<T>
}

/** ParkingTopology is what the consumer knows of a parking topic. */
interface ParkingTopology {
  parkingTopic: string
  sourcePartitions: number
  perSource: number
}

class KafkaLaneConsumer<T> implements ThrottledConsumer {
  private readonly logger: Logger
  private readonly consumer: Consumer
  private readonly producer: Producer
  private readonly dispatcher: Dispatcher<BufferedMessage<T>>
  /** parker, admin and parkingTopics exist with parking on. */
  private readonly parker: Parker<ParkedMessage<T>> | undefined
  private readonly txProducer: Producer | undefined
  private readonly admin: Admin | undefined
  /** checkAdmin reads committed offsets after a rejoin: the parking admin, or one made when first needed. */
  private checkAdmin: Admin | undefined
  /** parkingTopics maps a source topic to its parking topic's layout (known once running). */
  private readonly parkingTopics = new Map<string, ParkingTopology>()
  /** parkingSources maps a parking topic to its source topic. */
  private readonly parkingSources = new Map<string, string>()
  private totalBytes = 0
  /** overBudget: the buffer passed maxBufferedBytes and has not come back under 90% of it. */
  private overBudget = false
  private serialTail: Promise<void> = Promise.resolve()
  private readonly decode: ((value: Buffer | null, message: KafkaMessage) => T) | undefined
  private readonly partitions = new Map<string, PartitionState<T>>()
  private readonly emitter = new EventEmitter()
  private readonly removeListeners: (() => void)[] = []
  private memberId: string | undefined
  private commitTimer: NodeJS.Timeout | undefined
  private restartTimer: NodeJS.Timeout | undefined
  /** crashesInARow counts crashes since the last successful join, for the restart backoff. */
  private crashesInARow = 0
  private commitInFlight: Promise<void> | undefined
  private started = false
  private stopping: Promise<void> | undefined
  private readonly counters = {
    refetchedSkipped: 0,
    parkedHandled: 0,
    parkedSkipped: 0,
    pauses: 0,
    resumes: 0,
    commits: 0,
    commitFailures: 0,
    rebalances: 0,
    restarts: 0,
  }

  constructor(private readonly options: ResolvedOptions<T>) {
    this.logger = (options.logger ?? pino({ level: 'silent' })).child({
      component: 'kafka-consumer',
      groupId: options.groupId,
    })
    const parking = options.parking
    if (parking !== undefined) {
      for (const [source, target] of Object.entries(parking.topics)) this.parkingSources.set(target, source)
    }
    this.consumer = options.kafka.consumer({
      maxWaitTimeInMs: 250,
      ...(parking === undefined
        ? {}
        : { partitionAssigners: [parkingAssigner(new Map(Object.entries(parking.topics)))] }),
      ...options.consumerConfig,
      groupId: options.groupId,
    })
    this.producer = options.kafka.producer({ allowAutoTopicCreation: false, ...options.producerConfig })
    if (parking !== undefined) {
      this.admin = options.kafka.admin!()
      this.txProducer = options.kafka.producer({
        allowAutoTopicCreation: false,
        ...options.producerConfig,
        // Unique per consumer: two members never fence each other; a crashed one's open
        // transaction is aborted by the broker after transactionTimeout.
        transactionalId: `${options.groupId}.parking.${randomUUID()}`,
        idempotent: true,
        maxInFlightRequests: 1,
        transactionTimeout: parking.transactionTimeoutMs,
      })
      this.parker = new Parker<ParkedMessage<T>>({
        producer: this.txProducer,
        groupId: options.groupId,
        maxBatch: parking.maxBatch,
        live: (parked) => this.partitions.get(parked.item.partition.id) === parked.item.partition,
        offsets: (parked) => this.moveOffsets(parked),
        moved: (parked, offsets) => this.moved(parked, offsets),
        exclusive: (task) => this.exclusive(task),
        logger: this.logger,
      })
    }
    this.decode =
      options.decode ??
      (typeof options.keyOf === 'object' && 'field' in options.keyOf
        ? (jsonDecoder as (value: Buffer | null) => T)
        : undefined)
    const limiter = options.limiter
    this.dispatcher = new Dispatcher<BufferedMessage<T>>({
      limiter,
      wakes: new WakeQueue({ now: () => limiter.now() }),
      concurrency: options.concurrency,
      maxAttempts: options.maxAttempts,
      retryDelayMs: options.retryDelayMs,
      deadLetterRetryDelayMs: (failures) => backoffMs(failures, { baseMs: 500, maxMs: 30_000, jitter: 0 }),
      run: (item, attempt, signal) =>
        options.handler({
          merchantKey: item.merchantKey,
          topic: item.partition.topic,
          partition: item.partition.partition,
          offset: item.message.offset,
          message: item.message,
          value: item.value,
          attempt,
          signal,
        }),
      deadLetter: (item, failure) => this.writeDeadLetter(item, failure),
      done: (item) => this.done(item),
      behind: (lane) => this.laneBehind(lane),
      inFlight: options.inFlight,
      breakers: options.breakers,
      isEndpointFailure: options.isEndpointFailure,
      logger: this.logger,
    })
  }

  on<E extends keyof ThrottledConsumerEvents>(
    event: E,
    listener: (...args: ThrottledConsumerEvents[E]) => void,
  ): ThrottledConsumer {
    this.emitter.on(event, listener as (...args: unknown[]) => void)
    return this
  }

  async run(): Promise<void> {
    if (this.started) throw new Error('ThrottledConsumer.run: already started')
    this.started = true
    const { events } = this.consumer
    this.removeListeners.push(
      this.consumer.on(events.GROUP_JOIN, (event) => this.onGroupJoin(event)),
      this.consumer.on(events.REBALANCING, () => this.onRebalancing()),
      this.consumer.on(events.COMMIT_OFFSETS, (event) => this.onCommitted(event)),
      this.consumer.on(events.CRASH, (event) => this.onCrash(event)),
    )
    try {
      await this.producer.connect()
      await this.txProducer?.connect()
      if (this.admin !== undefined) {
        await this.admin.connect()
        await this.loadParkingTopology(this.admin)
      }
      await this.consumer.connect()
      await this.consumer.subscribe({
        topics: [...this.options.topics, ...this.parkingSources.keys()],
        fromBeginning: this.options.fromBeginning ?? false,
      })
      await this.runKafkajs()
    } catch (error) {
      // Nothing runs: let run() be called again once the broker can be reached.
      for (const remove of this.removeListeners.splice(0)) remove()
      this.started = false
      throw error
    }
    this.commitTimer = setInterval(() => void this.commit(), this.options.commitIntervalMs).unref()
  }

  /**
   * loadParkingTopology reads each parking topic's partition count and checks it is a
   * multiple of its source topic's (see parkingPartition).
   */
  private async loadParkingTopology(admin: Admin): Promise<void> {
    const topics = [...this.parkingSources.values(), ...this.parkingSources.keys()]
    const { topics: metadata } = await admin.fetchTopicMetadata({ topics })
    const counts = new Map(metadata.map((t) => [t.name, t.partitions.length]))
    for (const [parkingTopic, source] of this.parkingSources) {
      const sourcePartitions = counts.get(source) ?? 0
      const parkingPartitions = counts.get(parkingTopic) ?? 0
      if (
        sourcePartitions === 0 ||
        parkingPartitions < sourcePartitions ||
        parkingPartitions % sourcePartitions !== 0
      ) {
        throw new TypeError(
          `createThrottledConsumer: expected parking topic ${parkingTopic} to have a multiple of the ${sourcePartitions} partitions of ${source}, got ${parkingPartitions}`,
        )
      }
      this.parkingTopics.set(source, {
        parkingTopic,
        sourcePartitions,
        perSource: parkingPartitions / sourcePartitions,
      })
    }
  }

  private runKafkajs(): Promise<void> {
    return this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: async (payload) => this.onBatch(payload),
    })
  }

  stop(): Promise<void> {
    this.stopping ??= this.shutdown()
    return this.stopping
  }

  stats(): ThrottledConsumerStats {
    let buffered = 0
    let pausedPartitions = 0
    let parkedMerchants = 0
    let parkedWaiting = 0
    const committed: Record<string, number> = {}
    const watermarks: Record<string, number> = {}
    for (const state of this.partitions.values()) {
      buffered += state.buffered
      parkedMerchants += state.parked.size
      parkedWaiting += state.parked.total
      if (state.paused) pausedPartitions++
      if (state.committedOffset !== undefined) committed[state.id] = state.committedOffset
      const watermark = state.tracker.watermark
      if (watermark !== undefined) watermarks[state.id] = watermark
    }
    return {
      ...this.dispatcher.stats(),
      ...(this.parker?.stats() ?? { parked: 0, parkQueued: 0, parkTransactions: 0, parkFailures: 0 }),
      ...this.counters,
      assignedPartitions: this.partitions.size,
      pausedPartitions,
      buffered,
      bufferedBytes: this.totalBytes,
      parkedMerchants,
      parkedWaiting,
      backlog: this.backlog(),
      committed,
      watermarks,
    }
  }

  /** backlog lists the BACKLOG_MERCHANTS merchants with the most messages waiting. */
  private backlog(): MerchantBacklog[] {
    const nowMs = Date.now()
    const byMerchant = new Map<string, MerchantBacklog>()
    const entry = (merchantKey: string) => {
      let backlog = byMerchant.get(merchantKey)
      if (backlog === undefined) {
        backlog = { merchantKey, buffered: 0, parked: 0, oldestAgeMs: 0 }
        byMerchant.set(merchantKey, backlog)
      }
      return backlog
    }
    for (const state of this.partitions.values()) {
      for (const lane of state.group.lanes.values()) {
        const backlog = entry(lane.merchantKey)
        if (!this.countedAsParked(lane)) backlog.buffered += lane.size
        const head = lane.peek()
        if (head !== undefined) {
          const ageMs = nowMs - Number(head.message.timestamp)
          if (ageMs > backlog.oldestAgeMs) backlog.oldestAgeMs = ageMs
        }
      }
      for (const [merchantKey, parked] of state.parked.waiting()) {
        const backlog = entry(merchantKey)
        backlog.parked += parked.count
        const ageMs = nowMs - parked.oldestTimestampMs
        if (Number.isFinite(ageMs) && ageMs > backlog.oldestAgeMs) backlog.oldestAgeMs = ageMs
      }
    }
    return [...byMerchant.values()]
      .sort((a, b) => b.buffered + b.parked - (a.buffered + a.parked))
      .slice(0, BACKLOG_MERCHANTS)
  }

  /**
   * countedAsParked says whether a lane's messages are in its merchant's parked count: a lane
   * of a parking partition whose source partition is held here with the merchant parked.
   */
  private countedAsParked(lane: Lane<BufferedMessage<T>>): boolean {
    const head = lane.peek()
    const state = head?.partition
    if (state?.sourceTopic === undefined || head?.origin === undefined) return false
    const source = this.partitions.get(partitionId(state.sourceTopic, head.origin.partition))
    return source?.parked.has(lane.merchantKey) ?? false
  }

  /**
   * onBatch buffers a fetched batch into the lanes (or the parking path) and returns at
   * once, so kafkajs's fetcher (one per broker, waiting for every batch of a fetch) is
   * never held up by a handler. It moves the fetch position past what it buffered with
   * resolveOffset, which SETS the position (it is not a maximum): it is always given the
   * partition's next offset minus one. Offsets below that are already held or done: a
   * rejoin makes kafkajs fetch again from the committed offset, and those duplicates are
   * skipped here.
   *
   * A batch is taken whole, then the partition is paused if it is over a bound: taking
   * part of a batch would make kafkajs fetch and decode the rest again after every resume
   * (measured: a 5,000 bound with 1 MB fetches of small messages cut throughput by two
   * thirds). A partition thus holds at most its bounds plus one fetch.
   */
  private async onBatch({ batch, resolveOffset }: EachBatchPayload): Promise<void> {
    const state = this.partitions.get(partitionId(batch.topic, batch.partition))
    if (state === undefined || this.stopping !== undefined) return
    await state.ready
    if (this.partitions.get(state.id) !== state) return
    const { tracker } = state
    const messages = batch.messages
    for (const message of messages) {
      const offset = Number(message.offset)
      const next = tracker.nextOffset
      if (next !== undefined && offset < next) this.counters.refetchedSkipped++
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
    if (!state.paused && this.overBound(state)) this.setPaused(state, true)
  }

  /**
   * overBound says whether a partition must stop fetching: it holds maxBufferedPerPartition,
   * one of its lanes is over its bound (a parking partition, or any without parking), or
   * the buffer is over its byte budget (parking partitions, or all without parking: a
   * source partition with parking sends the excess to the parking topic instead).
   */
  private overBound(state: PartitionState<T>): boolean {
    // Messages on their way to the parking topic leave within moments: the byte budget bounds them.
    if (state.buffered - state.moving >= this.options.maxBufferedPerPartition) return true
    if (state.fullLane !== undefined) return true
    return this.overBudget && (state.isParking || this.parker === undefined)
  }

  private laneBound(state: PartitionState<T>): number {
    return state.isParking
      ? this.options.parking!.maxBufferedPerMerchant
      : this.options.maxBufferedPerMerchant
  }

  private buffer(state: PartitionState<T>, message: KafkaMessage, offset: number): void {
    const seq = state.tracker.track(offset)
    const bytes = messageBytes(message)
    this.hold(state, bytes)
    const origin = state.isParking ? parkedOrigin(message) : undefined
    let value = message.value as T
    if (this.decode !== undefined) {
      const decoded = decodeValue(this.decode, message)
      if (!decoded.ok) {
        const item = { merchantKey: '', partition: state, seq, message, value, bytes, origin }
        this.dispatcher.deadLetterNow(state.group, item, {
          reason: 'undecodable',
          error: decoded.error,
          attempts: 0,
        })
        return
      }
      value = decoded.value
    }
    const merchantKey = readKey(this.options.keyOf, message, value, this.options.maxKeyLength)
    if (typeof merchantKey !== 'string') {
      const item = { merchantKey: '', partition: state, seq, message, value, bytes, origin }
      const error = `invalid merchant key: ${merchantKey.reason}`
      this.dispatcher.deadLetterNow(state.group, item, { reason: 'invalid-key', error, attempts: 0 })
      return
    }
    const item: BufferedMessage<T> = { merchantKey, partition: state, seq, message, value, bytes, origin }
    if (!state.isParking && this.parker !== undefined && this.routeToParking(state, item, offset)) return
    this.dispatcher.push(state.group, item)
    const lane = state.group.lanes.get(merchantKey)
    if (lane !== undefined && lane.size > this.laneBound(state)) state.fullLane = merchantKey
  }

  /**
   * routeToParking sends a source message to the parking topic when its merchant has
   * messages parked (so its order holds), when its lane is full, or when the buffer is over
   * its byte budget; a message a committed move already parked (before a restart) is
   * skipped. It says whether the message took that path.
   */
  private routeToParking(state: PartitionState<T>, item: BufferedMessage<T>, offset: number): boolean {
    const { merchantKey } = item
    if (state.parked.covers(merchantKey, offset)) {
      this.counters.parkedSkipped++
      this.complete(item)
      return true
    }
    // Read again after a restart: older than the parked stretch, so it runs from the lane first.
    if (state.parked.precedes(merchantKey, offset)) return false
    const lane = state.group.lanes.get(merchantKey)
    const full = lane !== undefined && lane.size >= this.options.maxBufferedPerMerchant && this.isBehind(lane)
    const mustPark = state.parked.has(merchantKey) || full || this.overBudget
    if (!mustPark) return false
    const topology = this.parkingTopics.get(state.topic)
    if (topology === undefined) return false
    // What the merchant's source lane holds stays there and runs first: its parking lane
    // waits behind it (see laneBehind), so the merchant keeps its pace while the move is made.
    if (!state.parked.hasRoomFor(merchantKey)) return false
    this.park(item, topology)
    return true
  }

  private park(item: BufferedMessage<T>, topology: ParkingTopology): void {
    const state = item.partition
    state.parked.route(item.merchantKey, Number(item.message.offset), Number(item.message.timestamp))
    state.parkedDirty = true
    state.moving++
    this.parker!.park({
      item,
      merchantKey: item.merchantKey,
      sourceTopic: state.topic,
      sourcePartition: state.partition,
      message: item.message,
      parkingTopic: topology.parkingTopic,
      parkingPartition: parkingPartition(
        state.partition,
        item.merchantKey,
        topology.sourcePartitions,
        topology.perSource,
      ),
    })
  }

  /**
   * isBehind says whether a full lane is a backlog: its merchant's bucket holds fewer tokens
   * than the lane holds messages (it cannot run them all now), or it waits for a retry, its
   * breaker or its cap. A merchant whose limit does not bind may hold a whole fetch in its
   * lane (up to maxBufferedPerPartition): parking it would only cost a second write.
   */
  private isBehind(lane: Lane<BufferedMessage<T>>): boolean {
    if (lane.state === 'waiting' && lane.reservation === undefined) return true
    const inspect = this.options.limiter.inspect
    if (inspect === undefined) return true
    const bucket = inspect.call(this.options.limiter, lane.merchantKey)
    return bucket === undefined || bucket.tokens < lane.size
  }

  /**
   * laneBehind is, for a lane of a parking partition, the lane of the same merchant in the
   * source partition its messages were parked from: it holds older messages, so it goes first.
   */
  private laneBehind(lane: Lane<BufferedMessage<T>>): Lane<BufferedMessage<T>> | undefined {
    const head = lane.peek()
    const state = head?.partition
    if (state?.sourceTopic === undefined || head?.origin === undefined) return undefined
    const source = this.partitions.get(partitionId(state.sourceTopic, head.origin.partition))
    return source?.group.lanes.get(lane.merchantKey)
  }

  /** moveOffsets are the source offsets to commit with a move of `parked`: as if they were done. */
  private moveOffsets(parked: readonly ParkedMessage<T>[]): SourceOffset[] {
    const byPartition = new Map<PartitionState<T>, { seqs: Set<number>; moving: Map<string, number> }>()
    for (const { item } of parked) {
      let entry = byPartition.get(item.partition)
      if (entry === undefined) {
        entry = { seqs: new Set(), moving: new Map() }
        byPartition.set(item.partition, entry)
      }
      entry.seqs.add(item.seq)
      entry.moving.set(item.merchantKey, Number(item.message.offset))
    }
    const offsets: SourceOffset[] = []
    for (const [state, { seqs, moving }] of byPartition) {
      const watermark = state.tracker.watermarkWith(seqs)!
      offsets.push({
        topic: state.topic,
        partition: state.partition,
        offset: String(watermark),
        metadata: state.parked.encode(moving),
      })
    }
    return offsets
  }

  /** moved: the transaction moving `parked` committed; they are done here, and the offsets committed. */
  private moved(parked: readonly ParkedMessage<T>[], offsets: SourceOffset[]): void {
    for (const { item } of parked) {
      item.partition.parked.moved(item.merchantKey, Number(item.message.offset))
      item.partition.moving--
      this.complete(item)
    }
    for (const { topic, partition, offset } of offsets) {
      const state = this.partitions.get(partitionId(topic, partition))
      if (state !== undefined) state.committedOffset = Number(offset)
    }
  }

  /** hold counts a message's bytes against the budget. */
  private hold(state: PartitionState<T>, bytes: number): void {
    state.buffered++
    state.bytes += bytes
    this.totalBytes += bytes
    if (this.totalBytes >= this.options.maxBufferedBytes) this.overBudget = true
  }

  /** done marks a message finished: the watermark may move, a parked merchant may have caught up. */
  private done(item: BufferedMessage<T>): void {
    if (!this.complete(item)) return
    const state = item.partition
    if (item.origin === undefined || state.sourceTopic === undefined) return
    this.counters.parkedHandled++
    const source = this.partitions.get(partitionId(state.sourceTopic, item.origin.partition))
    if (source?.parked.handled(item.merchantKey, item.origin.offset)) source.parkedDirty = true
  }

  /** complete marks the item done in its partition and frees its place; false when it already was. */
  private complete(item: BufferedMessage<T>): boolean {
    const state = item.partition
    if (!state.tracker.complete(item.seq)) return false
    state.buffered--
    state.bytes -= item.bytes
    if (this.partitions.get(state.id) === state) this.totalBytes -= item.bytes
    if (this.overBudget && this.totalBytes <= this.options.maxBufferedBytes * 0.9) {
      this.overBudget = false
      for (const other of this.partitions.values()) this.maybeResume(other)
    } else {
      this.maybeResume(state)
    }
    return true
  }

  /** maybeResume resumes a paused partition once it is back under every bound. */
  private maybeResume(state: PartitionState<T>): void {
    if (!state.paused || this.stopping !== undefined) return
    if (state.buffered - state.moving > this.options.maxBufferedPerPartition / 2) return
    if (state.fullLane !== undefined) {
      if ((state.group.lanes.get(state.fullLane)?.size ?? 0) > this.laneBound(state) / 2) return
      state.fullLane = undefined
    }
    if (this.overBudget && (state.isParking || this.parker === undefined)) return
    this.setPaused(state, false)
  }

  private async writeDeadLetter(item: BufferedMessage<T>, failure: DeadLetter): Promise<void> {
    const { topic, partition } = item.partition
    await this.producer.send({
      topic: this.options.deadLetterTopic,
      acks: -1,
      messages: [deadLetterMessage({ topic, partition }, item.message, failure)],
    })
    const event: DeadLetterEvent = {
      topic,
      partition,
      offset: item.message.offset,
      reason: failure.reason,
      error: errorMessage(failure.error),
      attempts: failure.attempts,
    }
    this.logger.warn(event, 'message dead-lettered')
    this.emitter.emit('dead-letter', event)
  }

  private setPaused(state: PartitionState<T>, paused: boolean): void {
    state.paused = paused
    if (paused) this.counters.pauses++
    else this.counters.resumes++
    this.applyPause(state.topic, state.partition, paused)
  }

  /**
   * applyPause tells kafkajs to pause or resume fetching a partition. kafkajs throws when
   * its consumer group is not initialised (stopped, or between a crash and its restart);
   * the state is then applied again on the next GROUP_JOIN.
   */
  private applyPause(topic: string, partition: number, paused: boolean): void {
    const topicPartitions = [{ topic, partitions: [partition] }]
    try {
      if (paused) this.consumer.pause(topicPartitions)
      else this.consumer.resume(topicPartitions)
    } catch (error) {
      this.logger.debug({ err: error, topic, partition, paused }, 'pause state deferred to the next join')
    }
  }

  /**
   * onGroupJoin takes a new assignment. Partitions no longer assigned are dropped: their
   * lanes stop, nothing of them is committed again (the new owner's progress is not to be
   * overwritten), in-flight handlers are told through their signal. Partitions kept keep
   * their lanes; kafkajs fetches them again from the committed offset, and onBatch skips
   * what is already held. A new member id (after a crash or an expired session) means
   * another member may have owned everything meanwhile: all is dropped and fetched anew.
   * kafkajs forgets pause state when it restarts, so it is applied again here.
   */
  private onGroupJoin(event: ConsumerGroupJoinEvent): void {
    const { memberAssignment, memberId } = event.payload
    const newMember = this.memberId !== undefined && this.memberId !== memberId
    this.memberId = memberId
    this.crashesInARow = 0
    this.counters.rebalances++
    const assigned = new Map<string, { topic: string; partition: number }>()
    for (const [topic, partitions] of Object.entries(memberAssignment)) {
      for (const partition of partitions) assigned.set(partitionId(topic, partition), { topic, partition })
    }
    const revoked: string[] = []
    const recheck: PartitionState<T>[] = []
    const canRecheck = typeof this.options.kafka.admin === 'function'
    for (const [id, state] of this.partitions) {
      if (assigned.has(id) && !newMember) continue
      if (assigned.has(id) && canRecheck) {
        recheck.push(state)
        continue
      }
      this.dropPartition(state, revoked)
    }
    const pausedInKafkajs = new Set<string>()
    for (const { topic, partitions } of this.consumer.paused()) {
      for (const partition of partitions) pausedInKafkajs.add(partitionId(topic, partition))
    }
    const added: PartitionState<T>[] = []
    for (const [id, { topic, partition }] of assigned) {
      let state = this.partitions.get(id)
      if (state === undefined) {
        const sourceTopic = this.parkingSources.get(topic)
        state = new PartitionState(topic, partition, this.dispatcher.createGroup(id), sourceTopic)
        this.partitions.set(id, state)
        if (sourceTopic === undefined && this.parkingTopics.has(topic)) added.push(state)
      }
      if (state.paused !== pausedInKafkajs.has(id)) this.applyPause(topic, partition, state.paused)
    }
    if (added.length > 0) this.loadParked(added)
    this.logger.info({ memberId, assigned: [...assigned.keys()], revoked, newMember }, 'assignment received')
    this.emitter.emit('assignment', { assigned: [...assigned.keys()], revoked })
    if (this.options.shareLimitAcrossMembers) void this.updateShare()
    const rechecked = recheck.length > 0 ? this.recheckKept(recheck) : Promise.resolve()
    void rechecked.then(() => {
      if (this.stopping === undefined) this.dispatcher.resume()
    })
  }

  private dropPartition(state: PartitionState<T>, revoked: string[]): void {
    this.partitions.delete(state.id)
    this.totalBytes -= state.bytes
    this.dispatcher.drop(state.group, 'partition revoked')
    revoked.push(state.id)
  }

  /**
   * recheckKept decides, after a rejoin under a new member id (kafkajs crashed and joined
   * again, e.g. across a broker restart), which partitions assigned again keep their lanes:
   * those whose committed offset is still the one this consumer committed last, so no other
   * member made progress on them meanwhile. Their work done but not yet committed is then
   * committed instead of being done again (the restart duplicates of issue 14); the others
   * are dropped and read anew from the committed offset. Their batches wait for the answer.
   */
  private recheckKept(states: PartitionState<T>[]): Promise<void> {
    const check = this.fetchCommitted(states).then(
      (committed) => {
        const revoked: string[] = []
        for (const state of states) {
          if (this.partitions.get(state.id) !== state) continue
          const offset = committed.get(state.id)
          const unchanged = offset === (state.committedOffset ?? -1)
          if (unchanged) continue
          this.dropPartition(state, revoked)
          const fresh = new PartitionState(
            state.topic,
            state.partition,
            this.dispatcher.createGroup(state.id),
            state.sourceTopic,
          )
          this.partitions.set(state.id, fresh)
          if (!fresh.isParking && this.parkingTopics.has(fresh.topic)) this.loadParked([fresh])
        }
        this.logger.info(
          { kept: states.length - revoked.length, dropped: revoked },
          'partitions rechecked after a rejoin',
        )
        void this.commit()
      },
      (error: unknown) => {
        this.logger.warn(
          { err: error },
          'could not read committed offsets after a rejoin; reading the partitions anew',
        )
        for (const state of states) if (this.partitions.get(state.id) === state) this.dropPartition(state, [])
      },
    )
    for (const state of states) state.ready = check
    return check
  }

  /** fetchCommitted reads the group's committed offset of each partition of `states` (-1 when none). */
  private async fetchCommitted(states: PartitionState<T>[]): Promise<Map<string, number>> {
    if (this.checkAdmin === undefined) {
      this.checkAdmin = this.admin ?? this.options.kafka.admin!()
      if (this.checkAdmin !== this.admin) await this.checkAdmin.connect()
    }
    const topics = [...new Set(states.map((state) => state.topic))]
    const results = await this.checkAdmin.fetchOffsets({ groupId: this.options.groupId, topics })
    const committed = new Map<string, number>()
    for (const { topic, partitions } of results) {
      for (const { partition, offset } of partitions)
        committed.set(partitionId(topic, partition), Number(offset))
    }
    return committed
  }

  /**
   * onRebalancing: the group is rebalancing and this member is about to rejoin. Handlers
   * stop starting until the new assignment is known (a partition may move), and what is
   * done is committed now, while the old generation still accepts commits.
   */
  private onRebalancing(): void {
    this.dispatcher.hold()
    void this.commit()
  }

  /**
   * onCrash: kafkajs crashed and disconnected. It restarts by itself only after errors it
   * deems retriable; others (seen: "Failed to find group coordinator" while the broker
   * went down) leave it stopped for good, so the consumer runs it again itself, after
   * 1 s, 2 s, 4 s… up to 30 s, until a join succeeds or stop() is called. Either way the
   * member left the group and its partitions may go to another member: handlers stop
   * starting until the next assignment.
   */
  private onCrash(event: ConsumerCrashEvent): void {
    const { error, restart } = event.payload
    const stopping = this.stopping !== undefined
    this.crashesInARow++
    this.logger.error({ err: error, kafkajsRestarts: restart, stopping }, 'kafkajs consumer crashed')
    this.emitter.emit('crash', { error, restart: restart || !stopping })
    this.dispatcher.hold()
    if (restart || stopping) return
    const delayMs = backoffMs(this.crashesInARow, { baseMs: 1_000, maxMs: 30_000, jitter: 0 })
    clearTimeout(this.restartTimer)
    this.restartTimer = setTimeout(() => {
      if (this.stopping !== undefined) return
      this.counters.restarts++
      this.logger.warn({ delayMs }, 'running the crashed kafkajs consumer again')
      this.runKafkajs().catch((runError: unknown) => {
        this.logger.error({ err: runError }, 'kafkajs consumer did not run again')
      })
    }, delayMs)
  }

  /**
   * loadParked reads the parked merchants of newly assigned source partitions from the
   * group's commit metadata, where the previous owner's moves left them; their batches
   * wait until it is known. If it cannot be read, the partitions are read as if nothing
   * were parked (order may then break for a merchant parked before) and it is logged.
   */
  private loadParked(states: PartitionState<T>[]): void {
    const admin = this.admin!
    const topics = [...new Set(states.map((state) => state.topic))]
    const loading = admin.fetchOffsets({ groupId: this.options.groupId, topics }).then(
      (results) => {
        for (const { topic, partitions } of results) {
          for (const { partition, metadata } of partitions) {
            const state = this.partitions.get(partitionId(topic, partition))
            if (state !== undefined && states.includes(state)) state.parked = ParkedMerchants.decode(metadata)
          }
        }
      },
      (error: unknown) => {
        this.logger.error({ err: error, topics }, 'could not read parked merchants from the commit metadata')
      },
    )
    for (const state of states) state.ready = loading
  }

  private onCommitted(event: ConsumerCommitOffsetsEvent): void {
    const offsets: { topic: string; partition: number; offset: number }[] = []
    for (const { topic, partitions } of event.payload.topics) {
      for (const { partition, offset } of partitions) {
        const state = this.partitions.get(partitionId(topic, partition))
        const committed = Number(String(offset))
        if (state !== undefined) state.committedOffset = committed
        offsets.push({ topic, partition, offset: committed })
      }
    }
    this.counters.commits++
    this.emitter.emit('commit', { offsets })
  }

  private async updateShare(): Promise<void> {
    try {
      const group = await this.consumer.describeGroup()
      const members = Math.max(1, group.members.length)
      this.options.limiter.setShare(members)
      this.logger.info({ members }, 'limit shared across group members')
    } catch (error) {
      this.logger.warn({ err: error }, 'could not describe the group; limit share unchanged')
    }
  }

  /**
   * commit commits the watermark of every assigned partition that moved since its last
   * commit (or whose parked merchants changed: they ride in the commit's metadata). One
   * commit at a time, never beside a parking move (see exclusive); a failure is counted
   * and the next round tries again. What kafkajs really committed is learnt from its
   * COMMIT_OFFSETS event, since its commitOffsets resolves without committing anything
   * when its runner is not running.
   */
  private commit(): Promise<void> {
    if (this.commitInFlight !== undefined) return this.commitInFlight
    this.commitInFlight = this.exclusive(() => this.commitNow()).finally(() => {
      this.commitInFlight = undefined
    })
    return this.commitInFlight
  }

  private async commitNow(): Promise<void> {
    const offsets: { topic: string; partition: number; offset: string; metadata: string | null }[] = []
    const dirty: PartitionState<T>[] = []
    for (const state of this.partitions.values()) {
      const watermark = state.tracker.watermark
      if (watermark === undefined || (watermark === state.committedOffset && !state.parkedDirty)) continue
      const metadata = state.isParking ? null : state.parked.encode()
      offsets.push({ topic: state.topic, partition: state.partition, offset: String(watermark), metadata })
      if (state.parkedDirty) dirty.push(state)
      state.parkedDirty = false
    }
    if (offsets.length === 0) return
    try {
      await this.consumer.commitOffsets(offsets)
    } catch (error) {
      for (const state of dirty) state.parkedDirty = true
      this.counters.commitFailures++
      this.logger.warn({ err: error, offsets }, 'offset commit failed; retrying on the next round')
    }
  }

  /**
   * exclusive runs offset commits and parking moves one at a time: a move's transactional
   * offset commit lands when its transaction commits, and a plain commit beside it could
   * be overwritten by an older offset.
   */
  private exclusive(task: () => Promise<void>): Promise<void> {
    const result = this.serialTail.then(task)
    this.serialTail = result.catch(() => undefined)
    return result
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.commitTimer)
    clearTimeout(this.restartTimer)
    if (!this.started) return
    for (const state of this.partitions.values()) {
      state.paused = true
      this.applyPause(state.topic, state.partition, true)
    }
    this.dispatcher.close()
    await this.parker?.close()
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<'deadline'>((resolve) => {
      timer = setTimeout(() => resolve('deadline'), this.options.stopTimeoutMs)
    })
    const settled = await Promise.race([this.dispatcher.whenIdle().then(() => 'idle' as const), deadline])
    clearTimeout(timer)
    if (settled === 'deadline') {
      this.logger.warn({ stopTimeoutMs: this.options.stopTimeoutMs }, 'giving up in-flight work at stop')
      this.dispatcher.giveUp('consumer stopping')
    }
    await this.commitInFlight
    await this.commit()
    for (const remove of this.removeListeners) remove()
    await this.consumer.disconnect()
    await this.producer.disconnect()
    await this.txProducer?.disconnect()
    await this.admin?.disconnect()
    if (this.checkAdmin !== this.admin) await this.checkAdmin?.disconnect()
    this.logger.info(this.stats(), 'consumer stopped')
  }
}

/** parkedOrigin reads where a message of a parking topic was parked from (PARK_HEADERS). */
function parkedOrigin(message: KafkaMessage): ParkedOrigin | undefined {
  const partition = Number(headerText(message.headers, PARK_HEADERS.partition))
  const offset = Number(headerText(message.headers, PARK_HEADERS.offset))
  if (!Number.isSafeInteger(partition) || !Number.isSafeInteger(offset)) return undefined
  return { partition, offset }
}
