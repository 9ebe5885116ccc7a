import { z } from 'zod'
import {
  checkMerchantKey,
  type Inheritance,
  MAX_MERCHANT_KEY_LENGTH,
  MAX_WINDOWS,
  parseRate,
  type Rate,
  type RateWindow,
  windowsOf,
} from '../limiter/index.js'

/**
 * ControlLimits bounds what a control message may say. A message outside them is
 * rejected whole; the rates in force stay as they were.
 */
export interface ControlLimits {
  /** maxLimit is the largest `limit` a rate may have, in units per interval. */
  readonly maxLimit: number
  /** minIntervalMs and maxIntervalMs bound a rate's interval, in ms. */
  readonly minIntervalMs: number
  readonly maxIntervalMs: number
  /** maxBurst is the largest bucket a rate may have, in units. */
  readonly maxBurst: number
  /** maxMessageBytes caps the raw message (a snapshot is the big one), in bytes. */
  readonly maxMessageBytes: number
  /** maxOverrides caps the number of merchants one snapshot may list. */
  readonly maxOverrides: number
  /** maxMerchantKeyLength bounds a merchant key, in UTF-16 code units. */
  readonly maxMerchantKeyLength: number
  /** maxInFlight is the largest in-flight cap a message may set, in jobs. */
  readonly maxInFlight: number
  /** minWeight and maxWeight bound a child key's weight, its share of a parent beside its backlogged siblings. */
  readonly minWeight: number
  readonly maxWeight: number
}

/**
 * DEFAULT_CONTROL_LIMITS: up to a million units per interval, intervals from 1 ms to one
 * day, bursts up to a million, 1 MiB messages (Kafka's default `max.message.bytes` is
 * about the same), 100,000 overrides per snapshot (and as many weights), weights from
 * 0.001 to 1000.
 */
export const DEFAULT_CONTROL_LIMITS: ControlLimits = Object.freeze({
  maxLimit: 1_000_000,
  minIntervalMs: 1,
  maxIntervalMs: 86_400_000,
  maxBurst: 1_000_000,
  maxMessageBytes: 1_048_576,
  maxOverrides: 100_000,
  maxMerchantKeyLength: MAX_MERCHANT_KEY_LENGTH,
  maxInFlight: 1_000_000,
  minWeight: 0.001,
  maxWeight: 1_000,
})

/** DEFAULT_RATE_KEY is the `merchant` (and Kafka message key) that names the default rate. */
export const DEFAULT_RATE_KEY = '*'

/**
 * SNAPSHOT_KEY is the Kafka message key of snapshots. It holds a character no merchant
 * key may have, so that compaction keeps the latest snapshot next to the latest message
 * of every merchant.
 */
export const SNAPSHOT_KEY = '*snapshot'

/** messageKeyOf is the Kafka message key a change is published under: the merchant, `*` or SNAPSHOT_KEY. */
export function messageKeyOf(change: ControlChange): string {
  return change.type === 'snapshot' ? SNAPSHOT_KEY : change.merchant
}

/**
 * SetChange sets one merchant's override, or the default rate when `merchant` is `*`,
 * with its in-flight cap: `maxInFlight` absent means no cap of its own (the merchant
 * falls back to the default cap; the default to the configured one). `weight` is the
 * key's share of its parent beside its backlogged siblings (layered keys); absent: 1.
 * The default (`*`) takes no weight.
 */
export interface SetChange {
  readonly type: 'set'
  readonly merchant: string
  readonly rate: Rate
  readonly maxInFlight?: number
  readonly weight?: number
  readonly version: number
  readonly inheritance?: Inheritance
}

/** ClearChange removes a merchant's override: the merchant falls back to the default rate. */
export interface ClearChange {
  readonly type: 'clear'
  readonly merchant: string
  readonly version: number
  readonly inheritance?: Inheritance
}

/**
 * SnapshotChange replaces every rate at once: the default, and the overrides listed;
 * a merchant not listed has no override. Its version is every merchant's floor.
 * `maxInFlight` is the default in-flight cap (absent: the configured one); `caps` holds
 * the overrides written `{ "rate": ..., "maxInFlight": n }`. `weights` are the keys'
 * weights (a key may have one without a rate of its own); a key not listed has weight 1.
 */
export interface SnapshotChange {
  readonly type: 'snapshot'
  readonly version: number
  readonly default: Rate
  readonly overrides: ReadonlyMap<string, Rate>
  readonly maxInFlight?: number
  readonly caps?: ReadonlyMap<string, number>
  readonly weights?: ReadonlyMap<string, number>
  readonly inheritance?: Inheritance
}

/** ControlChange is one parsed, validated control message. */
export type ControlChange = SetChange | ClearChange | SnapshotChange

/** ControlParseFailure says which stage refused a message. */
export type ControlParseFailure = 'too-large' | 'invalid-json' | 'invalid-message'

/** ControlParseResult is the outcome of parseControlMessage. */
export type ControlParseResult =
  | { ok: true; change: ControlChange }
  | { ok: false; reason: ControlParseFailure; error: string }

/**
 * parseControlMessage reads one control message (JSON, UTF-8) and checks it against
 * `limits` (DEFAULT_CONTROL_LIMITS for any bound not given). It never throws on input:
 * a message that is too large, not JSON, of an unknown type, with a missing, extra or
 * out-of-range field is refused with an `error` naming the field and what was wrong,
 * e.g. `rate.limit: expected a number > 0 and <= 1000000, got -5`.
 */
export function parseControlMessage(
  input: Buffer | string,
  limits?: Partial<ControlLimits>,
): ControlParseResult {
  const bounds = resolveLimits(limits)
  const bytes = typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.byteLength
  if (bytes > bounds.maxMessageBytes) {
    return {
      ok: false,
      reason: 'too-large',
      error: `message: ${bytes} bytes, above the ${bounds.maxMessageBytes} allowed`,
    }
  }
  let json: unknown
  try {
    json = JSON.parse(typeof input === 'string' ? input : input.toString('utf8'))
  } catch (error) {
    return { ok: false, reason: 'invalid-json', error: `message: not JSON (${(error as Error).message})` }
  }
  const parsed = schemaFor(bounds).safeParse(json, { error: describeIssue })
  if (!parsed.success)
    return { ok: false, reason: 'invalid-message', error: formatIssues(parsed.error.issues) }
  return { ok: true, change: parsed.data }
}

/**
 * checkRateValue validates one rate as a control message writes it (a string, an object,
 * or an array of objects, one per window) against `limits`, every window of it.
 */
export function checkRateValue(
  value: unknown,
  limits: ControlLimits,
): { ok: true; rate: Rate } | { ok: false; field?: string; error: string } {
  if (value === undefined) return { ok: false, error: 'missing' }
  let windows: readonly RateWindow[]
  if (typeof value === 'string') {
    try {
      windows = windowsOf(parseRate(value))
    } catch (error) {
      return { ok: false, error: (error as Error).message.replace(/^parseRate: /, '') }
    }
  } else if (isPlainObject(value)) {
    const window = readRateObject(value)
    if (!window.ok) return window
    windows = [window.rate]
  } else if (Array.isArray(value) && value.length > 0 && value.length <= MAX_WINDOWS) {
    const read: RateWindow[] = []
    for (const [i, element] of value.entries()) {
      const window = isPlainObject(element)
        ? readRateObject(element)
        : {
            ok: false as const,
            field: undefined,
            error: `expected a window { limit, intervalMs, burst }, got ${describeValue(element)}`,
          }
      if (!window.ok)
        return {
          ok: false,
          field: window.field === undefined ? String(i) : `${i}.${window.field}`,
          error: window.error,
        }
      read.push(window.rate)
    }
    windows = read
  } else {
    return notARate(value)
  }
  for (const [i, window] of windows.entries()) {
    const bounded = checkWindowBounds(window, limits)
    if (bounded === undefined) continue
    if (windows.length === 1) return bounded
    if (Array.isArray(value)) return { ...bounded, field: `${i}.${bounded.field}` }
    return { ...bounded, error: `window ${i + 1} of ${windows.length}: ${bounded.error}` }
  }
  // the limiter's own bounds on each window as a whole (per second, not per field) apply too, and the rule on intervals
  try {
    return { ok: true, rate: parseRate(windows) }
  } catch (error) {
    return { ok: false, error: (error as Error).message.replace(/^parseRate: /, '') }
  }
}

function notARate(value: unknown): { ok: false; field?: string; error: string } {
  const windows = Array.isArray(value) ? ` (or an array of 1 to ${MAX_WINDOWS} of them)` : ''
  return {
    ok: false,
    error: `expected a rate like '1000/min' or { limit, intervalMs, burst }${windows}, got ${describeValue(value)}`,
  }
}

function readRateObject(
  value: Record<string, unknown>,
): { ok: true; rate: RateWindow } | { ok: false; field: string; error: string } {
  const unknown = Object.keys(value).find((field) => !RATE_FIELDS.has(field))
  if (unknown !== undefined) return { ok: false, field: unknown, error: 'unknown field' }
  if (value.limit === undefined) return { ok: false, field: 'limit', error: 'missing' }
  if (value.intervalMs === undefined) return { ok: false, field: 'intervalMs', error: 'missing' }
  for (const field of RATE_FIELDS) {
    const n = value[field]
    if (n !== undefined && typeof n !== 'number') {
      return { ok: false, field, error: `expected a number, got ${describeValue(n)}` }
    }
  }
  const rate = {
    limit: value.limit as number,
    intervalMs: value.intervalMs as number,
    burst: (value.burst as number | undefined) ?? Math.max(1, value.limit as number),
  }
  return { ok: true, rate }
}

function checkWindowBounds(
  rate: RateWindow,
  limits: ControlLimits,
): { ok: false; field: string; error: string } | undefined {
  if (!(Number.isFinite(rate.limit) && rate.limit > 0 && rate.limit <= limits.maxLimit)) {
    return {
      ok: false,
      field: 'limit',
      error: `expected a number > 0 and <= ${limits.maxLimit}, got ${rate.limit}`,
    }
  }
  if (
    !(
      Number.isFinite(rate.intervalMs) &&
      rate.intervalMs >= limits.minIntervalMs &&
      rate.intervalMs <= limits.maxIntervalMs
    )
  ) {
    return {
      ok: false,
      field: 'intervalMs',
      error: `expected a number of ms in [${limits.minIntervalMs}, ${limits.maxIntervalMs}], got ${rate.intervalMs}`,
    }
  }
  if (!(Number.isFinite(rate.burst) && rate.burst >= 1 && rate.burst <= limits.maxBurst)) {
    return {
      ok: false,
      field: 'burst',
      error: `expected a number >= 1 and <= ${limits.maxBurst}, got ${rate.burst}`,
    }
  }
  return undefined
}

/** resolveLimits fills the bounds not given from DEFAULT_CONTROL_LIMITS and checks them. */
export function resolveLimits(limits?: Partial<ControlLimits>): ControlLimits {
  if (limits === undefined) return DEFAULT_CONTROL_LIMITS
  const resolved = { ...DEFAULT_CONTROL_LIMITS, ...limits }
  for (const [name, value] of Object.entries(resolved)) {
    if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value)) {
      throw new TypeError(`control limits: expected ${name} to be a finite number > 0, got ${String(value)}`)
    }
  }
  return Object.freeze(resolved)
}

/** OverrideEntries are a snapshot's overrides: the rates, and the caps of those written with one. */
interface OverrideEntries {
  rates: Map<string, Rate>
  caps: Map<string, number>
}

const RATE_FIELDS: ReadonlySet<string> = new Set(['limit', 'intervalMs', 'burst'])

const INHERITANCE = ['proportional', 'as-is', 'reset'] as const satisfies readonly Inheritance[]

const schemas = new WeakMap<ControlLimits, ReturnType<typeof buildSchema>>()

function schemaFor(limits: ControlLimits): ReturnType<typeof buildSchema> {
  let schema = schemas.get(limits)
  if (schema === undefined) {
    schema = buildSchema(limits)
    schemas.set(limits, schema)
  }
  return schema
}

/** buildSchema is the control message schema under `limits`: a union of the three change types on `type`. */
function buildSchema(limits: ControlLimits) {
  const version = z.number().int().min(0)
  const inheritance = z.enum(INHERITANCE).optional()
  const rate = rateSchema(limits)
  const maxInFlight = maxInFlightSchema(limits)
  const weight = weightSchema(limits)
  return z.discriminatedUnion('type', [
    z
      .strictObject({
        type: z.literal('set'),
        merchant: merchantSchema(limits, true),
        rate,
        maxInFlight,
        weight,
        version,
        inheritance,
      })
      .superRefine((change, ctx) => {
        if (change.merchant === DEFAULT_RATE_KEY && change.weight !== undefined) {
          ctx.addIssue({
            code: 'custom',
            path: ['weight'],
            message: "a weight is a child key's share of its parent; the default rate ('*') takes none",
          })
        }
      })
      .transform(
        ({ maxInFlight: cap, weight: share, ...rest }): SetChange => ({
          ...rest,
          ...(cap === undefined ? {} : { maxInFlight: cap }),
          ...(share === undefined ? {} : { weight: share }),
        }),
      ),
    z.strictObject({
      type: z.literal('clear'),
      merchant: merchantSchema(limits, false),
      version,
      inheritance,
    }),
    z
      .strictObject({
        type: z.literal('snapshot'),
        version,
        default: rate,
        maxInFlight,
        overrides: overridesSchema(limits).optional(),
        weights: weightsSchema(limits).optional(),
        inheritance,
      })
      .transform(({ overrides: entries, maxInFlight: cap, weights: shares, ...rest }): SnapshotChange => {
        const change: SnapshotChange = { ...rest, overrides: entries?.rates ?? new Map<string, Rate>() }
        return {
          ...change,
          ...(cap === undefined ? {} : { maxInFlight: cap }),
          ...(entries === undefined || entries.caps.size === 0 ? {} : { caps: entries.caps }),
          ...(shares === undefined || shares.size === 0 ? {} : { weights: shares }),
        }
      }),
  ])
}

/** rateSchema reads a rate as checkRateValue does, reporting the field it refused. */
function rateSchema(limits: ControlLimits) {
  return z.unknown().transform((value, ctx): Rate => {
    const checked = checkRateValue(value, limits)
    if (checked.ok) return checked.rate
    ctx.addIssue({
      code: 'custom',
      message: checked.error,
      // a window of an array is named by its index: `rate[1].limit`
      path:
        checked.field === undefined
          ? []
          : checked.field.split('.').map((part) => (/^\d+$/.test(part) ? Number(part) : part)),
    })
    return z.NEVER
  })
}

/** merchantSchema reads a merchant key; `allowDefault` also lets `*` (the default rate) through. */
function merchantSchema(limits: ControlLimits, allowDefault: boolean) {
  return z.unknown().transform((value, ctx): string => {
    if (allowDefault && value === DEFAULT_RATE_KEY) return DEFAULT_RATE_KEY
    const checked = checkMerchantKey(value, limits.maxMerchantKeyLength)
    if (checked.ok) return checked.key
    ctx.addIssue({ code: 'custom', message: checked.reason })
    return z.NEVER
  })
}

/** maxInFlightSchema reads an optional in-flight cap: a whole number in [1, limits.maxInFlight]. */
function maxInFlightSchema(limits: ControlLimits) {
  return z
    .number({
      error: (issue) =>
        `expected a whole number in [1, ${limits.maxInFlight}], got ${describeValue(issue.input)}`,
    })
    .refine((n) => Number.isInteger(n) && n >= 1 && n <= limits.maxInFlight, {
      error: (issue) =>
        `expected a whole number in [1, ${limits.maxInFlight}], got ${describeValue(issue.input)}`,
    })
    .optional()
}

/** weightText is what a weight must be, for every rejection of one. */
function weightText(limits: ControlLimits, input: unknown): string {
  return `expected a weight, a number in [${limits.minWeight}, ${limits.maxWeight}], got ${describeValue(input)}`
}

/** checkWeight reads one weight: a finite number in [limits.minWeight, limits.maxWeight]. */
function checkWeight(value: unknown, limits: ControlLimits): number | undefined {
  return typeof value === 'number' &&
    Number.isFinite(value) &&
    value >= limits.minWeight &&
    value <= limits.maxWeight
    ? value
    : undefined
}

/** weightSchema reads a set's optional weight. */
function weightSchema(limits: ControlLimits) {
  return z
    .unknown()
    .transform((value, ctx): number | undefined => {
      if (value === undefined) return undefined
      const weight = checkWeight(value, limits)
      if (weight !== undefined) return weight
      ctx.addIssue({ code: 'custom', message: weightText(limits, value) })
      return z.NEVER
    })
    .optional()
}

/**
 * boundedKeys is a snapshot's object of `entries` (`'merchant: rate'`) and its keys, at most
 * limits.maxOverrides of them; undefined, with the issue added, when `value` is no plain
 * object or holds more. Object.keys, not a zod record: a key named `__proto__` is a valid
 * key and must not vanish.
 */
function boundedKeys(
  value: unknown,
  ctx: z.RefinementCtx,
  limits: ControlLimits,
  entries: string,
  plural: string,
): { object: Record<string, unknown>; keys: string[] } | undefined {
  if (!isPlainObject(value)) {
    ctx.addIssue({ code: 'custom', message: `expected an object of ${entries}, got ${describeValue(value)}` })
    return undefined
  }
  const keys = Object.keys(value)
  if (keys.length > limits.maxOverrides) {
    ctx.addIssue({
      code: 'custom',
      message: `${keys.length} ${plural}, above the ${limits.maxOverrides} allowed`,
    })
    return undefined
  }
  return { object: value, keys }
}

/**
 * weightsSchema reads a snapshot's `weights`, an object of key: weight (at most
 * limits.maxOverrides of them), and stops at the first entry it refuses.
 */
function weightsSchema(limits: ControlLimits) {
  return z.unknown().transform((value, ctx): Map<string, number> => {
    const read = boundedKeys(value, ctx, limits, 'key: weight', 'weights')
    if (read === undefined) return z.NEVER
    const { object, keys } = read
    const weights = new Map<string, number>()
    for (const key of keys) {
      const checkedKey = checkMerchantKey(key, limits.maxMerchantKeyLength)
      if (!checkedKey.ok) {
        ctx.addIssue({
          code: 'custom',
          message: `key ${describeValue(key)}: ${checkedKey.reason}`,
          path: [key],
        })
        return z.NEVER
      }
      const weight = checkWeight(object[key], limits)
      if (weight === undefined) {
        ctx.addIssue({ code: 'custom', message: weightText(limits, object[key]), path: [key] })
        return z.NEVER
      }
      weights.set(key, weight)
    }
    return weights
  })
}

/**
 * overridesSchema reads a snapshot's `overrides`, an object of merchant: rate or
 * merchant: { rate, maxInFlight }, and stops at the first entry it refuses.
 */
function overridesSchema(limits: ControlLimits) {
  return z.unknown().transform((value, ctx): OverrideEntries => {
    const read = boundedKeys(value, ctx, limits, 'merchant: rate', 'overrides')
    if (read === undefined) return z.NEVER
    const { object, keys } = read
    const result: OverrideEntries = { rates: new Map<string, Rate>(), caps: new Map<string, number>() }
    for (const key of keys) {
      const entry = readOverride(key, object[key], limits)
      if (!entry.ok) {
        ctx.addIssue({ code: 'custom', message: entry.message, path: entry.path })
        return z.NEVER
      }
      result.rates.set(key, entry.rate)
      if (entry.cap !== undefined) result.caps.set(key, entry.cap)
    }
    return result
  })
}

/** OverrideEntry is one override read by readOverride, or the first thing wrong with it and where. */
type OverrideEntry =
  | { ok: true; rate: Rate; cap?: number }
  | { ok: false; message: string; path: PropertyKey[] }

/** readOverride checks one override: its merchant key, then its cap (when written with one), then its rate. */
function readOverride(key: string, entry: unknown, limits: ControlLimits): OverrideEntry {
  const checkedKey = checkMerchantKey(key, limits.maxMerchantKeyLength)
  if (!checkedKey.ok) {
    return { ok: false, message: `merchant key ${describeValue(key)}: ${checkedKey.reason}`, path: [key] }
  }
  const withCap = isPlainObject(entry) && 'rate' in entry
  let cap: number | undefined
  if (withCap) {
    const unknown = Object.keys(entry).find((field) => field !== 'rate' && field !== 'maxInFlight')
    if (unknown !== undefined) return { ok: false, message: 'unknown field', path: [key, unknown] }
    const written = entry.maxInFlight
    if (written !== undefined) {
      if (
        !(
          typeof written === 'number' &&
          Number.isInteger(written) &&
          written >= 1 &&
          written <= limits.maxInFlight
        )
      ) {
        return {
          ok: false,
          message: `expected a whole number in [1, ${limits.maxInFlight}], got ${describeValue(written)}`,
          path: [key, 'maxInFlight'],
        }
      }
      cap = written
    }
  }
  const checked = checkRateValue(withCap ? entry.rate : entry, limits)
  if (!checked.ok) {
    const at = withCap ? [key, 'rate'] : [key]
    return {
      ok: false,
      message: checked.error,
      path: checked.field === undefined ? at : [...at, checked.field],
    }
  }
  return cap === undefined ? { ok: true, rate: checked.rate } : { ok: true, rate: checked.rate, cap }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** describeIssue words zod's own issues the way the custom checks do: what was expected, what came. */
function describeIssue(issue: z.core.$ZodRawIssue): string | undefined {
  switch (issue.code) {
    case 'invalid_type':
      if (issue.input === undefined) return 'missing'
      if (issue.expected === 'int' || issue.expected === 'number') {
        return `expected a whole number >= 0, got ${describeValue(issue.input)}`
      }
      return `expected ${issue.expected}, got ${describeValue(issue.input)}`
    case 'too_small':
    case 'too_big':
      return `expected a whole number in [0, ${Number.MAX_SAFE_INTEGER}], got ${describeValue(issue.input)}`
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(issue.input)}`
    case 'invalid_union': {
      // Only the discriminated union on `type` is a union here; its issue carries the whole message.
      const type = isPlainObject(issue.input) ? issue.input.type : undefined
      return type === undefined
        ? 'missing'
        : `expected one of "set", "clear", "snapshot", got ${describeValue(type)}`
    }
    default:
      return undefined
  }
}

function formatIssues(issues: readonly z.core.$ZodIssue[]): string {
  const lines = issues.slice(0, 3).flatMap((issue) => {
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => `${formatPath([...issue.path, key])}: unknown field`)
    }
    return [`${formatPath(issue.path)}: ${issue.message}`]
  })
  const more = issues.length > 3 ? ` (and ${issues.length - 3} more)` : ''
  return `${lines.join('; ')}${more}`
}

function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return 'message'
  return path
    .map((part, i) => {
      if (typeof part === 'number') return `[${part}]`
      const text = String(part)
      if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(text)) return i === 0 ? text : `.${text}`
      return `[${JSON.stringify(text)}]`
    })
    .join('')
}

function describeValue(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'object') return 'an object'
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
  return String(value)
}
