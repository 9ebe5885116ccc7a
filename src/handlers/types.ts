/**
 * HandlerJob is what an adapter passes a handler, whatever the queue: BullMQ's job id or a
 * Kafka message's `topic/partition/offset`, the job's data as it came off the queue, and the
 * attempt number. `id` must stay the same across attempts of one job: the PSP handler derives
 * its Idempotency-Key from it. The merchant is read from `data` (each handler validates its
 * own shape), not passed apart, so the adapter's key (`merchantId`, `psp:merchant`) and the
 * handler's view of the job cannot disagree.
 */
export interface HandlerJob {
  /** id is the job's queue id, stable across attempts. */
  readonly id: string
  /** data is the job's payload; the handler validates it. */
  readonly data: unknown
  /** attempt is 1 for the first call, 2 for the first retry, and so on. */
  readonly attempt: number
}

/**
 * Handler runs one job and says how it went. It resolves with an outcome for everything the
 * far side or the network did (a refusal, a 500, a timeout); it rejects only on misuse or a
 * bug. `signal` aborts the call (shutdown): the outcome is then retryable with reason `aborted`.
 * Adapters turn an outcome into their queue's terms with `settleOutcome`.
 */
export type Handler<O extends DeliveryOutcome = DeliveryOutcome> = (
  job: HandlerJob,
  signal?: AbortSignal,
) => Promise<O>

/**
 * RetryableReason says why a call may succeed later: a 5xx (`server-error`), no complete
 * answer within the timeout (`timeout`), a refused or reset connection or a failed DNS lookup
 * (`connection-error`), an answer that is not HTTP or whose headers pass the cap
 * (`protocol-error`), or the caller's signal (`aborted`).
 */
export type RetryableReason = 'server-error' | 'timeout' | 'connection-error' | 'protocol-error' | 'aborted'

/**
 * PermanentReason says why retrying cannot help: a 4xx other than 429 (`client-error`), a 3xx
 * (`redirect`: redirects are not followed), a target the SSRF guard refuses (`ssrf-blocked`,
 * also for a redirect to such a target), job data that does not fit the handler
 * (`invalid-job`), a signing secret that is not `whsec_` base64 of at least 16 bytes
 * (`invalid-secret`), no secret for the merchant (`no-secret`), a PSP not configured
 * (`unknown-psp`).
 */
export type PermanentReason =
  | 'client-error'
  | 'redirect'
  | 'ssrf-blocked'
  | 'invalid-job'
  | 'invalid-secret'
  | 'no-secret'
  | 'unknown-psp'

/** Delivered: the far side answered 2xx. */
export interface Delivered {
  readonly kind: 'delivered'
  readonly status: number
  /** durationMs is the time from sending to the end of reading the response, in ms. */
  readonly durationMs: number
}

/**
 * RetryLater: the far side answered 429, or 503 with a Retry-After, and asked to be called
 * again in `retryAfterMs` (from Retry-After, capped; a default when a 429 gives none).
 * Adapters delay the job without spending an attempt and lower the merchant's rate.
 */
export interface RetryLater {
  readonly kind: 'retry-later'
  readonly status: number
  readonly retryAfterMs: number
  readonly durationMs: number
}

/** Retryable: try again after a backoff (see backoffMs), until the attempts run out. */
export interface Retryable {
  readonly kind: 'retryable'
  readonly reason: RetryableReason
  /** status is the HTTP status when there was an answer. */
  readonly status?: number
  readonly durationMs: number
}

/** Permanent: dead-letter at once; retrying cannot help. */
export interface Permanent {
  readonly kind: 'permanent'
  readonly reason: PermanentReason
  /** status is the HTTP status when there was an answer. */
  readonly status?: number
  /** address is the refused IP address, with reason `ssrf-blocked`, when one was resolved. */
  readonly address?: string
  /** detail says more, without secrets, payloads or URLs: which field is invalid, which range refused. */
  readonly detail?: string
  readonly durationMs: number
}

/** DeliveryOutcome is how one call of a handler ended, told apart by `kind`. */
export type DeliveryOutcome = Delivered | RetryLater | Retryable | Permanent
