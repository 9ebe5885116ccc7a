/** WindowCounts are the fewest and most starts found in any window of one length, and where. */
export interface WindowCounts {
  fewest: number
  most: number
  /** fewestAtMs and mostAtMs are the left edges of a window holding the fewest and the most. */
  fewestAtMs: number
  mostAtMs: number
}

/**
 * windowCounts is the fewest and most of `startsMs` (sorted) in any window [t, t + windowMs)
 * inside [fromMs, toMs]. It is exact: a count changes only where an edge crosses a start, so
 * it tries the windows whose left edge is at a start or just past one, and at fromMs.
 */
export function windowCounts(
  startsMs: number[],
  windowMs: number,
  fromMs: number,
  toMs: number,
): WindowCounts {
  const result: WindowCounts = {
    fewest: Number.POSITIVE_INFINITY,
    most: 0,
    fewestAtMs: fromMs,
    mostAtMs: fromMs,
  }
  const consider = (leftMs: number) => {
    if (leftMs < fromMs || leftMs + windowMs > toMs) return
    const count = countBetween(startsMs, leftMs, leftMs + windowMs)
    if (count > result.most) [result.most, result.mostAtMs] = [count, leftMs]
    if (count < result.fewest) [result.fewest, result.fewestAtMs] = [count, leftMs]
  }
  consider(fromMs)
  consider(toMs - windowMs)
  for (const atMs of startsMs) {
    consider(atMs)
    // Just past a start: the window loses it, and gains nothing until the next start.
    consider(atMs + 1e-6)
  }
  return result
}

/** countBetween is the number of `sortedMs` in [fromMs, toMs). */
export function countBetween(sortedMs: number[], fromMs: number, toMs: number): number {
  return lowerBound(sortedMs, toMs) - lowerBound(sortedMs, fromMs)
}

function lowerBound(sorted: number[], value: number): number {
  let lo = 0
  let hi = sorted.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (sorted[mid]! < value) lo = mid + 1
    else hi = mid
  }
  return lo
}

/**
 * watchStalls records the event loop's stalls longer than `thresholdMs` (from a 5 ms timer
 * that fired late) until the returned function is called, which gives them.
 */
export function watchStalls(thresholdMs = 30): () => { atMs: number; lateMs: number }[] {
  const stalls: { atMs: number; lateMs: number }[] = []
  let tickMs = performance.now()
  const ticker = setInterval(() => {
    const nowMs = performance.now()
    if (nowMs - tickMs - 5 > thresholdMs) stalls.push({ atMs: tickMs, lateMs: nowMs - tickMs - 5 })
    tickMs = nowMs
  }, 5)
  return () => {
    clearInterval(ticker)
    return stalls
  }
}
