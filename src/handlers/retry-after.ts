/** DEFAULT_RETRY_AFTER_MS is the delay for a 429 that names none, in ms. */
export const DEFAULT_RETRY_AFTER_MS = 60_000
/** MAX_RETRY_AFTER_MS caps any Retry-After, in ms: a merchant cannot park its jobs for days. */
export const MAX_RETRY_AFTER_MS = 60 * 60_000

/**
 * parseRetryAfter reads a Retry-After header (RFC 9110): delay-seconds (`120`) or an
 * HTTP-date (`Wed, 21 Oct 2026 07:28:00 GMT`, or the RFC 850 form), relative to `nowWallMs`
 * (wall time, ms). A date in the past gives 0. The asctime form, which names no zone, is not read. Anything else, an empty or repeated header included, gives
 * undefined. The result is not capped; see retryAfterMsOf.
 */
export function parseRetryAfter(value: string | string[] | undefined, nowWallMs: number): number | undefined {
  if (typeof value !== 'string') return undefined
  const text = value.trim()
  if (/^\d+$/.test(text)) return Number(text) * 1000
  // IMF-fixdate and the obsolete RFC 850 form: a weekday, a comma, and GMT. This keeps
  // Date.parse from reading odd strings as dates, or a zone-less date as local time.
  if (!/^[A-Za-z]{3,9}, .* GMT$/.test(text)) return undefined
  const atMs = Date.parse(text)
  if (Number.isNaN(atMs)) return undefined
  return Math.max(0, atMs - nowWallMs)
}

/** RetryAfterLimits bound the delays taken from Retry-After. */
export interface RetryAfterLimits {
  /** defaultMs is used when a 429 names no usable delay. Default DEFAULT_RETRY_AFTER_MS. */
  defaultMs?: number
  /** maxMs caps every delay. Default MAX_RETRY_AFTER_MS. */
  maxMs?: number
}

/**
 * retryAfterMsOf is the delay to honour for a Retry-After header: parsed, then capped at
 * `maxMs`; undefined when the header is missing or unreadable (the caller picks the default).
 */
export function retryAfterMsOf(
  value: string | string[] | undefined,
  nowWallMs: number,
  limits: RetryAfterLimits = {},
): number | undefined {
  const parsed = parseRetryAfter(value, nowWallMs)
  return parsed === undefined ? undefined : Math.min(parsed, limits.maxMs ?? MAX_RETRY_AFTER_MS)
}
