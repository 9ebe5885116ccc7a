import { checkMerchantKey, type LimitKeys, MAX_LIMIT_KEYS } from '../limiter/index.js'

/** LimitKeysCheck is what checkLimitKeys found: the keys (one key as a string), or why they are refused. */
export type LimitKeysCheck = { ok: true; keys: LimitKeys } | { ok: false; reason: string }

/**
 * limitKeysOf calls a job's `limitKeys` function and checks its answer (see checkLimitKeys).
 * It never throws: a function that throws is a refusal saying so.
 */
export function limitKeysOf<V>(
  limitKeys: (merchantKey: string, value: V) => unknown,
  merchantKey: string,
  value: V,
  maxKeyLength?: number,
): LimitKeysCheck {
  let keys: unknown
  try {
    keys = limitKeys(merchantKey, value)
  } catch (error) {
    return { ok: false, reason: `limitKeys threw: ${error instanceof Error ? error.message : String(error)}` }
  }
  return checkLimitKeys(keys, maxKeyLength)
}

/**
 * checkLimitKeys accepts one key, or 1 to MAX_LIMIT_KEYS distinct keys outermost first, each
 * a key checkMerchantKey accepts (stricter than the limiter's own check, which takes any
 * characters: a key built from job data is held to the merchant keys' alphabet). A one-element array is given back as its key, so that the
 * common case costs the limiter no array. An empty list, a longer one, a duplicate or a bad
 * key is refused with a reason that names it.
 */
export function checkLimitKeys(keys: unknown, maxKeyLength?: number): LimitKeysCheck {
  if (!Array.isArray(keys)) {
    const check = checkMerchantKey(keys, maxKeyLength)
    return check.ok ? { ok: true, keys: check.key } : { ok: false, reason: `limit key ${check.reason}` }
  }
  if (keys.length === 0) return { ok: false, reason: `expected 1 to ${MAX_LIMIT_KEYS} limit keys, got none` }
  if (keys.length > MAX_LIMIT_KEYS) {
    return { ok: false, reason: `expected 1 to ${MAX_LIMIT_KEYS} limit keys, got ${keys.length}` }
  }
  for (let i = 0; i < keys.length; i++) {
    const check = checkMerchantKey(keys[i], maxKeyLength)
    if (!check.ok) return { ok: false, reason: `limit key ${i} ${check.reason}` }
    for (let j = 0; j < i; j++) {
      if (keys[j] === keys[i]) return { ok: false, reason: `limit key ${i} repeats key ${j} (${keys[i]})` }
    }
  }
  return { ok: true, keys: keys.length === 1 ? (keys[0] as string) : (keys as readonly string[]) }
}

/** innermostKey is the last of `keys`: the one penalties (429 Retry-After) go to. */
export function innermostKey(keys: LimitKeys): string {
  return typeof keys === 'string' ? keys : keys[keys.length - 1]!
}

/** keyList is `keys` as a list, for the waiting stats. */
export function keyList(keys: LimitKeys): readonly string[] {
  return typeof keys === 'string' ? [keys] : keys
}

/** sameKeys says whether two key lists are equal, so that a lane's messages can share one list. */
export function sameKeys(a: LimitKeys | undefined, b: LimitKeys): boolean {
  if (a === b) return true
  if (a === undefined || typeof a === 'string' || typeof b === 'string' || a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
