import { Deque } from './deque.js'

/**
 * OffsetTracker follows one partition's offsets from the moment they are buffered until
 * they are done, and answers the watermark: the lowest offset not yet done, which is the
 * offset to commit (Kafka commits "the next message to read"). Messages complete in any
 * order; the watermark only moves past an offset once every offset below it is done.
 *
 * Offsets are JavaScript numbers: exact up to 2^53, far beyond any real partition.
 * Offsets the partition skips (compaction, transaction markers) need no entry: the
 * watermark is the oldest pending offset, or the next offset to fetch when none is pending.
 */
export class OffsetTracker {
  /**
   * pendingOffsets holds the offsets tracked and not yet passed by the watermark, ascending;
   * a done offset is stored as -(offset + 1) until every offset before it is done too.
   */
  private readonly pendingOffsets = new Deque<number>(16)
  /** base is the sequence number of the deque's head: sequence numbers survive shifts. */
  private base = 0
  private next: number | undefined
  private notDone = 0

  /**
   * track records `offset` as buffered and returns its sequence number, to pass to
   * `complete`. Offsets must be tracked in ascending order, at or above `nextOffset`.
   */
  track(offset: number): number {
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new TypeError(`OffsetTracker.track: expected an offset >= 0, got ${offset}`)
    }
    if (this.next !== undefined && offset < this.next) {
      throw new TypeError(`OffsetTracker.track: expected an offset >= ${this.next}, got ${offset}`)
    }
    this.pendingOffsets.push(offset)
    this.notDone++
    this.next = offset + 1
    return this.base + this.pendingOffsets.length - 1
  }

  /**
   * advanceTo moves the next offset to fetch forward to `offset` without tracking
   * anything: the partition had records there the consumer never sees (transaction
   * markers at the end of a batch). It never moves backwards.
   */
  advanceTo(offset: number): void {
    if (this.next === undefined || offset > this.next) this.next = offset
  }

  /**
   * complete marks the offset with sequence number `seq` done. It returns false when that
   * sequence number is unknown or already done (a late completion is harmless).
   */
  complete(seq: number): boolean {
    const index = seq - this.base
    const offset = this.pendingOffsets.at(index)
    if (offset === undefined || offset < 0) return false
    this.pendingOffsets.set(index, -offset - 1)
    this.notDone--
    const queue = this.pendingOffsets
    while (queue.length > 0 && queue.peek()! < 0) {
      queue.shift()
      this.base++
    }
    return true
  }

  /** nextOffset is one past the highest offset seen, or undefined before the first. */
  get nextOffset(): number | undefined {
    return this.next
  }

  /**
   * watermark is the lowest offset not yet done: the offset to commit. Undefined until
   * the partition has delivered anything (nothing to commit yet).
   */
  get watermark(): number | undefined {
    return this.pendingOffsets.length > 0 ? this.pendingOffsets.peek() : this.next
  }

  /**
   * watermarkWith is what the watermark would be if the offsets of sequence numbers `seqs`
   * were done too (the offset to commit with a move that completes them).
   */
  watermarkWith(seqs: ReadonlySet<number>): number | undefined {
    const queue = this.pendingOffsets
    for (let i = 0; i < queue.length; i++) {
      const offset = queue.at(i)!
      if (offset >= 0 && !seqs.has(this.base + i)) return offset
    }
    return this.next
  }

  /** pending counts offsets tracked and not yet done. */
  get pending(): number {
    return this.notDone
  }
}
