import { EventEmitter } from 'node:events'
import type {
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
import { Dispatcher, type DispatcherStats, type LaneItem } from './dispatcher.js'
import type { LaneGroup } from './lanes.js'
import { decodeValue, errorMessage, jsonDecoder, readKey } from './message-key.js'
import { OffsetTracker } from './offset-tracker.js'
import { type ResolvedOptions, resolveOptions, type ThrottledConsumerOptions } from './options.js'
import { WakeQueue } from './wake-queue.js'

/** ThrottledConsumerStats are gauges and counters for the service's metrics. */
export interface ThrottledConsumerStats extends DispatcherStats {
  assignedPartitions: number
  pausedPartitions: number
  /** buffered: messages held, over all partitions (waiting, running, being dead-lettered). */
  buffered: number
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

/** BufferedMessage is a fetched message held until it is done. */
interface BufferedMessage<T> extends LaneItem {
  readonly partition: PartitionState<T>
  /** seq is the message's sequence number in its partition's OffsetTracker. */
  readonly seq: number
  readonly message: KafkaMessage
  readonly value: T
}

/** PartitionState is what the consumer holds for one assigned partition. */
class PartitionState<T> {
  readonly tracker = new OffsetTracker()
  buffered = 0
  paused = false
  committedOffset: number | undefined

  constructor(
    readonly topic: string,
    readonly partition: number,
    readonly group: LaneGroup<BufferedMessage<T>>,
  ) {}

  get id(): string {
    return partitionId(this.topic, this.partition)
  }
}

function partitionId(topic: string, partition: number): string {
  return `${topic}:${partition}`
}

class KafkaLaneConsumer<T> implements ThrottledConsumer {
  private readonly logger: Logger
  private readonly consumer: Consumer
  private readonly producer: Producer
  private readonly dispatcher: Dispatcher<BufferedMessage<T>>
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
    this.consumer = options.kafka.consumer({
      maxWaitTimeInMs: 250,
      ...options.consumerConfig,
      groupId: options.groupId,
    })
    this.producer = options.kafka.producer({ allowAutoTopicCreation: false, ...options.producerConfig })
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
      await this.consumer.connect()
      await this.consumer.subscribe({
        topics: this.options.topics,
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
    const committed: Record<string, number> = {}
    const watermarks: Record<string, number> = {}
    for (const state of this.partitions.values()) {
      buffered += state.buffered
      if (state.paused) pausedPartitions++
      if (state.committedOffset !== undefined) committed[state.id] = state.committedOffset
      const watermark = state.tracker.watermark
      if (watermark !== undefined) watermarks[state.id] = watermark
    }
    return {
      ...this.dispatcher.stats(),
      ...this.counters,
      assignedPartitions: this.partitions.size,
      pausedPartitions,
      buffered,
      committed,
      watermarks,
    }
  }

  /**
   * onBatch buffers a fetched batch into the lanes and returns at once, so kafkajs's
   * fetcher (one per broker, waiting for every batch of a fetch) is never held up by a
   * handler. It moves the fetch position past what it buffered with resolveOffset, which
   * SETS the position (it is not a maximum): it is always given the partition's next
   * offset minus one. Offsets below that are already held or done: a rejoin makes kafkajs
   * fetch again from the committed offset, and those duplicates are skipped here.
   *
   * A batch is taken whole, then the partition is paused if it holds the bound or more:
   * taking part of a batch would make kafkajs fetch and decode the rest again after every
   * resume (measured: a 5,000 bound with 1 MB fetches of small messages cut throughput by
   * two thirds). A partition thus holds at most the bound plus one fetch of it.
   */
  private async onBatch({ batch, resolveOffset }: EachBatchPayload): Promise<void> {
    const state = this.partitions.get(partitionId(batch.topic, batch.partition))
    if (state === undefined || this.stopping !== undefined) return
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
    if (state.buffered >= this.options.maxBufferedPerPartition && !state.paused) this.setPaused(state, true)
  }

  private buffer(state: PartitionState<T>, message: KafkaMessage, offset: number): void {
    const seq = state.tracker.track(offset)
    state.buffered++
    let value = message.value as T
    if (this.decode !== undefined) {
      const decoded = decodeValue(this.decode, message)
      if (!decoded.ok) {
        const item = { merchantKey: '', partition: state, seq, message, value }
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
      const item = { merchantKey: '', partition: state, seq, message, value }
      const error = `invalid merchant key: ${merchantKey.reason}`
      this.dispatcher.deadLetterNow(state.group, item, { reason: 'invalid-key', error, attempts: 0 })
      return
    }
    this.dispatcher.push(state.group, { merchantKey, partition: state, seq, message, value })
  }

  /** done marks a message finished: the watermark may move, a paused partition may resume. */
  private done(item: BufferedMessage<T>): void {
    const state = item.partition
    if (!state.tracker.complete(item.seq)) return
    state.buffered--
    if (
      state.paused &&
      this.stopping === undefined &&
      state.buffered <= this.options.maxBufferedPerPartition / 2
    ) {
      this.setPaused(state, false)
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
    for (const [id, state] of this.partitions) {
      if (assigned.has(id) && !newMember) continue
      this.partitions.delete(id)
      this.dispatcher.drop(state.group, 'partition revoked')
      revoked.push(id)
    }
    const pausedInKafkajs = new Set<string>()
    for (const { topic, partitions } of this.consumer.paused()) {
      for (const partition of partitions) pausedInKafkajs.add(partitionId(topic, partition))
    }
    for (const [id, { topic, partition }] of assigned) {
      let state = this.partitions.get(id)
      if (state === undefined) {
        state = new PartitionState(topic, partition, this.dispatcher.createGroup(id))
        this.partitions.set(id, state)
      }
      if (state.paused !== pausedInKafkajs.has(id)) this.applyPause(topic, partition, state.paused)
    }
    this.logger.info({ memberId, assigned: [...assigned.keys()], revoked, newMember }, 'assignment received')
    this.emitter.emit('assignment', { assigned: [...assigned.keys()], revoked })
    if (this.options.shareLimitAcrossMembers) void this.updateShare()
    if (this.stopping === undefined) this.dispatcher.resume()
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
   * commit. One commit at a time; a failure is counted and the next round tries again.
   * What kafkajs really committed is learnt from its COMMIT_OFFSETS event, since its
   * commitOffsets resolves without committing anything when its runner is not running.
   */
  private commit(): Promise<void> {
    if (this.commitInFlight !== undefined) return this.commitInFlight
    const offsets: { topic: string; partition: number; offset: string }[] = []
    for (const state of this.partitions.values()) {
      const watermark = state.tracker.watermark
      if (watermark !== undefined && watermark !== state.committedOffset) {
        offsets.push({ topic: state.topic, partition: state.partition, offset: String(watermark) })
      }
    }
    if (offsets.length === 0) return Promise.resolve()
    this.commitInFlight = this.consumer
      .commitOffsets(offsets)
      .catch((error: unknown) => {
        this.counters.commitFailures++
        this.logger.warn({ err: error, offsets }, 'offset commit failed; retrying on the next round')
      })
      .finally(() => {
        this.commitInFlight = undefined
      })
    return this.commitInFlight
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
    this.logger.info(this.stats(), 'consumer stopped')
  }
}
