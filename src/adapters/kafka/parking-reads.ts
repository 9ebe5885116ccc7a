import { Deque } from './deque.js'

/**
 * SKIPPED_PER_LANE_BOUND bounds the messages a parking partition passes over, as a multiple
 * of its lane bound (40,000 with the default 2,000; each costs about 100 bytes): past it the
 * partition pauses when a lane is full, as it did before (the last resort).
 */
export const SKIPPED_PER_LANE_BOUND = 20

/** SkippedRead is a message of a parking partition passed over unread: its offset and its OffsetTracker sequence number. */
export interface SkippedRead {
  readonly offset: number
  readonly seq: number
}

/**
 * ParkingReads is what a parking partition passed over. Several parked merchants can share
 * a parking partition, their messages interleaved in the order they were moved; pausing the
 * partition when one merchant's lane is full starved the others (a slow merchant's full lane
 * held a fast one's reads for as long as the slow one took to drain half its lane). Instead,
 * a full lane's further messages are skipped: tracked (the watermark stays below them, so
 * they are read again after a restart) but not held, and once its lane has drained to half
 * the partition is read again from its oldest skipped message (a seek), taking the skipped
 * messages back in order and passing over the rest. A merchant with skipped messages has
 * all its newer ones skipped too, so its order holds.
 */
export class ParkingReads {
  private readonly byMerchant = new Map<string, Deque<SkippedRead>>()
  private readonly merchantAtOffset = new Map<number, string>()
  /** lastOrigins: per merchant, the source offset of its newest message read here (admitted or passed over). */
  private readonly lastOrigins = new Map<string, number>()
  /** seeking: a read from a skipped message was asked for (a seek) and no batch came since. */
  seeking = false

  /** size counts the messages skipped and not yet read again. */
  get size(): number {
    return this.merchantAtOffset.size
  }

  /** skipping says whether the merchant has skipped messages (its newer ones are skipped too). */
  skipping(merchantKey: string): boolean {
    return this.byMerchant.has(merchantKey)
  }

  /** passOver records that the message at `offset` (read as `seq`) of the merchant was passed over, to be read again. */
  passOver(merchantKey: string, offset: number, seq: number): void {
    let skipped = this.byMerchant.get(merchantKey)
    if (skipped === undefined) {
      skipped = new Deque<SkippedRead>()
      this.byMerchant.set(merchantKey, skipped)
    }
    skipped.push({ offset, seq })
    this.merchantAtOffset.set(offset, merchantKey)
  }

  /** merchantAt is the merchant whose message at `offset` was skipped, if one was. */
  merchantAt(offset: number): string | undefined {
    return this.merchantAtOffset.get(offset)
  }

  /** front is the merchant's oldest skipped message: the only one it may take back. */
  front(merchantKey: string): SkippedRead | undefined {
    return this.byMerchant.get(merchantKey)?.peek()
  }

  /** take removes the merchant's oldest skipped message (it is read now, or gone). */
  take(merchantKey: string): SkippedRead | undefined {
    const skipped = this.byMerchant.get(merchantKey)
    const read = skipped?.shift()
    if (read === undefined) return undefined
    this.merchantAtOffset.delete(read.offset)
    if (skipped!.length === 0) this.byMerchant.delete(merchantKey)
    return read
  }

  /** read records the source offset of the merchant's newest message read here. */
  read(merchantKey: string, originOffset: number): void {
    this.lastOrigins.set(merchantKey, originOffset)
  }

  /** lastRead is the source offset of the merchant's newest message read here; -1 before any. */
  lastRead(merchantKey: string): number {
    return this.lastOrigins.get(merchantKey) ?? -1
  }

  /** caughtUp forgets a merchant no longer parked (see ParkedMerchants.handled). */
  caughtUp(merchantKey: string): void {
    this.lastOrigins.delete(merchantKey)
  }

  /**
   * earliest is the lowest offset above `afterOffset` of the oldest skipped message of a
   * merchant that `ready` says can take it back; undefined when there is none.
   */
  earliest(ready: (merchantKey: string) => boolean, afterOffset = -1): number | undefined {
    let lowest: number | undefined
    for (const [merchantKey, skipped] of this.byMerchant) {
      const offset = skipped.peek()!.offset
      if (offset > afterOffset && (lowest === undefined || offset < lowest) && ready(merchantKey))
        lowest = offset
    }
    return lowest
  }
}
