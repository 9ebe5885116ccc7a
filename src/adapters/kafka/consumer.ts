import { EventEmitter } from 'node:events'
import type {
  Consumer,
  ConsumerCrashEvent,
  ConsumerGroupJoinEvent,
  EachBatchPayload,
  Producer,
} from 'kafkajs'
import { type Logger, pino } from 'pino'
import { backoffMs } from '../../limiter/backoff.js'
import { Assignments } from './assignments.js'
import { merchantBacklog } from './backlog.js'
import { OffsetCommitter } from './committer.js'
import type {
  DeadLetterEvent,
  ThrottledConsumer,
  ThrottledConsumerEvents,
  ThrottledConsumerStats,
} from './consumer-api.js'
import { type DeadLetter, deadLetterMessage } from './dead-letter.js'
import { Dispatcher } from './dispatcher.js'
import { errorMessage, jsonDecoder } from './message-key.js'
import { type ResolvedOptions, resolveOptions, type ThrottledConsumerOptions } from './options.js'
import { ParkingMoves } from './parking-moves.js'
import { type BufferedMessage, handlerValue, partitionId } from './partition-state.js'
import { PartitionTable } from './partition-table.js'
import { MessageRouter } from './router.js'
import { WakeQueue } from './wake-queue.js'

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

const NO_PARKING = { parked: 0, parkQueued: 0, parkTransactions: 0, parkFailures: 0, parkedHandled: 0 }

/**
 * KafkaLaneConsumer runs kafkajs and follows the group: it takes assignments (which
 * partitions' lanes are kept, rechecked or dropped), crashes and stops, and hands fetched
 * batches to the MessageRouter. The lanes are the Dispatcher's, the partitions and their
 * bounds the PartitionTable's, commits the OffsetCommitter's, parking ParkingMoves'.
 */
class KafkaLaneConsumer<T> implements ThrottledConsumer {
  private readonly logger: Logger
  private readonly consumer: Consumer
  private readonly producer: Producer
  private readonly dispatcher: Dispatcher<BufferedMessage<T>>
  private readonly partitions: PartitionTable<T>
  private readonly committer: OffsetCommitter<T>
  private readonly router: MessageRouter<T>
  /** parking exists with parking on. */
  private readonly parking: ParkingMoves<T> | undefined
  private readonly assignments: Assignments<T>
  private readonly emitter = new EventEmitter()
  private readonly removeListeners: (() => void)[] = []
  private memberId: string | undefined
  private commitTimer: NodeJS.Timeout | undefined
  private restartTimer: NodeJS.Timeout | undefined
  /** crashesInARow counts crashes since the last successful join, for the restart backoff. */
  private crashesInARow = 0
  private started = false
  private stopping: Promise<void> | undefined
  private readonly counters = { rebalances: 0, restarts: 0 }

  constructor(private readonly options: ResolvedOptions<T>) {
    this.logger = (options.logger ?? pino({ level: 'silent' })).child({
      component: 'kafka-consumer',
      groupId: options.groupId,
    })
    this.partitions = new PartitionTable<T>({
      maxBufferedPerPartition: options.maxBufferedPerPartition,
      maxBufferedBytes: options.maxBufferedBytes,
      maxBufferedPerMerchant: options.maxBufferedPerMerchant,
      parkingLaneBound: options.parking?.maxBufferedPerMerchant,
      applyPause: (topic, partition, paused) => this.applyPause(topic, partition, paused),
      stopping: () => this.stopping !== undefined,
    })
    this.committer = new OffsetCommitter<T>({
      partitions: this.partitions,
      commitOffsets: (offsets) => this.consumer.commitOffsets(offsets),
      logger: this.logger,
    })
    this.parking =
      options.parking === undefined
        ? undefined
        : new ParkingMoves<T>({
            kafka: options.kafka,
            groupId: options.groupId,
            parking: options.parking,
            producerConfig: options.producerConfig,
            partitions: this.partitions,
            complete: (item) => this.partitions.complete(item),
            toLane: (item) => this.router.admit(item),
            exclusive: (task) => this.committer.exclusive(task),
            logger: this.logger,
          })
    this.consumer = options.kafka.consumer({
      maxWaitTimeInMs: 250,
      ...(this.parking === undefined ? {} : { partitionAssigners: [this.parking.assigner()] }),
      ...options.consumerConfig,
      groupId: options.groupId,
    })
    this.producer = options.kafka.producer({ allowAutoTopicCreation: false, ...options.producerConfig })
    this.dispatcher = this.createDispatcher()
    this.assignments = new Assignments<T>({
      kafka: options.kafka,
      groupId: options.groupId,
      partitions: this.partitions,
      dispatcher: this.dispatcher,
      parking: this.parking,
      paused: () => this.consumer.paused(),
      applyPause: (topic, partition, paused) => this.applyPause(topic, partition, paused),
      commit: () => this.committer.commit(),
      logger: this.logger,
    })
    this.router = this.createRouter()
  }

  private createRouter(): MessageRouter<T> {
    const { options } = this
    return new MessageRouter<T>({
      keyOf: options.keyOf,
      limitKeys: options.limitKeys,
      maxKeyLength: options.maxKeyLength,
      decode:
        options.decode ??
        (typeof options.keyOf === 'object' && 'field' in options.keyOf
          ? (jsonDecoder as (value: Buffer | null) => T)
          : undefined),
      maxBufferedPerMerchant: options.maxBufferedPerMerchant,
      limiter: options.limiter,
      dispatcher: this.dispatcher,
      partitions: this.partitions,
      parking: this.parking,
      stopping: () => this.stopping !== undefined,
      seek: (state, offset) => this.seek(state.topic, state.partition, offset),
    })
  }

  private createDispatcher(): Dispatcher<BufferedMessage<T>> {
    const { options } = this
    const limiter = options.limiter
    return new Dispatcher<BufferedMessage<T>>({
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
          value: handlerValue(item),
          attempt,
          signal,
        }),
      deadLetter: (item, failure) => this.writeDeadLetter(item, failure),
      done: (item) => this.done(item),
      behind: this.parking === undefined ? undefined : (lane) => this.parking!.sourceLane(lane),
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
      this.consumer.on(events.COMMIT_OFFSETS, (event) => {
        this.emitter.emit('commit', { offsets: this.committer.committed(event) })
      }),
      this.consumer.on(events.CRASH, (event) => this.onCrash(event)),
    )
    try {
      await this.producer.connect()
      await this.parking?.connect()
      await this.consumer.connect()
      await this.consumer.subscribe({
        topics: this.options.topics,
        fromBeginning: this.options.fromBeginning ?? false,
      })
      // From the beginning whatever fromBeginning says: a parking partition without a committed
      // offset may hold moves whose source offsets are committed (the owner died before it
      // read them back), and reading it from its end would lose them.
      if (this.parking !== undefined)
        await this.consumer.subscribe({ topics: this.parking.parkingTopics, fromBeginning: true })
      await this.runKafkajs()
    } catch (error) {
      // Nothing runs: let run() be called again once the broker can be reached.
      for (const remove of this.removeListeners.splice(0)) remove()
      this.started = false
      throw error
    }
    this.commitTimer = setInterval(() => void this.committer.commit(), this.options.commitIntervalMs).unref()
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
    const parking = this.parking
    return {
      ...this.dispatcher.stats(),
      ...(parking?.stats() ?? NO_PARKING),
      ...this.partitions.gauges(),
      ...this.counters,
      refetchedSkipped: this.router.refetchedSkipped,
      parkedSkipped: this.router.parkedSkipped,
      commits: this.committer.commits,
      commitFailures: this.committer.commitFailures,
      backlog: merchantBacklog(
        this.partitions.values(),
        (lane) => parking?.countedAsParked(lane) ?? false,
        Date.now(),
      ),
    }
  }

  /**
   * onBatch hands a fetched batch to the router and returns at once, so kafkajs's fetcher
   * (one per broker, waiting for every batch of a fetch) is never held up by a handler.
   * A partition's batches wait until its parked merchants are known (see PartitionState.ready).
   */
  private async onBatch({ batch, resolveOffset }: EachBatchPayload): Promise<void> {
    const state = this.partitions.get(partitionId(batch.topic, batch.partition))
    if (state === undefined || this.stopping !== undefined) return
    await state.ready
    if (!this.partitions.live(state)) return
    await this.router.take(state, batch, resolveOffset)
  }

  /** done marks a message finished: the watermark may move, a parked merchant may have caught up. */
  private done(item: BufferedMessage<T>): void {
    if (!this.partitions.complete(item)) return
    this.parking?.handled(item)
    this.router.readAgainIfRoom(item.partition)
  }

  /** seek has kafkajs fetch a partition from `offset` next; false when kafkajs is not running. */
  private seek(topic: string, partition: number, offset: number): boolean {
    try {
      this.consumer.seek({ topic, partition, offset: String(offset) })
      return true
    } catch (error) {
      this.logger.debug({ err: error, topic, partition, offset }, 'seek not possible now')
      return false
    }
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
   * onGroupJoin takes a new assignment (see Assignments). Handlers start again once the
   * partitions kept across a new member id are rechecked.
   */
  private onGroupJoin(event: ConsumerGroupJoinEvent): void {
    const { memberAssignment, memberId } = event.payload
    const newMember = this.memberId !== undefined && this.memberId !== memberId
    this.memberId = memberId
    this.crashesInARow = 0
    this.counters.rebalances++
    const { assigned, revoked, rechecked } = this.assignments.take(memberAssignment, newMember)
    this.logger.info({ memberId, assigned, revoked, newMember }, 'assignment received')
    this.emitter.emit('assignment', { assigned, revoked })
    if (this.options.shareLimitAcrossMembers) void this.updateShare()
    void rechecked.then(() => {
      if (this.stopping === undefined) this.dispatcher.resume()
    })
  }

  /**
   * onRebalancing: the group is rebalancing and this member is about to rejoin. Handlers
   * stop starting until the new assignment is known (a partition may move), and what is
   * done is committed now, while the old generation still accepts commits.
   */
  private onRebalancing(): void {
    this.dispatcher.hold()
    void this.committer.commit()
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

  private async shutdown(): Promise<void> {
    clearInterval(this.commitTimer)
    clearTimeout(this.restartTimer)
    if (!this.started) return
    this.partitions.pauseAll()
    this.dispatcher.close()
    await this.parking?.close()
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
    await this.committer.settled()
    await this.committer.commit()
    for (const remove of this.removeListeners) remove()
    await this.consumer.disconnect()
    await this.producer.disconnect()
    await this.assignments.disconnect()
    await this.parking?.disconnect()
    this.logger.info(this.stats(), 'consumer stopped')
  }
}
