import type { ConsumerCommitOffsetsEvent } from 'kafkajs'
import type { Logger } from 'pino'
import type { PartitionState } from './partition-state.js'
import { partitionId } from './partition-state.js'
import type { PartitionTable } from './partition-table.js'

/** CommitOffset is one partition's offset (and metadata) to commit, as kafkajs takes it. */
export interface CommitOffset {
  topic: string
  partition: number
  offset: string
  metadata: string | null
}

/** CommittedOffset is one partition's offset the broker accepted. */
export interface CommittedOffset {
  topic: string
  partition: number
  offset: number
}

/** OffsetCommitterOptions wire an OffsetCommitter to the partitions and kafkajs's commitOffsets. */
export interface OffsetCommitterOptions<T> {
  partitions: Pick<PartitionTable<T>, 'get' | 'values'>
  commitOffsets: (offsets: CommitOffset[]) => Promise<void>
  logger: Logger
}

/**
 * OffsetCommitter commits each partition's watermark, with its parked merchants in the
 * commit metadata, and runs those commits and the parking moves one at a time (see
 * exclusive).
 */
export class OffsetCommitter<T> {
  /** commits: offset commits the broker accepted. */
  commits = 0
  commitFailures = 0
  private inFlight: Promise<void> | undefined
  private serialTail: Promise<void> = Promise.resolve()

  constructor(private readonly options: OffsetCommitterOptions<T>) {}

  /**
   * commit commits the watermark of every assigned partition that moved since its last
   * commit (or whose parked merchants changed: they ride in the commit's metadata). One
   * commit at a time, never beside a parking move (see exclusive); a failure is counted
   * and the next round tries again. What kafkajs really committed is learnt from its
   * COMMIT_OFFSETS event (see committed), since its commitOffsets resolves without
   * committing anything when its runner is not running.
   */
  commit(): Promise<void> {
    if (this.inFlight !== undefined) return this.inFlight
    this.inFlight = this.exclusive(() => this.commitNow()).finally(() => {
      this.inFlight = undefined
    })
    return this.inFlight
  }

  /** settled resolves once the commit in flight, if any, has ended. */
  async settled(): Promise<void> {
    await this.inFlight
  }

  /**
   * exclusive runs offset commits and parking moves one at a time: a move's transactional
   * offset commit lands when its transaction commits, and a plain commit beside it could
   * be overwritten by an older offset.
   */
  exclusive(task: () => Promise<void>): Promise<void> {
    const result = this.serialTail.then(task)
    this.serialTail = result.catch(() => undefined)
    return result
  }

  /** committed takes kafkajs's COMMIT_OFFSETS event: what the broker accepted, per partition. */
  committed(event: ConsumerCommitOffsetsEvent): CommittedOffset[] {
    const offsets: CommittedOffset[] = []
    for (const { topic, partitions } of event.payload.topics) {
      for (const { partition, offset } of partitions) {
        const state = this.options.partitions.get(partitionId(topic, partition))
        const committed = Number(String(offset))
        if (state !== undefined) state.committedOffset = committed
        offsets.push({ topic, partition, offset: committed })
      }
    }
    this.commits++
    return offsets
  }

  private async commitNow(): Promise<void> {
    const offsets: CommitOffset[] = []
    const dirty: PartitionState<T>[] = []
    for (const state of this.options.partitions.values()) {
      const watermark = state.tracker.watermark
      if (watermark === undefined || (watermark === state.committedOffset && !state.parkedDirty)) continue
      const metadata = state.isParking ? null : state.parked.encode()
      offsets.push({ topic: state.topic, partition: state.partition, offset: String(watermark), metadata })
      if (state.parkedDirty) dirty.push(state)
      state.parkedDirty = false
    }
    if (offsets.length === 0) return
    try {
      await this.options.commitOffsets(offsets)
    } catch (error) {
      for (const state of dirty) state.parkedDirty = true
      this.commitFailures++
      this.options.logger.warn({ err: error, offsets }, 'offset commit failed; retrying on the next round')
    }
  }
}
