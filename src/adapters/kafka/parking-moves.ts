import { randomUUID } from 'node:crypto'
import type { Admin, KafkaMessage, PartitionAssigner, Producer, ProducerConfig } from 'kafkajs'
import type { Logger } from 'pino'
import type { Lane } from './lanes.js'
import { headerText } from './message-key.js'
import type { KafkaClients, ParkingOptions } from './options.js'
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
  type ParkedOrigin,
  type PartitionState,
  partitionId,
} from './partition-state.js'
import type { PartitionTable } from './partition-table.js'
import { ReadBackGate } from './read-back.js'

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

/** ParkingMovesOptions wire the parking path to the consumer's clients and partitions. */
export interface ParkingMovesOptions<T> {
  kafka: KafkaClients
  groupId: string
  parking: Required<ParkingOptions>
  producerConfig: ProducerConfig | undefined
  partitions: Pick<PartitionTable<T>, 'get' | 'live'>
  /** complete marks a message done in its partition (it was moved, so it counts as done). */
  complete: (item: BufferedMessage<T>) => boolean
  /** toLane admits a message read back and let through by the read-back gate (MessageRouter.admit). */
  toLane: (item: BufferedMessage<T>) => void
  /** exclusive runs a move so that no other offset commit of the consumer runs meanwhile. */
  exclusive: (task: () => Promise<void>) => Promise<void>
  logger: Logger
}

/** ParkingMovesStats count the moves and the parked messages read back and handled. */
export interface ParkingMovesStats extends ParkerStats {
  parkedHandled: number
}

/**
 * ParkingMoves is the consumer's parking path: it moves a source partition's messages to
 * the parking topic in transactions that commit the source offsets (through a Parker),
 * keeps each source partition's parked merchants (ParkedMerchants, loaded from the
 * group's commit metadata when a partition is assigned) and reads moved messages back:
 * a parking lane waits behind its merchant's source lane, and a parked message handled
 * tells the source partition its merchant may have caught up.
 */
export class ParkingMoves<T> {
  /** admin reads the parked merchants and the parking topics' layout. */
  readonly admin: Admin
  private readonly txProducer: Producer
  private readonly parker: Parker<ParkedMessage<T>>
  /** topologies maps a source topic to its parking topic's layout (known once connected). */
  private readonly topologies = new Map<string, ParkingTopology>()
  /** sources maps a parking topic to its source topic. */
  private readonly sources = new Map<string, string>()
  private parkedHandled = 0
  private readonly readBack = new ReadBackGate<BufferedMessage<T>>()

  constructor(private readonly options: ParkingMovesOptions<T>) {
    const { kafka, parking, groupId } = options
    for (const [source, target] of Object.entries(parking.topics)) this.sources.set(target, source)
    this.admin = kafka.admin!()
    this.txProducer = kafka.producer({
      allowAutoTopicCreation: false,
      ...options.producerConfig,
      // Unique per consumer: two members never fence each other; a crashed one's open
      // transaction is aborted by the broker after transactionTimeout.
      transactionalId: `${groupId}.parking.${randomUUID()}`,
      idempotent: true,
      maxInFlightRequests: 1,
      transactionTimeout: parking.transactionTimeoutMs,
    })
    this.parker = new Parker<ParkedMessage<T>>({
      producer: this.txProducer,
      groupId,
      maxBatch: parking.maxBatch,
      live: (parked) => options.partitions.live(parked.item.partition),
      offsets: (parked) => this.moveOffsets(parked),
      moved: (parked, offsets) => this.moved(parked, offsets),
      exclusive: options.exclusive,
      logger: options.logger,
    })
  }

  /** parkingTopics are the topics to subscribe to besides the sources. */
  get parkingTopics(): string[] {
    return [...this.sources.keys()]
  }

  /** assigner gives each parking partition to the member owning its source partition. */
  assigner(): PartitionAssigner {
    return parkingAssigner(new Map(Object.entries(this.options.parking.topics)))
  }

  /** sourceTopicOf is the source topic of a parking topic; undefined for any other topic. */
  sourceTopicOf(topic: string): string | undefined {
    return this.sources.get(topic)
  }

  /** parksFrom says whether `state` is a source partition whose merchants may be parked. */
  parksFrom(state: PartitionState<T>): boolean {
    return !state.isParking && this.topologies.has(state.topic)
  }

  async connect(): Promise<void> {
    await this.txProducer.connect()
    await this.admin.connect()
    await this.loadTopology()
  }

  /**
   * loadTopology reads each parking topic's partition count and checks it is a multiple
   * of its source topic's (see parkingPartition).
   */
  private async loadTopology(): Promise<void> {
    const topics = [...this.sources.values(), ...this.sources.keys()]
    const { topics: metadata } = await this.admin.fetchTopicMetadata({ topics })
    const counts = new Map(metadata.map((t) => [t.name, t.partitions.length]))
    for (const [parkingTopic, source] of this.sources) {
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
      this.topologies.set(source, {
        parkingTopic,
        sourcePartitions,
        perSource: parkingPartitions / sourcePartitions,
      })
    }
  }

  /**
   * loadParked reads the parked merchants of newly assigned source partitions from the
   * group's commit metadata, where the previous owner's moves left them; their batches
   * wait until it is known. If it cannot be read, the partitions are read as if nothing
   * were parked (order may then break for a merchant parked before) and it is logged.
   */
  loadParked(states: PartitionState<T>[]): void {
    const topics = [...new Set(states.map((state) => state.topic))]
    const loading = this.admin.fetchOffsets({ groupId: this.options.groupId, topics }).then(
      (results) => {
        for (const { topic, partitions } of results) {
          for (const { partition, offset, metadata } of partitions) {
            const state = this.options.partitions.get(partitionId(topic, partition))
            if (state === undefined || !states.includes(state)) continue
            state.parked = ParkedMerchants.decode(metadata)
            if (Number(offset) >= 0) state.committedOffset = Number(offset)
            this.sourceRead(state)
          }
        }
      },
      (error: unknown) => {
        this.options.logger.error(
          { err: error, topics },
          'could not read parked merchants from the commit metadata',
        )
      },
    )
    for (const state of states) state.ready = loading
  }

  /**
   * park routes a source message to the parking topic; false (nothing done) when its
   * topic has no parking topic or a new parked merchant would not fit in the commit
   * metadata (the message then stays in its lane).
   */
  park(item: BufferedMessage<T>): boolean {
    const state = item.partition
    const topology = this.topologies.get(state.topic)
    if (topology === undefined || !state.parked.hasRoomFor(item.merchantKey)) return false
    state.parked.route(item.merchantKey, Number(item.message.offset), Number(item.message.timestamp))
    state.parkedDirty = true
    state.moving++
    this.parker.park({
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
    return true
  }

  /**
   * holdsBack keeps a message read back from a parking topic out of its lane until its
   * source partition is read past the offset it was parked from (see ReadBackGate), and
   * says whether it did; a message behind one held is held too, so the order holds.
   */
  holdsBack(item: BufferedMessage<T>): boolean {
    const sourceId = this.sourceIdOf(item)
    if (sourceId === undefined) return false
    if (!this.readBack.holding(sourceId) && this.sourceReadPast(item)) return false
    this.readBack.hold(sourceId, item)
    return true
  }

  /** sourceRead tells that source partition `state` was read further: held messages it passed join their lanes. */
  sourceRead(state: PartitionState<T>): void {
    this.readBack.release(
      state.id,
      (item) => this.sourceReadPast(item),
      (item) => {
        if (this.options.partitions.live(item.partition)) this.options.toLane(item)
      },
    )
  }

  /**
   * othersToRead says whether a parked merchant other than `merchantKey`, parked to parking
   * partition `state`, may have moved messages there not yet read, with room in its lane
   * (`hasRoom`): then reading on past `merchantKey`'s full lane serves it (see ParkingReads).
   */
  othersToRead(
    state: PartitionState<T>,
    merchantKey: string,
    hasRoom: (merchantKey: string) => boolean,
  ): boolean {
    const topology = state.sourceTopic === undefined ? undefined : this.topologies.get(state.sourceTopic)
    if (topology === undefined) return false
    const sourcePartition = state.partition % topology.sourcePartitions
    const source = this.options.partitions.get(partitionId(state.sourceTopic!, sourcePartition))
    if (source === undefined) return false
    for (const [other] of source.parked.waiting()) {
      if (other === merchantKey || state.reads!.skipping(other) || !hasRoom(other)) continue
      const { sourcePartitions, perSource } = topology
      if (parkingPartition(sourcePartition, other, sourcePartitions, perSource) !== state.partition) continue
      // Its last message moved so far is read already: nothing of it to read yet.
      if (state.reads!.lastRead(other) >= (source.parked.lastMovedOf(other) ?? -1)) continue
      return true
    }
    return false
  }

  /** forget drops what waits for a partition no longer held (see ReadBackGate.drop). */
  forget(state: PartitionState<T>): void {
    this.readBack.drop(state.id)
  }

  /**
   * sourceReadPast says whether a message read back may join its lane: its source
   * partition was read, or committed, past the offset it was parked from, or is not held
   * here (nothing of it to wait for).
   */
  private sourceReadPast(item: BufferedMessage<T>): boolean {
    const sourceId = this.sourceIdOf(item)
    const source = sourceId === undefined ? undefined : this.options.partitions.get(sourceId)
    if (source === undefined) return true
    const position = Math.max(source.tracker.nextOffset ?? -1, source.committedOffset ?? -1)
    return item.origin!.offset < position
  }

  private sourceIdOf(item: BufferedMessage<T>): string | undefined {
    const { sourceTopic } = item.partition
    if (sourceTopic === undefined || item.origin === undefined) return undefined
    return partitionId(sourceTopic, item.origin.partition)
  }

  /**
   * sourceLane is, for a lane of a parking partition, the lane of the same merchant in the
   * source partition its messages were parked from: it holds older messages, so it goes first.
   */
  sourceLane(lane: Lane<BufferedMessage<T>>): Lane<BufferedMessage<T>> | undefined {
    return this.sourceOf(lane)?.group.lanes.get(lane.merchantKey)
  }

  /**
   * countedAsParked says whether a lane's messages are in its merchant's parked count: a lane
   * of a parking partition whose source partition is held here with the merchant parked.
   */
  countedAsParked(lane: Lane<BufferedMessage<T>>): boolean {
    return this.sourceOf(lane)?.parked.has(lane.merchantKey) ?? false
  }

  /** handled tells of a message read back from a parking topic and finished (after complete). */
  handled(item: BufferedMessage<T>): void {
    const state = item.partition
    if (item.origin === undefined || state.sourceTopic === undefined) return
    this.parkedHandled++
    const source = this.options.partitions.get(partitionId(state.sourceTopic, item.origin.partition))
    if (!source?.parked.handled(item.merchantKey, item.origin.offset)) return
    source.parkedDirty = true
    state.reads?.caughtUp(item.merchantKey)
  }

  stats(): ParkingMovesStats {
    return { ...this.parker.stats(), parkedHandled: this.parkedHandled }
  }

  /** close stops moving; what is queued stays in its source partition's uncommitted range. */
  close(): Promise<void> {
    return this.parker.close()
  }

  async disconnect(): Promise<void> {
    await this.txProducer.disconnect()
    await this.admin.disconnect()
  }

  /** sourceOf is the source partition a parking lane's messages were parked from, when held here. */
  private sourceOf(lane: Lane<BufferedMessage<T>>): PartitionState<T> | undefined {
    const head = lane.peek()
    const state = head?.partition
    if (state?.sourceTopic === undefined || head?.origin === undefined) return undefined
    return this.options.partitions.get(partitionId(state.sourceTopic, head.origin.partition))
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
      this.options.complete(item)
    }
    for (const { topic, partition, offset } of offsets) {
      const state = this.options.partitions.get(partitionId(topic, partition))
      if (state !== undefined) state.committedOffset = Number(offset)
    }
  }
}

/** parkedOrigin reads where a message of a parking topic was parked from (PARK_HEADERS). */
export function parkedOrigin(message: KafkaMessage): ParkedOrigin | undefined {
  const partition = Number(headerText(message.headers, PARK_HEADERS.partition))
  const offset = Number(headerText(message.headers, PARK_HEADERS.offset))
  if (!Number.isSafeInteger(partition) || !Number.isSafeInteger(offset)) return undefined
  return { partition, offset }
}
