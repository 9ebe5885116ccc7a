import type { BufferedMessage, PartitionState } from './partition-state.js'

/** PartitionTableOptions give a PartitionTable its bounds and the way to pause a partition. */
export interface PartitionTableOptions {
  maxBufferedPerPartition: number
  maxBufferedBytes: number
  /** maxBufferedPerMerchant bounds a source partition's lane (see ThrottledConsumerOptions). */
  maxBufferedPerMerchant: number
  /** parkingLaneBound bounds a parking partition's lane; undefined with parking off. */
  parkingLaneBound: number | undefined
  /** applyPause tells kafkajs to pause or resume fetching a partition. */
  applyPause: (topic: string, partition: number, paused: boolean) => void
  /** stopping says the consumer is stopping: nothing resumes any more. */
  stopping: () => boolean
}

/** PartitionGauges are the partitions' part of ThrottledConsumerStats. */
export interface PartitionGauges {
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
  pauses: number
  resumes: number
  /** committed: the last committed offset per partition, by "topic:partition". */
  committed: Record<string, number>
  /** watermarks: the offset that would be committed now, per partition. */
  watermarks: Record<string, number>
}

/**
 * PartitionTable holds the partitions assigned to the consumer, what their buffered
 * messages count against maxBufferedBytes, and when each must stop fetching (pause) and
 * may fetch again (resume). Pausing is the last resort: with parking on, a source
 * partition over a bound sends the excess to the parking topic instead.
 */
export class PartitionTable<T> {
  private pauses = 0
  private resumes = 0
  private readonly states = new Map<string, PartitionState<T>>()
  private totalBytes = 0
  /** budgetExceeded: the buffer passed maxBufferedBytes and has not come back under 90% of it. */
  private budgetExceeded = false

  constructor(private readonly options: PartitionTableOptions) {}

  get size(): number {
    return this.states.size
  }

  /** bytes is what the held messages count against maxBufferedBytes. */
  get bytes(): number {
    return this.totalBytes
  }

  /** overBudget: the buffer is over its byte budget (until it is back under 90% of it). */
  get overBudget(): boolean {
    return this.budgetExceeded
  }

  get(id: string): PartitionState<T> | undefined {
    return this.states.get(id)
  }

  /** live says whether `state` is still the table's state of its partition (not dropped or replaced). */
  live(state: PartitionState<T>): boolean {
    return this.states.get(state.id) === state
  }

  values(): IterableIterator<PartitionState<T>> {
    return this.states.values()
  }

  add(state: PartitionState<T>): void {
    this.states.set(state.id, state)
  }

  /** remove forgets a partition; its messages no longer count against the budget. */
  remove(state: PartitionState<T>): void {
    if (!this.live(state)) return
    this.states.delete(state.id)
    this.totalBytes -= state.bytes
  }

  gauges(): PartitionGauges {
    const gauges: PartitionGauges = {
      assignedPartitions: this.states.size,
      pausedPartitions: 0,
      buffered: 0,
      bufferedBytes: this.totalBytes,
      parkedMerchants: 0,
      parkedWaiting: 0,
      pauses: this.pauses,
      resumes: this.resumes,
      committed: {},
      watermarks: {},
    }
    for (const state of this.states.values()) {
      gauges.buffered += state.buffered
      gauges.parkedMerchants += state.parked.size
      gauges.parkedWaiting += state.parked.total
      if (state.paused) gauges.pausedPartitions++
      if (state.committedOffset !== undefined) gauges.committed[state.id] = state.committedOffset
      const watermark = state.tracker.watermark
      if (watermark !== undefined) gauges.watermarks[state.id] = watermark
    }
    return gauges
  }

  /** laneBound is the most messages a lane of `state` holds before it counts as full. */
  laneBound(state: PartitionState<T>): number {
    return state.isParking
      ? (this.options.parkingLaneBound ?? this.options.maxBufferedPerMerchant)
      : this.options.maxBufferedPerMerchant
  }

  /** hold counts a message's bytes against the budget. */
  hold(state: PartitionState<T>, bytes: number): void {
    state.buffered++
    state.bytes += bytes
    this.totalBytes += bytes
    if (this.totalBytes >= this.options.maxBufferedBytes) this.budgetExceeded = true
  }

  /** unhold gives back what hold counted, for a message passed over unread (see ParkingReads). */
  unhold(state: PartitionState<T>, bytes: number): void {
    state.buffered--
    state.bytes -= bytes
    if (this.live(state)) this.totalBytes -= bytes
    if (this.budgetExceeded && this.totalBytes <= this.options.maxBufferedBytes * 0.9) {
      this.budgetExceeded = false
      for (const other of this.states.values()) this.maybeResume(other)
    }
  }

  /** complete marks the item done in its partition and frees its place; false when it already was. */
  complete(item: BufferedMessage<T>): boolean {
    const state = item.partition
    if (!state.tracker.complete(item.seq)) return false
    state.buffered--
    state.bytes -= item.bytes
    if (this.live(state)) this.totalBytes -= item.bytes
    if (this.budgetExceeded && this.totalBytes <= this.options.maxBufferedBytes * 0.9) {
      this.budgetExceeded = false
      for (const other of this.states.values()) this.maybeResume(other)
    } else {
      this.maybeResume(state)
    }
    return true
  }

  /** pauseIfOverBound pauses a partition that must stop fetching (see overBound). */
  pauseIfOverBound(state: PartitionState<T>): void {
    if (!state.paused && this.overBound(state)) this.setPaused(state, true)
  }

  /** resumeForReadAgain lifts a full lane's pause of a parking partition read again for its other lanes (see ParkingReads). */
  resumeForReadAgain(state: PartitionState<T>): void {
    if (!state.paused || state.fullLane === undefined) return
    state.fullLane = undefined
    this.maybeResume(state)
  }

  /** pauseAll stops every partition fetching, for good (at stop: not counted as pauses). */
  pauseAll(): void {
    for (const state of this.states.values()) {
      state.paused = true
      this.options.applyPause(state.topic, state.partition, true)
    }
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
    return this.budgetPauses(state)
  }

  /** budgetPauses: over budget, this partition pauses (it has no parking topic to send its excess to). */
  private budgetPauses(state: PartitionState<T>): boolean {
    return this.budgetExceeded && (state.isParking || this.options.parkingLaneBound === undefined)
  }

  /** maybeResume resumes a paused partition once it is back under every bound. */
  private maybeResume(state: PartitionState<T>): void {
    if (!state.paused || this.options.stopping()) return
    if (state.buffered - state.moving > this.options.maxBufferedPerPartition / 2) return
    if (state.fullLane !== undefined) {
      if ((state.group.lanes.get(state.fullLane)?.size ?? 0) > this.laneBound(state) / 2) return
      state.fullLane = undefined
    }
    if (this.budgetPauses(state)) return
    this.setPaused(state, false)
  }

  private setPaused(state: PartitionState<T>, paused: boolean): void {
    state.paused = paused
    if (paused) this.pauses++
    else this.resumes++
    this.options.applyPause(state.topic, state.partition, paused)
  }
}
