/** BackoffOptions shape backoffMs. */
export interface BackoffOptions {
  /** baseMs is the delay after the first failed attempt, before jitter. Default 1000. */
  baseMs?: number
  /** maxMs caps the delay, before jitter. Default 300000 (5 min). */
  maxMs?: number
  /**
   * jitter is the fraction of the delay that is random, from 0 (none) to 1 ("full jitter":
   * anywhere from 0 to the delay). Default 0.5: between half the delay and the delay.
   */
  jitter?: number
  /** random returns a number in [0, 1). Default Math.random; tests pass a fixed one. */
  random?: () => number
}

/**
 * backoffMs is the wait before retrying after failed attempt number `attempt` (1-based):
 * `min(maxMs, baseMs × 2^(attempt-1))`, of which the `jitter` fraction is random, so retries
 * of many jobs that failed together spread out. Pure but for `random`; with `jitter: 0` it is
 * the plain doubling used for reconnects and restarts. The one backoff of the project: it lives in
 * the limiter because that is the folder every other one may import.
 */
export function backoffMs(attempt: number, options: BackoffOptions = {}): number {
  if (!Number.isInteger(attempt) || attempt < 1) {
    throw new TypeError(`backoffMs: expected attempt to be an integer >= 1, got ${String(attempt)}`)
  }
  const baseMs = options.baseMs ?? 1_000
  const maxMs = options.maxMs ?? 300_000
  const jitter = options.jitter ?? 0.5
  const random = options.random ?? Math.random
  if (!(Number.isFinite(baseMs) && baseMs >= 0)) {
    throw new TypeError(`backoffMs: expected baseMs to be a finite number >= 0, got ${String(baseMs)}`)
  }
  if (!(Number.isFinite(maxMs) && maxMs >= 0)) {
    throw new TypeError(`backoffMs: expected maxMs to be a finite number >= 0, got ${String(maxMs)}`)
  }
  if (!(jitter >= 0 && jitter <= 1)) {
    throw new TypeError(`backoffMs: expected jitter to be between 0 and 1, got ${String(jitter)}`)
  }
  // 2^(attempt-1) overflows to Infinity for large attempts; min() then gives maxMs (0 × Infinity would be NaN).
  const delayMs = baseMs === 0 ? 0 : Math.min(maxMs, baseMs * 2 ** (attempt - 1))
  return Math.round(delayMs * (1 - jitter * random()))
}
