/**
 * CapChange changes in-flight caps: `default` (null: back to the configured default),
 * `overrides` (null clears a merchant's own cap), and `replace` (every merchant's own cap
 * not listed is cleared).
 */
export interface CapChange {
  default?: number | null
  overrides?: Readonly<Record<string, number | null>>
  replace?: boolean
}

/**
 * InFlightTable counts each merchant's jobs in flight and holds them to a cap
 * (`maxInFlight`), so that a merchant whose endpoint hangs cannot take every worker slot.
 * Only merchants with work in flight or a cap of their own are held: memory is bounded by
 * the concurrency and the overrides, not by the number of merchants.
 */
export class InFlightTable {
  private readonly configuredCap: number
  private defaultCap: number
  private readonly caps = new Map<string, number>()
  private readonly counts = new Map<string, number>()
  private total = 0

  /** constructor takes the default cap; Infinity (the default) means no cap. */
  constructor(defaultCap = Number.POSITIVE_INFINITY) {
    this.defaultCap = checkCap(defaultCap)
    this.configuredCap = this.defaultCap
  }

  /**
   * apply makes a set of cap changes in one synchronous step: the default (null: back to
   * the one given to the constructor), the overrides (null clears one), and with
   * `replace` every override not listed is cleared. All values are checked before any
   * is applied, so a bad one (a TypeError) changes nothing. Jobs in flight are never
   * interrupted: a lower cap holds back only jobs not yet started.
   */
  apply(change: CapChange): void {
    const defaultCap =
      change.default === undefined
        ? undefined
        : change.default === null
          ? this.configuredCap
          : checkCap(change.default)
    const overrides = Object.entries(change.overrides ?? {})
    for (const [, cap] of overrides) if (cap !== null) checkCap(cap)
    if (defaultCap !== undefined) this.defaultCap = defaultCap
    if (change.replace) this.caps.clear()
    for (const [key, cap] of overrides) this.setCap(key, cap)
  }

  /** setCap sets `key`'s cap, or the default when `key` is `*`; null clears an override. */
  setCap(key: string, cap: number | null): void {
    if (key === '*') {
      if (cap === null) throw new TypeError('setCap: the default cap (*) cannot be cleared, got null')
      this.defaultCap = checkCap(cap)
      return
    }
    if (cap === null) this.caps.delete(key)
    else this.caps.set(key, checkCap(cap))
  }

  /** capOf is `key`'s cap: its own, or the default. */
  capOf(key: string): number {
    return this.caps.get(key) ?? this.defaultCap
  }

  /** count is how many of `key`'s jobs are in flight. */
  count(key: string): number {
    return this.counts.get(key) ?? 0
  }

  /** size is the number of jobs in flight over every merchant. */
  get size(): number {
    return this.total
  }

  /** merchants is the number of merchants with work in flight. */
  get merchants(): number {
    return this.counts.size
  }

  /** tryStart counts one more job in flight for `key` if it is below its cap, and says whether it did. */
  tryStart(key: string): boolean {
    const count = this.counts.get(key) ?? 0
    if (count >= this.capOf(key)) return false
    this.counts.set(key, count + 1)
    this.total++
    return true
  }

  /**
   * finish counts one of `key`'s jobs done, however it ended (returned, threw, timed out).
   * Each tryStart that returned true must be matched by exactly one finish; an unmatched
   * finish is a bug in the caller and throws.
   */
  finish(key: string): void {
    const count = this.counts.get(key)
    if (count === undefined)
      throw new RangeError(`InFlightTable.finish: ${JSON.stringify(key)} has no job in flight`)
    if (count === 1) this.counts.delete(key)
    else this.counts.set(key, count - 1)
    this.total--
  }

  /** overrides lists the merchants with a cap of their own. */
  overrides(): Record<string, number> {
    return Object.fromEntries(this.caps)
  }

  /** defaultCapValue is the cap of merchants without their own. */
  get defaultCapValue(): number {
    return this.defaultCap
  }
}

function checkCap(cap: number): number {
  if (!(cap >= 1) || (!Number.isInteger(cap) && cap !== Number.POSITIVE_INFINITY)) {
    throw new TypeError(`maxInFlight: expected a whole number >= 1 or Infinity, got ${cap}`)
  }
  return cap
}
