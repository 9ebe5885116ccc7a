/**
 * Rate is `limit` units of work per `intervalMs`, with a bucket that holds `burst` units:
 * its first window. `extraWindows` are its further windows, absent for a rate of one
 * (the common case): work conforms only when it conforms to every window.
 */
export interface Rate {
  readonly limit: number
  readonly intervalMs: number
  readonly burst: number
  readonly extraWindows?: readonly RateWindow[]
}

/** RateWindow is one window of a Rate of several. */
export interface RateWindow {
  readonly limit: number
  readonly intervalMs: number
  readonly burst: number
}

/** RateObject is a window written as an object; `burst` defaults to `limit`. */
export type RateObject = { limit: number; intervalMs: number; burst?: number }

/**
 * RateInput is what callers may write for a rate: `'1000/min'`, `'50/s burst 10'`,
 * `'100/10s'`, several windows joined by commas (`'20/s burst 40, 50000/day'`), an object
 * whose `burst` defaults to `limit`, or an array of such objects (one per window).
 */
export type RateInput = string | RateObject | readonly RateObject[]

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  sec: 1_000,
  second: 1_000,
  seconds: 1_000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  minutes: 60_000,
  h: 3_600_000,
  hr: 3_600_000,
  hour: 3_600_000,
  hours: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
  days: 86_400_000,
}

const RATE_PATTERN =
  /^\s*(\d+(?:\.\d+)?)\s*\/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*(?:burst\s+(\d+(?:\.\d+)?))?\s*$/i

/**
 * parseRate reads a RateInput. `N/unit` with unit one of ms, s, sec, second, m, min,
 * minute, h, hr, hour, d, day (plurals too), optionally `N/<k><unit>` (`100/10s`) and
 * `burst B`. The burst defaults to the limit: the bucket holds one interval's worth,
 * and never less than one unit. Up to MAX_WINDOWS windows, joined by commas or as an
 * array, no two of the same interval (only the tighter would ever bind). Throws a
 * TypeError quoting the input when it is not a rate, or when a window is outside the
 * bounds below (limit and interval above zero, an interval of at most MAX_INTERVAL_MS, a
 * rate from MIN_RATE_PER_SEC to MAX_RATE_PER_SEC, a burst from 1 to MAX_BURST); the
 * message states the bound, and with several windows names the one that is wrong.
 */
export function parseRate(input: RateInput): Rate {
  const windows: readonly unknown[] =
    typeof input === 'string' ? input.split(',') : Array.isArray(input) ? input : [input]
  if (windows.length === 1) return parseWindow(windows[0])
  if (windows.length === 0 || windows.length > MAX_WINDOWS) {
    throw new TypeError(
      `parseRate: expected 1 to ${MAX_WINDOWS} windows, got ${windows.length} in ${quote(input)}`,
    )
  }
  const rates = windows.map((window, i) => {
    try {
      return parseWindow(window)
    } catch (error) {
      const reason = (error as Error).message.replace(/^parseRate: /, '')
      throw new TypeError(`parseRate: window ${i + 1} of ${windows.length}: ${reason}`)
    }
  })
  for (let i = 1; i < rates.length; i++) {
    const same = rates.findIndex((rate) => rate.intervalMs === rates[i]!.intervalMs)
    if (same < i) {
      throw new TypeError(
        `parseRate: window ${i + 1} of ${rates.length} repeats the ${rates[i]!.intervalMs} ms interval of window ${same + 1}, in ${quote(input)}`,
      )
    }
  }
  return { ...rates[0]!, extraWindows: rates.slice(1) }
}

/** windowsOf lists a rate's windows, the first one first. */
export function windowsOf(rate: Rate): readonly RateWindow[] {
  const first = { limit: rate.limit, intervalMs: rate.intervalMs, burst: rate.burst }
  return rate.extraWindows === undefined ? [first] : [first, ...rate.extraWindows]
}

function parseWindow(input: unknown): Rate {
  if (typeof input === 'string') return parseRateString(input)
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new TypeError(
      `parseRate: expected a string like '1000/min' or { limit, intervalMs }, got ${quote(input)}`,
    )
  }
  const window = input as Partial<RateObject>
  return checkRate(window.limit, window.intervalMs, window.burst, input)
}

function parseRateString(input: string): Rate {
  const match = RATE_PATTERN.exec(input)
  const unitMs = match ? UNIT_MS[match[3]!.toLowerCase()] : undefined
  if (!match || unitMs === undefined) {
    throw new TypeError(`parseRate: expected a rate like '1000/min' or '50/s burst 10', got ${quote(input)}`)
  }
  const count = match[2] === undefined ? 1 : Number(match[2])
  const burst = match[4] === undefined ? undefined : Number(match[4])
  return checkRate(Number(match[1]), count * unitMs, burst, input)
}

/** MAX_INTERVAL_MS is the longest interval a rate may have: 366 days, in ms. */
export const MAX_INTERVAL_MS = 366 * 86_400_000

/**
 * MIN_RATE_PER_SEC is the slowest rate: 0.001 units per day, one unit per 1,000 days
 * (the slowest the control topic's bounds let through). At 1e-305 per day one unit's
 * interval is Infinity.
 */
export const MIN_RATE_PER_SEC = 1 / 86_400_000

/**
 * MAX_RATE_PER_SEC is the fastest rate: 1e9 units per second, one every microsecond of
 * a millisecond clock. Faster, one unit's interval drowns in the rounding of the time.
 */
export const MAX_RATE_PER_SEC = 1e9

/** MAX_BURST is the largest bucket a rate may have, in units. */
export const MAX_BURST = 1e9

function checkRate(limit: unknown, intervalMs: unknown, burst: unknown, input: unknown): Rate {
  if (typeof limit !== 'number' || !Number.isFinite(limit) || limit <= 0) {
    throw new TypeError(`parseRate: expected a finite limit above 0, got ${quote(input)}`)
  }
  if (typeof intervalMs !== 'number' || !Number.isFinite(intervalMs) || intervalMs <= 0) {
    throw new TypeError(`parseRate: expected a finite interval above 0 ms, got ${quote(input)}`)
  }
  if (intervalMs > MAX_INTERVAL_MS) {
    throw new TypeError(
      `parseRate: expected an interval of at most ${MAX_INTERVAL_MS} ms (366 days), got ${quote(input)}`,
    )
  }
  const perSec = (limit * 1_000) / intervalMs
  if (!(perSec >= MIN_RATE_PER_SEC && perSec <= MAX_RATE_PER_SEC)) {
    throw new TypeError(
      `parseRate: expected a rate from 0.001 per day to ${MAX_RATE_PER_SEC} per second, got ${quote(input)}`,
    )
  }
  const bucket = burst ?? Math.max(1, limit)
  if (typeof bucket !== 'number' || !Number.isFinite(bucket) || bucket < 1 || bucket > MAX_BURST) {
    throw new TypeError(
      `parseRate: expected a burst from 1 to ${MAX_BURST}${burst === undefined ? ' (the burst defaults to the limit)' : ''}, got ${quote(input)}`,
    )
  }
  return { limit, intervalMs, burst: bucket }
}

const UNIT_NAMES: ReadonlyArray<[number, string]> = [
  [86_400_000, 'day'],
  [3_600_000, 'h'],
  [60_000, 'min'],
  [1_000, 's'],
]

/** formatRate writes a Rate the way parseRate reads it, windows joined by ', ', omitting a burst equal to the default. */
export function formatRate(rate: Rate): string {
  return windowsOf(rate).map(formatWindow).join(', ')
}

function formatWindow(rate: RateWindow): string {
  const unit = UNIT_NAMES.find(([ms]) => rate.intervalMs === ms)
  const per = unit ? unit[1] : `${rate.intervalMs}ms`
  const head = `${round(rate.limit)}/${per}`
  return rate.burst === Math.max(1, rate.limit) ? head : `${head} burst ${round(rate.burst)}`
}

/** MAX_WINDOWS is the most windows one rate may have (per second, per minute, per hour, per day). */
export const MAX_WINDOWS = 4

/** ratePerSec is a rate's steady throughput in units per second: its slowest window's. */
export function ratePerSec(rate: Rate): number {
  return Math.min(...windowsOf(rate).map((window) => (window.limit * 1_000) / window.intervalMs))
}

function round(n: number): string {
  return Number.isInteger(n) ? String(n) : String(Number(n.toFixed(6)))
}

function quote(input: unknown): string {
  if (typeof input === 'string') return JSON.stringify(input.length > 80 ? `${input.slice(0, 80)}…` : input)
  try {
    return JSON.stringify(input) ?? String(input)
  } catch {
    return String(input)
  }
}
