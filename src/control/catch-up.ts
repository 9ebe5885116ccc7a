/** PartitionOffsets are one partition's offsets at start, as kafkajs's admin `fetchTopicOffsets` gives them. */
export interface PartitionOffsets {
  readonly partition: number
  readonly low: string
  readonly high: string
}

/**
 * CatchUp tracks a reader of a whole topic against the high-water marks it saw at start,
 * and resolves `ready` once every partition has been read up to its mark. An empty
 * partition (high == low) has nothing to read. Offsets of partitions it was not given,
 * and offsets that go back (a restarted consumer reading from the beginning), change nothing.
 */
export class CatchUp {
  /** ready resolves once caught up; rejects if `abandon` comes first. */
  readonly ready: Promise<void>
  readonly #progress = new Map<number, { targetOffset: bigint; nextOffset: bigint }>()
  readonly #onCaughtUp: (partitions: number) => void
  #caughtUp = false
  #resolve!: () => void
  #reject!: (error: Error) => void

  /** `onCaughtUp` is called once, with the number of partitions, when the marks are reached. */
  constructor(onCaughtUp: (partitions: number) => void) {
    this.#onCaughtUp = onCaughtUp
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
  }

  /** target sets the offsets to reach, one entry per partition; with none at all, the reader is caught up at once. */
  target(offsets: readonly PartitionOffsets[]): void {
    for (const { partition, high, low } of offsets) {
      this.#progress.set(partition, { targetOffset: BigInt(high), nextOffset: BigInt(low) })
    }
    this.#check()
  }

  /** advance records that `offset` of `partition` has been read. */
  advance(partition: number, offset: string): void {
    const at = this.#progress.get(partition)
    if (at === undefined) return
    const next = BigInt(offset) + 1n
    if (next > at.nextOffset) at.nextOffset = next
    this.#check()
  }

  caughtUp(): boolean {
    return this.#caughtUp
  }

  /** abandon rejects `ready` with `error` if it is still pending. */
  abandon(error: Error): void {
    this.#reject(error)
  }

  #check(): void {
    if (this.#caughtUp) return
    for (const at of this.#progress.values()) if (at.nextOffset < at.targetOffset) return
    this.#caughtUp = true
    this.#onCaughtUp(this.#progress.size)
    this.#resolve()
  }
}
