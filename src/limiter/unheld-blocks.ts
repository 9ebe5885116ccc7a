/** CELLS is the number of cells UnheldBlocks keeps: 32 KB of Float64, whatever the number of keys. */
const CELLS = 4_096

/**
 * UnheldBlocks keeps the Retry-After of keys the table could not hold when they were
 * penalized, so that such a key gets no grant inside it when it comes back to a table
 * with room. It is bounded: a fixed number of cells, each holding the latest end
 * recorded for the keys that hash to it (allocated on the first use: 32 KB). A key is
 * never let through inside its own Retry-After; the price of the bound is that a new key
 * sharing a cell with a blocked one waits until that end too (with k blocks standing,
 * about k / 4096 of new keys). Times are ms since the limiter's epoch.
 */
export class UnheldBlocks {
  private untilMs: Float64Array | undefined
  /** latestMs is the latest end recorded: from then on no cell blocks, and none is looked at. */
  private latestMs = Number.NEGATIVE_INFINITY

  /** block records that `key` gets nothing before `untilMs`. */
  block(key: string, untilMs: number): void {
    this.untilMs ??= new Float64Array(CELLS).fill(Number.NEGATIVE_INFINITY)
    const cell = cellOf(key)
    if (untilMs > this.untilMs[cell]!) this.untilMs[cell] = untilMs
    if (untilMs > this.latestMs) this.latestMs = untilMs
  }

  /** until is the end of the Retry-After `key` may be inside at `nowMs`, or -Infinity when none stands. */
  until(key: string, nowMs: number): number {
    if (!(nowMs < this.latestMs) || this.untilMs === undefined) return Number.NEGATIVE_INFINITY
    return this.untilMs[cellOf(key)]!
  }

  /** shiftTimes moves every end back by `shiftMs`, with the limiter's epoch. */
  shiftTimes(shiftMs: number): void {
    if (this.untilMs === undefined) return
    const untilMs = this.untilMs
    for (let cell = 0; cell < CELLS; cell++) untilMs[cell] = untilMs[cell]! - shiftMs
    this.latestMs -= shiftMs
  }
}

/** cellOf hashes `key` (FNV-1a over its UTF-16 code units) to a cell. */
function cellOf(key: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193)
  return (hash >>> 0) % CELLS
}
