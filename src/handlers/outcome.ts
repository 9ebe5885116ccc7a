import { PermanentFailureError, RetryableFailureError, RetryLaterError } from '../errors.js'
import type { HttpResult } from './http.js'
import { DEFAULT_RETRY_AFTER_MS, type RetryAfterLimits, retryAfterMsOf } from './retry-after.js'
import type { Delivered, DeliveryOutcome } from './types.js'

/** ClassifyOptions: wall time for Retry-After dates, and the Retry-After bounds. */
export interface ClassifyOptions extends RetryAfterLimits {
  /** nowWallMs is the wall time when the answer came, in ms. */
  nowWallMs: number
}

/**
 * classifyResult turns an HTTP result into a delivery outcome: 2xx delivered; 429, and 503
 * with a Retry-After, retry-later (the header's delay capped at maxMs; a 429 without one
 * waits defaultMs); other 5xx, timeouts and network errors retryable; other 4xx (410
 * included) permanent; 3xx permanent (never followed), as `ssrf-blocked` when its Location
 * points at a refused target; a target the guard refused permanent `ssrf-blocked`.
 */
export function classifyResult(result: HttpResult, options: ClassifyOptions): DeliveryOutcome {
  const { durationMs } = result
  switch (result.kind) {
    case 'refused': {
      const { refusal } = result
      return {
        kind: 'permanent',
        reason: 'ssrf-blocked',
        ...(refusal.address === undefined ? {} : { address: refusal.address }),
        detail: `target ${refusal.host || '(unparseable)'} refused: ${refusal.reason}`,
        durationMs,
      }
    }
    case 'failed':
      return { kind: 'retryable', reason: result.reason, durationMs }
    case 'response':
      break
  }
  const { status } = result
  if (status >= 200 && status < 300) return { kind: 'delivered', status, durationMs }
  if (status >= 300 && status < 400) {
    const refusal = result.redirectRefusal
    if (refusal === undefined) return { kind: 'permanent', reason: 'redirect', status, durationMs }
    return {
      kind: 'permanent',
      reason: 'ssrf-blocked',
      status,
      ...(refusal.address === undefined ? {} : { address: refusal.address }),
      detail: `redirect to ${refusal.host || '(unparseable)'} refused: ${refusal.reason}`,
      durationMs,
    }
  }
  const retryAfterMs = retryAfterMsOf(result.headers['retry-after'], options.nowWallMs, options)
  if (status === 429) {
    return {
      kind: 'retry-later',
      status,
      retryAfterMs: retryAfterMs ?? options.defaultMs ?? DEFAULT_RETRY_AFTER_MS,
      durationMs,
    }
  }
  if (status === 503 && retryAfterMs !== undefined)
    return { kind: 'retry-later', status, retryAfterMs, durationMs }
  if (status >= 500) return { kind: 'retryable', reason: 'server-error', status, durationMs }
  if (status >= 400) return { kind: 'permanent', reason: 'client-error', status, durationMs }
  return { kind: 'retryable', reason: 'protocol-error', status, durationMs }
}

/**
 * describeOutcome is a one-line account of an outcome for logs and error messages: reason,
 * status, refused address. It holds no secret, signature, payload or URL path.
 */
export function describeOutcome(outcome: DeliveryOutcome): string {
  const status = 'status' in outcome && outcome.status !== undefined ? ` (HTTP ${outcome.status})` : ''
  switch (outcome.kind) {
    case 'delivered':
      return `delivered${status}`
    case 'retry-later':
      return `retry after ${outcome.retryAfterMs} ms${status}`
    case 'retryable':
      return `${outcome.reason}${status}`
    case 'permanent':
      return `${outcome.reason}${status}${outcome.detail === undefined ? '' : `: ${outcome.detail}`}`
  }
}

/**
 * settleOutcome puts an outcome in the terms every adapter understands: it returns a
 * delivered outcome and throws the others: RetryLaterError (delay without spending an
 * attempt), RetryableFailureError (back off and retry, see backoffMs), PermanentFailureError
 * (dead-letter at once, `reason` = the outcome's reason, e.g. `ssrf-blocked`).
 */
export function settleOutcome<O extends DeliveryOutcome>(outcome: O): Extract<O, Delivered> {
  switch (outcome.kind) {
    case 'delivered':
      return outcome as Extract<O, Delivered>
    case 'retry-later':
      throw new RetryLaterError(outcome.retryAfterMs, describeOutcome(outcome))
    case 'retryable':
      throw new RetryableFailureError(outcome.reason, outcome.status, describeOutcome(outcome))
    case 'permanent':
      throw new PermanentFailureError(outcome.reason, describeOutcome(outcome))
  }
}
