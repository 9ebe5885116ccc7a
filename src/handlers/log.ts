import type { Logger } from 'pino'
import { describeOutcome } from './outcome.js'
import type { DeliveryOutcome, Permanent } from './types.js'

/**
 * logOutcome logs one handler call: `fields` (ids, merchant, attempt) and the outcome's kind,
 * reason, status, refused address, Retry-After and duration. Callers pass no secret,
 * signature, payload, response body or URL. Delivered at debug, retries at info,
 * permanent failures at warn.
 */
export function logOutcome(log: Logger, fields: Record<string, unknown>, outcome: DeliveryOutcome): void {
  const entry = {
    ...fields,
    outcome: outcome.kind,
    ...('reason' in outcome ? { reason: outcome.reason } : {}),
    ...('status' in outcome && outcome.status !== undefined ? { status: outcome.status } : {}),
    ...('address' in outcome && outcome.address !== undefined ? { address: outcome.address } : {}),
    ...(outcome.kind === 'retry-later' ? { retryAfterMs: outcome.retryAfterMs } : {}),
    durationMs: Math.round(outcome.durationMs),
  }
  const message = describeOutcome(outcome)
  switch (outcome.kind) {
    case 'delivered':
      log.debug(entry, message)
      return
    case 'retry-later':
    case 'retryable':
      log.info(entry, message)
      return
    case 'permanent':
      log.warn(entry, message)
      return
  }
}

/** issuesOf summarizes validation issues as `path: message`, which never repeat the input's values. */
export function issuesOf(issues: readonly { path: readonly PropertyKey[]; message: string }[]): string {
  return issues.map((issue) => `${issue.path.map(String).join('.') || '(data)'}: ${issue.message}`).join('; ')
}

/** refuse logs and returns a permanent outcome for a job refused before anything was sent. */
export function refuse(
  log: Logger,
  fields: Record<string, unknown>,
  reason: Permanent['reason'],
  detail: string,
): Permanent {
  const outcome: Permanent = { kind: 'permanent', reason, detail, durationMs: 0 }
  logOutcome(log, fields, outcome)
  return outcome
}
