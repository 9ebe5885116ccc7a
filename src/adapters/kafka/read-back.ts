/**
 * ReadBackGate holds messages read back from a parking topic until their source partition
 * has been read past the offset each was parked from: only then are the merchant's older
 * messages known, done or held in its source lane, which the parking lane waits behind (see
 * DispatcherOptions.behind). In the steady state a parked message was routed from a source
 * partition already read past it, and nothing waits here. After a takeover (a restart, a
 * rebalance) the parking partition can be read first, while the source partition's batches
 * wait for its parked merchants to load: without the gate, a parked message found no source
 * lane to wait behind and ran before the older messages of its merchant (the flake of
 * consumer-parking-crash.int.test.ts). Held messages stay counted in their partition's bounds.
 */
export class ReadBackGate<I> {
  /** held: per source partition id, the messages waiting, in the order they were read. */
  private readonly held = new Map<string, I[]>()

  /** holding says whether messages of source partition `sourceId` wait: a newer one waits behind them. */
  holding(sourceId: string): boolean {
    return this.held.has(sourceId)
  }

  hold(sourceId: string, item: I): void {
    const waiting = this.held.get(sourceId)
    if (waiting === undefined) this.held.set(sourceId, [item])
    else waiting.push(item)
  }

  /**
   * release hands to `push`, in the order they were read, the messages of `sourceId` that
   * `reached` lets go (their source partition was read past their origin), and keeps the
   * others. `reached` grows with the origin offset, so a merchant's messages leave in order.
   */
  release(sourceId: string, reached: (item: I) => boolean, push: (item: I) => void): void {
    const waiting = this.held.get(sourceId)
    if (waiting === undefined) return
    const released: I[] = []
    const still: I[] = []
    for (const item of waiting) (reached(item) ? released : still).push(item)
    if (still.length === 0) this.held.delete(sourceId)
    else this.held.set(sourceId, still)
    for (const item of released) push(item)
  }

  /** drop forgets the messages waiting for `sourceId` (the partition is no longer this consumer's). */
  drop(sourceId: string): void {
    this.held.delete(sourceId)
  }
}
