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
  /** offsets tracked, ascending; entries before `head` are done and only await compaction. */
  private offsets: number[] = []
  private done: boolean[] = []
  private head = 0
  /** base is the sequence number of offsets[0]: sequence numbers survive compaction. */
  private base = 0
  private next: number | undefined

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
    this.offsets.push(offset)
    this.done.push(false)
    this.next = offset + 1
    return this.base + this.offsets.length - 1
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
    if (index < this.head || index >= this.offsets.length || this.done[index]) return false
    this.done[index] = true
    while (this.head < this.offsets.length && this.done[this.head]) this.head++
    this.compact()
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
    return this.head < this.offsets.length ? this.offsets[this.head] : this.next
  }

  /** pending counts offsets tracked and not yet done. */
  get pending(): number {
    let count = 0
    for (let i = this.head; i < this.offsets.length; i++) if (!this.done[i]) count++
    return count
  }

  /** compact drops the done prefix once it is at least half the arrays (amortised O(1)). */
  private compact(): void {
    if (this.head < 1024 && this.head < this.offsets.length) return
    if (this.head * 2 < this.offsets.length) return
    this.offsets = this.offsets.slice(this.head)
    this.done = this.done.slice(this.head)
    this.base += this.head
    this.head = 0
  }
}
