import type { KafkaMessage } from 'kafkajs'
import type { LaneItem } from './dispatcher.js'
import type { LaneGroup } from './lanes.js'
import { OffsetTracker } from './offset-tracker.js'
import { ParkedMerchants } from './parking.js'
import { ParkingReads } from './parking-reads.js'

/** MESSAGE_OVERHEAD_BYTES is what a buffered message costs besides its key, value and headers. */
export const MESSAGE_OVERHEAD_BYTES = 128

/** messageBytes is what a buffered message counts against maxBufferedBytes. */
export function messageBytes(message: KafkaMessage): number {
  let bytes = MESSAGE_OVERHEAD_BYTES + (message.key?.length ?? 0) + (message.value?.length ?? 0)
  if (message.headers !== undefined) {
    for (const [name, value] of Object.entries(message.headers)) {
      bytes += name.length
      if (Array.isArray(value)) for (const v of value) bytes += v.length
      else if (value !== undefined) bytes += value.length
    }
  }
  return bytes
}

/** ParkedOrigin is where a message read from a parking topic was parked from. */
export interface ParkedOrigin {
  readonly partition: number
  readonly offset: number
}

/** BufferedMessage is a fetched message held until it is done (handled, dead-lettered or parked). */
export interface BufferedMessage<T> extends LaneItem {
  readonly partition: PartitionState<T>
  /** seq is the message's sequence number in its partition's OffsetTracker. */
  readonly seq: number
  readonly message: KafkaMessage
  readonly bytes: number
  /**
   * value is the decoded value. Absent when there is no decoder (the value is then the
   * message's own, see handlerValue) and the message is not parked: an active merchant's item
   * is kept to the fields it needs.
   */
  readonly value?: T
  /** origin is set on messages read from a parking topic (absent on the others). */
  readonly origin?: ParkedOrigin
}

/** handlerValue is what the handler gets as the message's value (see BufferedMessage.value). */
export function handlerValue<T>(item: BufferedMessage<T>): T {
  return 'value' in item ? (item.value as T) : (item.message.value as T)
}

/**
 * PartitionState is what the consumer holds for one assigned partition: of a source topic,
 * or of a parking topic (`sourceTopic` then names the topic its messages were parked from).
 */
export class PartitionState<T> {
  readonly tracker = new OffsetTracker()
  buffered = 0
  /** moving: of the buffered, those queued for or in a move to the parking topic. */
  moving = 0
  bytes = 0
  paused = false
  committedOffset: number | undefined
  /** parked: the merchants of a source partition with messages parked (loaded from the commit metadata). */
  parked = new ParkedMerchants()
  /** parkedDirty: the parked set changed since the last commit (commit even if the watermark did not move). */
  parkedDirty = false
  /** fullLane is the merchant whose lane over its bound paused the partition, if any. */
  fullLane: string | undefined
  /** ready resolves once the parked set is loaded; batches wait for it. */
  ready: Promise<void> = Promise.resolve()
  /** reads: what a parking partition passed over (see ParkingReads); undefined on a source partition. */
  readonly reads: ParkingReads | undefined

  constructor(
    readonly topic: string,
    readonly partition: number,
    readonly group: LaneGroup<BufferedMessage<T>>,
    readonly sourceTopic: string | undefined,
  ) {
    this.reads = sourceTopic === undefined ? undefined : new ParkingReads()
  }

  get id(): string {
    return partitionId(this.topic, this.partition)
  }

  get isParking(): boolean {
    return this.sourceTopic !== undefined
  }
}

export function partitionId(topic: string, partition: number): string {
  return `${topic}:${partition}`
}
