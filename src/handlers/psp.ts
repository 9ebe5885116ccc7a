import { createHash } from 'node:crypto'
import { type Logger, pino } from 'pino'
import { z } from 'zod'
import { type Clock, checkMerchantKey, wallClock } from '../limiter/index.js'
import type { HttpClient, OutboundRequest } from './http.js'
import { issuesOf, logOutcome, refuse } from './log.js'
import { classifyResult } from './outcome.js'
import type { RetryAfterLimits } from './retry-after.js'
import type { DeliveryOutcome, Handler, HandlerJob } from './types.js'

const PSP_ID = /^[A-Za-z0-9_.-]{1,64}$/

/**
 * pspJobSchema is the data of a PSP call job:
 * - `pspId`: which configured PSP (letters, digits, `_.-`, at most 64);
 * - `merchantId`: the merchant the call is made for (a valid merchant key);
 * - `operation`: a label for logs and metrics (`capture`, `refund`), at most 64 characters;
 * - `method`: GET, POST (default), PUT, PATCH or DELETE;
 * - `path`: the path and query under the PSP's configured `baseUrl` (`/v1/refunds`). The job
 *   names no host: the PSP's credential goes only to the origin configured for it;
 * - `body` (optional): a JSON value, sent as the request body (not with GET);
 * - `idempotencyKey` (optional): overrides the key derived from the job id, for producers
 *   that may enqueue one operation twice.
 */
export const pspJobSchema = z.object({
  pspId: z.string().regex(PSP_ID, 'expected letters, digits and _.- (1-64)'),
  merchantId: z
    .string()
    .refine((key) => checkMerchantKey(key).ok, 'expected a merchant key: [A-Za-z0-9-_.:@/+=], 1-128'),
  operation: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'expected letters, digits and _.:- (1-64)'),
  method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']).default('POST'),
  path: z
    .string()
    .max(2048)
    .regex(/^\/(?!\/)[\x21-\x7e]*$/, "expected a path starting with one '/', printable ASCII without spaces"),
  body: z.unknown().optional(),
  idempotencyKey: z
    .string()
    .regex(/^[\x21-\x7e]{1,255}$/, 'expected printable ASCII without spaces (1-255)')
    .optional(),
})

/** PspJobData is a validated PSP job's data. */
export type PspJobData = z.infer<typeof pspJobSchema>

/** PspEndpoint is one PSP's configuration. */
export interface PspEndpoint {
  /** baseUrl is the PSP's API root (`https://api.psp.example/`); a job's path goes under it. */
  baseUrl: string
  /** authorization is the Authorization header value (`Bearer sk_…`); never logged. */
  authorization?: string
}

/** PspResponse is the answer's body as far as it was read (maxResponseBytes), as UTF-8 text. */
export interface PspResponse {
  readonly body: string
  readonly bodyComplete: boolean
  readonly contentType?: string
}

/**
 * PspOutcome is a DeliveryOutcome with the Idempotency-Key sent (absent when the job was
 * refused before sending) and, when the PSP answered, its response: the caller keeps the
 * result of a capture, or the reason a refund was declined.
 */
export type PspOutcome = DeliveryOutcome & {
  readonly idempotencyKey?: string
  readonly response?: PspResponse
}

/** PspHandlerOptions configure createPspHandler. */
export interface PspHandlerOptions {
  /** client sends the requests (SSRF guard, timeouts, limits); shared, closed by its owner. */
  client: HttpClient
  /** psps maps each pspId to its endpoint and credential. */
  psps: Readonly<Record<string, PspEndpoint>>
  /** wallClock dates a Retry-After. Default: Date.now. */
  wallClock?: Clock
  /** retryAfter bounds delays from Retry-After (default 60 s when a 429 names none, cap 1 h). */
  retryAfter?: RetryAfterLimits
  /** userAgent is sent as User-Agent. Default 'merchant-throttle-psp'. */
  userAgent?: string
  /** logger for outcomes: ids, PSP, merchant, operation, status, duration; never credentials or bodies. Default: silent. */
  logger?: Logger
}

/**
 * pspKeyOf is the limiter key of a PSP job, `${pspId}:${merchantId}`, so each merchant is
 * paced per PSP with its own rate. Undefined when the data lacks either; give it to the
 * adapters as their `keyOf` (they check the key with checkMerchantKey).
 */
export function pspKeyOf(job: { readonly data: unknown }): string | undefined {
  const data = job.data
  if (data === null || typeof data !== 'object') return undefined
  const { pspId, merchantId } = data as { pspId?: unknown; merchantId?: unknown }
  return typeof pspId === 'string' && typeof merchantId === 'string' ? `${pspId}:${merchantId}` : undefined
}

/**
 * idempotencyKeyOf derives the Idempotency-Key of a PSP call from the job: the hex SHA-256
 * of `${pspId}:${jobId}`. The job id is stable across attempts, so every retry of a call
 * carries the same key and the PSP applies the call once.
 */
export function idempotencyKeyOf(pspId: string, jobId: string): string {
  return createHash('sha256').update(`${pspId}:${jobId}`).digest('hex')
}

/**
 * createPspHandler returns the PSP call handler. Each call validates the job, builds the URL
 * from the PSP's baseUrl and the job's path (refused unless it stays on that origin), sends
 * the call with its Idempotency-Key and the PSP's credential through the client, and
 * classifies the answer as webhooks are (see classifyResult). It resolves with the outcome
 * and the response; pass it to settleOutcome for the adapters' errors.
 */
export function createPspHandler(options: PspHandlerOptions): Handler<PspOutcome> {
  if (options === null || typeof options !== 'object' || typeof options.client?.send !== 'function') {
    throw new TypeError(
      `createPspHandler: expected options with an HttpClient as client, got ${String(options)}`,
    )
  }
  const endpoints = checkEndpoints(options.psps)
  const { client } = options
  const clock = options.wallClock ?? wallClock
  const userAgent = options.userAgent ?? 'merchant-throttle-psp'
  const log = (options.logger ?? pino({ level: 'silent' })).child({ component: 'psp' })

  return async function callPsp(job: HandlerJob, signal?: AbortSignal): Promise<PspOutcome> {
    const fields: Record<string, unknown> = { jobId: job.id, attempt: job.attempt }
    const parsed = pspJobSchema.safeParse(job.data)
    if (!parsed.success) return refuse(log, fields, 'invalid-job', issuesOf(parsed.error.issues))
    const data = parsed.data
    Object.assign(fields, { pspId: data.pspId, merchantId: data.merchantId, operation: data.operation })
    const endpoint = endpoints.get(data.pspId)
    if (endpoint === undefined)
      return refuse(log, fields, 'unknown-psp', `no PSP '${data.pspId}' is configured`)

    const url = new URL(`${endpoint.base}${data.path}`)
    if (url.origin !== endpoint.origin) {
      return refuse(log, fields, 'invalid-job', 'path: leaves the PSP origin')
    }
    if (data.method === 'GET' && data.body !== undefined) {
      return refuse(log, fields, 'invalid-job', 'body: not sent with GET')
    }
    let body: string | undefined
    if (data.body !== undefined) {
      try {
        body = JSON.stringify(data.body)
      } catch (error) {
        return refuse(log, fields, 'invalid-job', `body: not serializable as JSON (${(error as Error).name})`)
      }
    }

    const idempotencyKey = data.idempotencyKey ?? idempotencyKeyOf(data.pspId, job.id)
    fields.idempotencyKey = idempotencyKey
    const headers: Record<string, string> = {
      accept: 'application/json',
      'user-agent': userAgent,
      'idempotency-key': idempotencyKey,
    }
    if (body !== undefined) headers['content-type'] = 'application/json'
    if (endpoint.authorization !== undefined) headers.authorization = endpoint.authorization
    const outbound: OutboundRequest = {
      url: url.href,
      method: data.method,
      headers,
      ...(body === undefined ? {} : { body }),
    }

    const result = await client.send(outbound, signal)
    const outcome = classifyResult(result, { nowWallMs: clock.now(), ...options.retryAfter })
    logOutcome(log, fields, outcome)
    if (result.kind !== 'response') return { ...outcome, idempotencyKey }
    const contentType = result.headers['content-type']
    const response: PspResponse = {
      body: result.body.toString('utf8'),
      bodyComplete: result.bodyComplete,
      ...(typeof contentType === 'string' ? { contentType } : {}),
    }
    return { ...outcome, idempotencyKey, response }
  }
}

interface CheckedEndpoint {
  /** base is the baseUrl without its trailing slash, so `${base}${path}` keeps its path. */
  base: string
  origin: string
  authorization: string | undefined
}

function checkEndpoints(psps: unknown): Map<string, CheckedEndpoint> {
  if (psps === null || typeof psps !== 'object') {
    throw new TypeError(
      `createPspHandler: expected psps to be an object of PSP endpoints, got ${String(psps)}`,
    )
  }
  const endpoints = new Map<string, CheckedEndpoint>()
  for (const [pspId, endpoint] of Object.entries(psps as Record<string, PspEndpoint>)) {
    if (!PSP_ID.test(pspId)) {
      throw new TypeError(
        `createPspHandler: expected PSP ids of letters, digits and _.- (1-64), got '${pspId}'`,
      )
    }
    let url: URL
    try {
      url = new URL(endpoint?.baseUrl)
    } catch {
      throw new TypeError(
        `createPspHandler: expected psps.${pspId}.baseUrl to be a URL, got ${String(endpoint?.baseUrl)}`,
      )
    }
    if (
      (url.protocol !== 'https:' && url.protocol !== 'http:') ||
      url.username !== '' ||
      url.password !== ''
    ) {
      throw new TypeError(
        `createPspHandler: expected psps.${pspId}.baseUrl to be http(s) without credentials, got ${url.protocol}`,
      )
    }
    if (url.search !== '' || url.hash !== '') {
      throw new TypeError(
        `createPspHandler: expected psps.${pspId}.baseUrl without query or fragment, got ${url.origin}${url.pathname}…`,
      )
    }
    const authorization = endpoint.authorization
    if (
      authorization !== undefined &&
      (typeof authorization !== 'string' || !/^[\x20-\x7e]+$/.test(authorization))
    ) {
      // The value is a credential: say what is wrong with it, never what it is.
      throw new TypeError(
        `createPspHandler: expected psps.${pspId}.authorization to be a printable ASCII string`,
      )
    }
    const base = url.href.endsWith('/') ? url.href.slice(0, -1) : url.href
    endpoints.set(pspId, { base, origin: url.origin, authorization })
  }
  return endpoints
}
