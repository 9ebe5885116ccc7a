import { parseRate, type Rate, type RateInput } from './rate.js'
import { checkWeight } from './shares.js'

/**
 * Inheritance says what a bucket keeps when its rate changes. `proportional` (the
 * default) keeps the same fraction of the capacity; `as-is` keeps the token count,
 * capped at the new capacity; `reset` starts full. In every case a bucket in debt
 * (reservations handed out ahead of time) keeps its debt: the reservations stand, and
 * new work is scheduled after them at the new rate. A Retry-After stands through all
 * three: it is a time, not a number of tokens.
 */
export type Inheritance = 'proportional' | 'as-is' | 'reset'

/**
 * RateChange sets several rates in one synchronous step. `overrides` maps a key to its
 * rate, or to null to clear its override. `replace` makes the change a snapshot: every
 * override it does not list is cleared. A `version` at or below the last applied one
 * makes the whole change stale. `weights` sets children's weights in their parents' fair
 * shares (null: back to 1), in the same step; with `replace`, every weight not listed is
 * cleared too.
 */
export interface RateChange {
  version?: number
  default?: RateInput
  overrides?: Readonly<Record<string, RateInput | null>>
  replace?: boolean
  inheritance?: Inheritance
  weights?: Readonly<Record<string, number | null>>
}

/** ApplyResult tells whether a RateChange took effect. */
export type ApplyResult = { applied: true } | { applied: false; reason: 'stale-version' }

/** CheckedChange is a RateChange with every rate parsed. */
export interface CheckedChange {
  defaultRate: Rate | undefined
  overrides: Map<string, Rate | null>
  weights: Map<string, number | null>
}

const INHERITANCES: readonly Inheritance[] = ['proportional', 'as-is', 'reset']

/** checkChange parses every rate of `change`, or throws a TypeError naming the bad one; nothing is applied. */
export function checkChange(change: RateChange, maxKeyLength: number): CheckedChange {
  if (change === null || typeof change !== 'object') {
    throw new TypeError(`apply: expected a rate change object, got ${String(change)}`)
  }
  if (change.version !== undefined && !Number.isFinite(change.version)) {
    throw new TypeError(`apply: expected a finite version, got ${String(change.version)}`)
  }
  if (change.inheritance !== undefined && !INHERITANCES.includes(change.inheritance)) {
    throw new TypeError(
      `apply: expected inheritance 'proportional', 'as-is' or 'reset', got ${JSON.stringify(change.inheritance)}`,
    )
  }
  const defaultRate = change.default === undefined ? undefined : parseRate(change.default)
  const overrides = new Map<string, Rate | null>()
  for (const [key, rate] of Object.entries(change.overrides ?? {})) {
    if (key.length === 0 || key.length > maxKeyLength || key === '*') {
      throw new TypeError(
        `apply: expected override keys of 1 to ${maxKeyLength} characters other than '*', got ${describeKey(key)}`,
      )
    }
    overrides.set(key, rate === null ? null : parseRate(rate))
  }
  const weights = new Map<string, number | null>()
  for (const [key, weight] of Object.entries(change.weights ?? {})) {
    if (key.length === 0 || key.length > maxKeyLength || key === '*') {
      throw new TypeError(
        `apply: expected weight keys of 1 to ${maxKeyLength} characters other than '*', got ${describeKey(key)}`,
      )
    }
    weights.set(key, weight === null ? null : checkWeight(weight, key))
  }
  return { defaultRate, overrides, weights }
}

export function describeKey(key: unknown): string {
  if (typeof key !== 'string') return typeof key
  if (key.length === 0) return 'an empty key'
  return `a key of ${key.length} characters`
}

export function checkNonNegative(value: number, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new TypeError(`${what}: expected a finite number >= 0, got ${String(value)}`)
  }
  return value
}

export function checkPositiveInteger(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new TypeError(`${what}: expected a whole number >= 1, got ${String(value)}`)
  }
  return value
}
