/** MAX_MERCHANT_KEY_LENGTH is the default bound on a merchant key, in UTF-16 code units. */
export const MAX_MERCHANT_KEY_LENGTH = 128

/** MerchantKeyCheck is the outcome of checkMerchantKey: the key, or why it is refused. */
export type MerchantKeyCheck = { ok: true; key: string } | { ok: false; reason: string }

/**
 * checkMerchantKey accepts a non-empty string of printable ASCII without spaces
 * (letters, digits and `-_.:@/+=`), at most `maxLength` long. A key of another type,
 * empty, too long or with other characters is refused with a reason that says which.
 * `*` is reserved for the default rate and is not a merchant key.
 */
export function checkMerchantKey(key: unknown, maxLength = MAX_MERCHANT_KEY_LENGTH): MerchantKeyCheck {
  if (key === undefined || key === null) return { ok: false, reason: 'missing' }
  if (typeof key !== 'string') return { ok: false, reason: `expected a string, got ${typeof key}` }
  if (key.length === 0) return { ok: false, reason: 'empty' }
  if (key.length > maxLength)
    return { ok: false, reason: `longer than ${maxLength} characters (${key.length})` }
  if (key === '*') return { ok: false, reason: "'*' is reserved for the default rate" }
  if (!KEY_PATTERN.test(key)) return { ok: false, reason: 'contains characters outside [A-Za-z0-9-_.:@/+=]' }
  return { ok: true, key }
}

const KEY_PATTERN = /^[A-Za-z0-9\-_.:@/+=]+$/
