import type { BucketRate } from './bucket-rates.js'

/** PenaltyOptions tune the additive-increase, multiplicative-decrease response to 429s. */
export interface PenaltyOptions {
  /** decreaseFactor multiplies the rate on each penalty. Default 0.5. */
  decreaseFactor?: number
  /** minFactor is the lowest fraction of the configured rate a penalty can reach. Default 0.05. */
  minFactor?: number
  /** increaseStep is added to the factor every `increaseEveryMs` until it is back at 1. Default 0.1. */
  increaseStep?: number
  /** increaseEveryMs is the recovery step, counted from the end of the Retry-After. Default 10 000. */
  increaseEveryMs?: number
  /** decreaseCooldownMs: penalties closer together than this lower the rate once. Default 1 000. */
  decreaseCooldownMs?: number
}

export const DEFAULT_PENALTY: Required<PenaltyOptions> = {
  decreaseFactor: 0.5,
  minFactor: 0.05,
  increaseStep: 0.1,
  increaseEveryMs: 10_000,
  decreaseCooldownMs: 1_000,
}

/**
 * Penalties hold the AIMD arithmetic of a penalized rate: the factor it lowers, the
 * Retry-After it records as a time, the steps it climbs back by. It changes the factor
 * and the times of one BucketRate; the limiter re-derives the rate and converts the
 * buckets charged at it.
 */
export class Penalties {
  readonly options: Required<PenaltyOptions>

  constructor(options: PenaltyOptions | undefined) {
    this.options = checkPenalty({ ...DEFAULT_PENALTY, ...options })
  }

  /**
   * lower records a 429 at `nowMs`: the rate is blocked until `nowMs + retryAfterMs` (a
   * later block stands), recovery starts one step after the block ends, and the factor
   * drops unless it already dropped within the cooldown. It returns whether the factor
   * changed.
   */
  lower(rate: BucketRate, nowMs: number, retryAfterMs: number): boolean {
    const { decreaseCooldownMs, decreaseFactor, minFactor, increaseEveryMs } = this.options
    rate.blockedUntilMs = Math.max(rate.blockedUntilMs, nowMs + retryAfterMs)
    rate.nextIncreaseAtMs = rate.blockedUntilMs + increaseEveryMs
    if (nowMs - rate.lastDecreaseAtMs < decreaseCooldownMs) return false
    rate.penaltyFactor = Math.max(minFactor, rate.penaltyFactor * decreaseFactor)
    rate.lastDecreaseAtMs = nowMs
    return true
  }

  /**
   * recoveredAtMs is when `rate`'s lowered factor is back to 1 by its increases (now or
   * earlier for a rate not lowered). Until then its key must not be evicted: coming back,
   * it would get the default bucket, higher than the lowered one.
   */
  recoveredAtMs(rate: BucketRate): number {
    if (rate.penaltyFactor === 1) return Number.NEGATIVE_INFINITY
    const steps = Math.ceil((1 - rate.penaltyFactor) / this.options.increaseStep)
    return rate.nextIncreaseAtMs + (steps - 1) * this.options.increaseEveryMs
  }

  /** raise applies the additive increases `rate` has earned by `nowMs`, and returns whether it had any. */
  raise(rate: BucketRate, nowMs: number): boolean {
    if (rate.penaltyFactor === 1 || nowMs < rate.nextIncreaseAtMs) return false
    const { increaseEveryMs, increaseStep } = this.options
    const steps = 1 + Math.floor((nowMs - rate.nextIncreaseAtMs) / increaseEveryMs)
    rate.penaltyFactor = Math.min(1, rate.penaltyFactor + steps * increaseStep)
    rate.nextIncreaseAtMs += steps * increaseEveryMs
    return true
  }
}

function checkPenalty(penalty: Required<PenaltyOptions>): Required<PenaltyOptions> {
  const { decreaseFactor, minFactor, increaseStep, increaseEveryMs, decreaseCooldownMs } = penalty
  if (!(decreaseFactor > 0 && decreaseFactor < 1)) {
    throw new TypeError(`penalty.decreaseFactor: expected a number between 0 and 1, got ${decreaseFactor}`)
  }
  if (!(minFactor > 0 && minFactor <= 1)) {
    throw new TypeError(`penalty.minFactor: expected a number in (0, 1], got ${minFactor}`)
  }
  if (!(increaseStep > 0 && increaseStep <= 1)) {
    throw new TypeError(`penalty.increaseStep: expected a number in (0, 1], got ${increaseStep}`)
  }
  if (!Number.isInteger(increaseEveryMs) || increaseEveryMs < 1) {
    throw new TypeError(
      `penalty.increaseEveryMs: expected a whole number >= 1, got ${String(increaseEveryMs)}`,
    )
  }
  if (
    typeof decreaseCooldownMs !== 'number' ||
    !Number.isFinite(decreaseCooldownMs) ||
    decreaseCooldownMs < 0
  ) {
    throw new TypeError(
      `penalty.decreaseCooldownMs: expected a finite number >= 0, got ${String(decreaseCooldownMs)}`,
    )
  }
  return penalty
}
