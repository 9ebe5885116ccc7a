import type { Clock, SkewEvent } from './clock.js'
import type { PenaltyOptions } from './penalties.js'
import type { Rate, RateInput } from './rate.js'
import type { FairShareOptions } from './shares.js'

/**
 * KeyedLimiterOptions configure a KeyedLimiter. The fair-share options (shareWindowMs,
 * shareLookaheadMs, maxShareEntries) are described on FairShareOptions.
 */
export interface KeyedLimiterOptions extends FairShareOptions {
  /** rate is the default rate, for every key without an override. */
  rate: RateInput
  /**
   * clock gives the time in ms. Default: monotonicClock. A clock that can step should
   * carry a monotonic witness (Clock.witness, as wallClock does), so that no forward
   * step of it counts as elapsed time.
   */
  clock?: Clock
  /** clockSkewToleranceMs: a backward clock step up to this is absorbed silently. Default 100. */
  clockSkewToleranceMs?: number
  /** maxKeys bounds the keys held; only full buckets are evicted. Default 1 000 000. */
  maxKeys?: number
  /**
   * maxOverrides bounds the keys with a rate override of their own (setRate, apply),
   * held or not: a change that would pass it throws a RangeError and changes nothing.
   * Each costs about 260 bytes beside its key. Penalties do not count. Default 100 000.
   */
  maxOverrides?: number
  /** horizonMs is the furthest ahead a reservation commits tokens. Default 60 000. */
  horizonMs?: number
  /** maxKeyLength bounds a key, in UTF-16 code units. Default 128. */
  maxKeyLength?: number
  /** evictionScan is how many held keys placing a new one may inspect for a full bucket. Default 64. */
  evictionScan?: number
  penalty?: PenaltyOptions
  /** onClockSkew is told of each backward clock step, once. */
  onClockSkew?: (event: SkewEvent) => void
}

/** KeyInspection is a key's bucket at one instant. */
export interface KeyInspection {
  /**
   * tokens in the bucket; negative when reservations are handed out ahead of time. For a
   * rate of several windows, the fewest any window holds (what a decision could take now).
   */
  tokens: number
  /** capacity is the bucket's size under the rate in force (the smallest window's, for several). */
  capacity: number
  /** rate in force: the configured rate scaled by the instance share and any penalty. */
  rate: Rate
  /** override is true when the key has a rate of its own. */
  override: boolean
  /** penaltyFactor is 1, or the fraction of the rate left after 429s. */
  penaltyFactor: number
  /** waitMs is how long until one unit can be granted (by every window), in ms. */
  waitMs: number
}

/** LimiterStats are counters for metrics. */
export interface LimiterStats {
  keys: number
  maxKeys: number
  evictions: number
  /** tableFull counts new keys refused because no full bucket could be evicted. */
  tableFull: number
  skewTolerated: number
  skewRebased: number
  overrides: number
  penalized: number
  /** penalties counts penalize calls. */
  penalties: number
  rateChanges: number
  staleChanges: number
  /**
   * penaltiesDropped counts penalties for keys the limiter could not hold (the table
   * full of buckets in use, and no rate of their own): their rate decrease is dropped,
   * their Retry-After kept in a fixed 32 KB of cells, so the key, placed later, gets
   * nothing before its end (nor does a new key sharing its cell).
   */
  penaltiesDropped: number
  /** skewCorrected counts forward clock jumps taken as the correction of a rebase (no time added). */
  skewCorrected: number
  /** shareDeferrals counts asks deferred with 'parent-share' (a child past its share of a binding parent). */
  shareDeferrals: number
  /** parentsTracked is the number of parents with children in their fair-share state. */
  parentsTracked: number
}

/**
 * ExplainReason says which limit binds: `rate` a key's first window, `window` a further
 * window of it (a day's quota), `retry-after` a Retry-After, `parent-share` the child's
 * fair share of a binding parent.
 */
export type ExplainReason = 'rate' | 'window' | 'retry-after' | 'parent-share'

/** Explanation says how long until one unit could be granted to a list of keys, and which limit binds. */
export interface Explanation {
  waitMs: number
  bindingKey: string
  reason: ExplainReason
  /** windowIntervalMs is the binding window's interval, for reason `window`. */
  windowIntervalMs?: number
}

/** ConfiguredRates are the rates as set, before the instance share and penalties. */
export interface ConfiguredRates {
  default: Rate
  overrides: Record<string, Rate>
  version: number | undefined
  share: number
}
