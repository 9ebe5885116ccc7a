/**
 * Errors a caller may handle, one class per failure, each with a fixed `name` and `code`.
 * Check them with `instanceof`, never by comparing names.
 */

/** MerchantThrottleError is the base of every error this package throws on purpose. */
export class MerchantThrottleError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

/**
 * RetryLaterError is thrown by a handler when the far side asked to be called later
 * (HTTP 429 or 503 with Retry-After). The adapter delays the job by `retryAfterMs`
 * without spending an attempt and lowers the merchant's rate for a while.
 */
export class RetryLaterError extends MerchantThrottleError {
  readonly retryAfterMs: number
  constructor(
    retryAfterMs: number,
    message = `retry after ${retryAfterMs} ms`,
    options?: { cause?: unknown },
  ) {
    super('RETRY_LATER', message, options)
    if (!Number.isFinite(retryAfterMs) || retryAfterMs < 0) {
      throw new TypeError(
        `RetryLaterError: expected retryAfterMs to be a finite number >= 0, got ${retryAfterMs}`,
      )
    }
    this.retryAfterMs = retryAfterMs
  }
}

/**
 * InvalidMerchantKeyError: a job or message carries no usable merchant key. It is never
 * retried: the job fails (BullMQ) or is dead-lettered (Kafka) with this reason.
 */
export class InvalidMerchantKeyError extends MerchantThrottleError {
  readonly reason: string
  constructor(reason: string) {
    super('INVALID_MERCHANT_KEY', `invalid merchant key: ${reason}`)
    this.reason = reason
  }
}

/**
 * InvalidRatesFileError: the rates file (config/rates.json) cannot be read or is not a
 * valid snapshot when the file source starts. A later bad edit is logged and ignored
 * instead; only a start has no rates in force to keep.
 */
export class InvalidRatesFileError extends MerchantThrottleError {
  readonly path: string
  constructor(path: string, reason: string, options?: { cause?: unknown }) {
    super('INVALID_RATES_FILE', `rates file ${path}: ${reason}`, options)
    this.path = path
  }
}

/**
 * PermanentFailureError is thrown by a handler when retrying cannot help (a 4xx other
 * than 429, a refused target, a malformed job): the job is dead-lettered at once with
 * `reason`, without spending further attempts.
 */
export class PermanentFailureError extends MerchantThrottleError {
  readonly reason: string
  constructor(reason: string, message: string, options?: { cause?: unknown }) {
    super('PERMANENT_FAILURE', message, options)
    this.reason = reason
  }
}

/**
 * RetryableFailureError is thrown by a handler when a later attempt may succeed (a 5xx,
 * a timeout, a network error): the adapter retries after a backoff until its attempts run
 * out, then dead-letters the job. `reason` names the failure (`server-error`, `timeout`,
 * `connection-error`, `protocol-error`, `aborted`); `status` is the HTTP status, if any.
 */
export class RetryableFailureError extends MerchantThrottleError {
  readonly reason: string
  readonly status: number | undefined
  constructor(reason: string, status: number | undefined, message: string, options?: { cause?: unknown }) {
    super('RETRYABLE_FAILURE', message, options)
    this.reason = reason
    this.status = status
  }
}

/**
 * ConnectionFailure says why a start-up connection check failed; `protocol`: the server
 * closed the connection, as a SASL or TLS listener does with a client that speaks neither.
 */
export type ConnectionFailure = 'authentication' | 'authorization' | 'tls' | 'protocol' | 'unreachable'

/**
 * ConnectionError: at start-up the worker could not reach or log in to Kafka or Redis.
 * `service` and `address` say where (an address never carries credentials), `reason`
 * what went wrong; the message names the user and the SASL mechanism where they matter
 * and never a password. The service stops starting on it.
 */
export class ConnectionError extends MerchantThrottleError {
  readonly service: 'kafka' | 'redis'
  readonly address: string
  readonly reason: ConnectionFailure
  constructor(
    service: 'kafka' | 'redis',
    address: string,
    reason: ConnectionFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super('CONNECTION_FAILED', message, options)
    this.service = service
    this.address = address
    this.reason = reason
  }
}

/**
 * ConfigError: the configuration cannot be used. `problems` lists every problem found,
 * each naming the field (and the layer it came from) or the file; the message holds them
 * all, so one run shows everything to fix. Start-up stops on it.
 */
export class ConfigError extends MerchantThrottleError {
  readonly problems: readonly string[]
  constructor(problems: string | readonly string[]) {
    const list = typeof problems === 'string' ? [problems] : [...problems]
    if (list.length === 0) throw new TypeError('ConfigError: expected at least one problem, got none')
    super(
      'CONFIG_INVALID',
      list.length === 1 ? list[0]! : `${list.length} problems in the configuration:\n- ${list.join('\n- ')}`,
    )
    this.problems = list
  }
}
