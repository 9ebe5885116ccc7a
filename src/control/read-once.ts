/**
 * ReadOnce remembers, per partition, the next offset not yet handled, so that a record read
 * again in the same process is passed over. The control source never commits, so each new
 * assignment (a rebalance, a restarted kafkajs consumer) starts again at the beginning:
 * handling those records again would change no rate (versions order them) but would count
 * each twice and log and dead-letter a bad one again. Offsets only grow within a topic's
 * life; a control topic deleted and recreated under running workers starts again at 0, and
 * its records below the offsets already handled are passed over until the workers restart.
 */
export class ReadOnce {
  readonly #nextOffset = new Map<number, bigint>()
  #reread = 0

  /** first says whether `offset` of `partition` is read for the first time, and records it. */
  first(partition: number, offset: string): boolean {
    const at = BigInt(offset)
    if (at < (this.#nextOffset.get(partition) ?? 0n)) {
      this.#reread++
      return false
    }
    this.#nextOffset.set(partition, at + 1n)
    return true
  }

  /** reread counts the records passed over as read before. */
  reread(): number {
    return this.#reread
  }
}
