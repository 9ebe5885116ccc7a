import { type Logger, pino } from 'pino'
import { z } from 'zod'
import { type Clock, checkMerchantKey, wallClock } from '../limiter/index.js'
import type { HttpClient } from './http.js'
import { issuesOf, logOutcome, refuse } from './log.js'
import { classifyResult } from './outcome.js'
import type { RetryAfterLimits } from './retry-after.js'
import { parseWebhookSecret, type SigningSecrets, secretsInForce, signatureHeader } from './signature.js'
import type { DeliveryOutcome, Handler, HandlerJob } from './types.js'

/**
 * webhookJobSchema is the data of a webhook delivery job:
 * - `merchantId`: the merchant, a valid merchant key (the adapter's default key field);
 * - `eventId`: the event's id, sent as `webhook-id` on every attempt so the merchant can
 *   de-duplicate; printable ASCII without spaces, at most 256 characters;
 * - `url`: the merchant's endpoint, http(s), checked by the SSRF guard;
 * - `payload`: any JSON value, sent as the request body;
 * - `secret` (optional): a signing secret for this job alone, over the configured ones.
 */
export const webhookJobSchema = z.object({
  merchantId: z
    .string()
    .refine((key) => checkMerchantKey(key).ok, 'expected a merchant key: [A-Za-z0-9-_.:@/+=], 1-128'),
  eventId: z
    .string()
    .min(1)
    .max(256)
    .regex(/^[\x21-\x7e]+$/, 'expected printable ASCII without spaces'),
  url: z.string().min(1).max(2048),
  payload: z.unknown().refine((payload) => payload !== undefined, 'expected a JSON value'),
  secret: z.string().optional(),
})

/** WebhookJobData is a validated webhook job's data. */
export type WebhookJobData = z.infer<typeof webhookJobSchema>

/** WebhookHandlerOptions configure createWebhookHandler. */
export interface WebhookHandlerOptions {
  /** client sends the requests (SSRF guard, timeouts, limits); shared, closed by its owner. */
  client: HttpClient
  /**
   * secretFor gives a merchant's signing secrets (a per-merchant map with a default behind
   * it, from config). A job's own `secret` wins. Undefined: the job fails with `no-secret`.
   */
  secretFor?: (merchantId: string) => SigningSecrets | undefined
  /** wallClock gives `webhook-timestamp` and dates a Retry-After. Default: Date.now. */
  wallClock?: Clock
  /** retryAfter bounds delays from Retry-After (default 60 s when a 429 names none, cap 1 h). */
  retryAfter?: RetryAfterLimits
  /** userAgent is sent as User-Agent. Default 'merchant-throttle-webhooks'. */
  userAgent?: string
  /** logger for outcomes: ids, merchant, status, duration; never secrets, signatures or payloads. Default: silent. */
  logger?: Logger
}

/**
 * createWebhookHandler returns the webhook delivery handler. Each call validates the job,
 * signs the JSON payload with the merchant's secret(s) in the Standard Webhooks format
 * (`webhook-id` = eventId, `webhook-timestamp` in seconds, `webhook-signature`, two
 * signatures during a rotation's grace period), POSTs it through the client and classifies
 * the answer (see classifyResult). It resolves with the outcome; pass it to settleOutcome
 * for the adapters' errors.
 */
export function createWebhookHandler(options: WebhookHandlerOptions): Handler<DeliveryOutcome> {
  if (options === null || typeof options !== 'object' || typeof options.client?.send !== 'function') {
    throw new TypeError(
      `createWebhookHandler: expected options with an HttpClient as client, got ${String(options)}`,
    )
  }
  const { client, secretFor } = options
  if (secretFor !== undefined && typeof secretFor !== 'function') {
    throw new TypeError(`createWebhookHandler: expected secretFor to be a function, got ${typeof secretFor}`)
  }
  const clock = options.wallClock ?? wallClock
  const userAgent = options.userAgent ?? 'merchant-throttle-webhooks'
  const log = (options.logger ?? pino({ level: 'silent' })).child({ component: 'webhook' })

  return async function deliverWebhook(job: HandlerJob, signal?: AbortSignal): Promise<DeliveryOutcome> {
    const fields: Record<string, unknown> = { jobId: job.id, attempt: job.attempt }
    const parsed = webhookJobSchema.safeParse(job.data)
    if (!parsed.success) {
      return refuse(log, fields, 'invalid-job', issuesOf(parsed.error.issues))
    }
    const data = parsed.data
    fields.merchantId = data.merchantId
    fields.eventId = data.eventId

    const secrets = data.secret ?? secretFor?.(data.merchantId)
    if (secrets === undefined)
      return refuse(log, fields, 'no-secret', `no signing secret for merchant ${data.merchantId}`)
    const keys: Buffer[] = []
    for (const [index, secret] of secretsInForce(secrets, clock.now()).entries()) {
      const check = parseWebhookSecret(secret)
      if (!check.ok) {
        const which =
          data.secret !== undefined ? "the job's secret" : index === 0 ? 'current secret' : 'previous secret'
        return refuse(log, fields, 'invalid-secret', `${which}: ${check.reason}`)
      }
      keys.push(check.key)
    }

    let body: string | undefined
    try {
      body = JSON.stringify(data.payload)
    } catch (error) {
      return refuse(
        log,
        fields,
        'invalid-job',
        `payload: not serializable as JSON (${(error as Error).name})`,
      )
    }
    if (body === undefined) return refuse(log, fields, 'invalid-job', 'payload: not serializable as JSON')

    const timestampS = Math.floor(clock.now() / 1000)
    const result = await client.send(
      {
        url: data.url,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': userAgent,
          'webhook-id': data.eventId,
          'webhook-timestamp': String(timestampS),
          'webhook-signature': signatureHeader(keys, data.eventId, timestampS, body),
        },
        body,
      },
      signal,
    )
    const outcome = classifyResult(result, { nowWallMs: clock.now(), ...options.retryAfter })
    logOutcome(log, fields, outcome)
    return outcome
  }
}
