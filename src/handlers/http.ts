import type { IncomingHttpHeaders } from 'node:http'
import { Agent, errors, request } from 'undici'
import { type Clock, monotonicClock } from '../limiter/index.js'
import { TargetGuard, type TargetGuardOptions, type TargetRefusal, TargetRefusedError } from './ssrf.js'
import type { RetryableReason } from './types.js'

/** DEFAULT_CONNECT_TIMEOUT_MS bounds the TCP (and TLS) connect of one request, in ms. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000
/** DEFAULT_TIMEOUT_MS bounds one request from sending to the last byte read, in ms. */
export const DEFAULT_TIMEOUT_MS = 10_000
/** DEFAULT_MAX_RESPONSE_BYTES is how much of a response body is read; the rest is discarded. */
export const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
/** DEFAULT_MAX_HEADER_BYTES caps a response's header section, in bytes. */
export const DEFAULT_MAX_HEADER_BYTES = 16 * 1024
/** DEFAULT_KEEP_ALIVE_TIMEOUT_MS is how long an idle connection is kept for reuse, in ms. */
export const DEFAULT_KEEP_ALIVE_TIMEOUT_MS = 4_000
/** DEFAULT_CONNECTIONS_PER_ORIGIN bounds the sockets open to one origin. */
export const DEFAULT_CONNECTIONS_PER_ORIGIN = 16

/** HttpClientOptions configure an HttpClient; the guard options decide which targets may be reached. */
export interface HttpClientOptions extends TargetGuardOptions {
  /** connectTimeoutMs bounds the TCP and TLS connect, in ms. Default 5000. */
  connectTimeoutMs?: number
  /** timeoutMs bounds the whole request, a slow or endless body included, in ms. Default 10000. */
  timeoutMs?: number
  /** maxResponseBytes of a body are kept; past them the connection is closed. Default 65536; 0 reads none. */
  maxResponseBytes?: number
  /** maxHeaderBytes caps the response headers; more is a `protocol-error`. Default 16384. */
  maxHeaderBytes?: number
  /** keepAliveTimeoutMs keeps idle connections for reuse this long, in ms. Default 4000. */
  keepAliveTimeoutMs?: number
  /** connectionsPerOrigin bounds the sockets to one origin. Default 16. */
  connectionsPerOrigin?: number
  /**
   * ca replaces Node's bundled root certificates with these PEM certificates (a private PSP
   * CA, a test CA). Default: Node's bundled roots. Certificates are always verified against
   * the URL's host name, which is also sent as SNI.
   */
  ca?: string | Buffer | ReadonlyArray<string | Buffer>
  /** clock measures durations. Default: monotonicClock. */
  clock?: Clock
}

/** OutboundRequest is one request: the URL is checked by the guard before anything is sent. */
export interface OutboundRequest {
  readonly url: string
  readonly method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'
  readonly headers: Readonly<Record<string, string>>
  readonly body?: string
}

/** HttpResponse: the far side answered; the body is at most maxResponseBytes long. */
export interface HttpResponse {
  readonly kind: 'response'
  readonly status: number
  readonly headers: IncomingHttpHeaders
  readonly body: Buffer
  /** bodyComplete is false when the body passed the cap, the timeout ended it, or the connection broke. */
  readonly bodyComplete: boolean
  /** redirectRefusal is set on a 3xx whose Location the guard refuses (it is never followed). */
  readonly redirectRefusal?: TargetRefusal
  readonly durationMs: number
}

/** HttpRefused: the guard refused the target; nothing was sent, no connection was opened. */
export interface HttpRefused {
  readonly kind: 'refused'
  readonly refusal: TargetRefusal
  readonly durationMs: number
}

/** HttpFailed: no answer (timeout, connection or protocol error, or the caller aborted). */
export interface HttpFailed {
  readonly kind: 'failed'
  readonly reason: RetryableReason
  /** message is the error's message, for logs; it never holds request headers or bodies. */
  readonly message: string
  readonly durationMs: number
}

/** HttpResult is how a request ended. HttpClient.send never rejects for what the network does. */
export type HttpResult = HttpResponse | HttpRefused | HttpFailed

/**
 * HttpClient sends outbound requests through the SSRF guard on one keep-alive undici Agent.
 * Redirects are not followed. Each request is bounded: connect timeout, total timeout (the
 * body included, so an endless body ends), body read up to a cap then the socket closed,
 * headers capped. One client serves every handler of a process; close it on shutdown.
 */
export class HttpClient {
  /** guard decides which targets may be reached. */
  readonly guard: TargetGuard
  private readonly agent: Agent
  private readonly timeoutMs: number
  private readonly maxResponseBytes: number
  private readonly clock: Clock

  constructor(options: HttpClientOptions = {}) {
    const connectTimeoutMs = positiveInteger(
      'connectTimeoutMs',
      options.connectTimeoutMs,
      DEFAULT_CONNECT_TIMEOUT_MS,
    )
    this.timeoutMs = positiveInteger('timeoutMs', options.timeoutMs, DEFAULT_TIMEOUT_MS)
    this.maxResponseBytes = nonNegativeInteger(
      'maxResponseBytes',
      options.maxResponseBytes,
      DEFAULT_MAX_RESPONSE_BYTES,
    )
    const maxHeaderBytes = positiveInteger('maxHeaderBytes', options.maxHeaderBytes, DEFAULT_MAX_HEADER_BYTES)
    const keepAliveTimeoutMs = positiveInteger(
      'keepAliveTimeoutMs',
      options.keepAliveTimeoutMs,
      DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
    )
    const connections = positiveInteger(
      'connectionsPerOrigin',
      options.connectionsPerOrigin,
      DEFAULT_CONNECTIONS_PER_ORIGIN,
    )
    this.clock = options.clock ?? monotonicClock
    this.guard = new TargetGuard(options)
    // No redirect interceptor is composed, so a 3xx comes back as a response.
    this.agent = new Agent({
      connect: {
        timeout: connectTimeoutMs,
        lookup: this.guard.lookup,
        ...(options.ca === undefined ? {} : { ca: options.ca as string | Buffer | Array<string | Buffer> }),
      },
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      maxHeaderSize: maxHeaderBytes,
      keepAliveTimeout: keepAliveTimeoutMs,
      connections,
    })
  }

  /**
   * send checks the target, sends `outbound` and reads the response within the total
   * timeout. It resolves with a result for every refusal, answer or failure; `signal`
   * aborts it (the result is then `failed` with reason `aborted`).
   */
  async send(outbound: OutboundRequest, signal?: AbortSignal): Promise<HttpResult> {
    const startedMs = this.clock.now()
    const elapsed = () => this.clock.now() - startedMs
    const checked = this.guard.checkUrl(outbound.url)
    if (!checked.ok) return { kind: 'refused', refusal: checked.refusal, durationMs: elapsed() }
    if (signal?.aborted) {
      return { kind: 'failed', reason: 'aborted', message: 'aborted before sending', durationMs: elapsed() }
    }

    const deadline = new AbortController()
    const timer = setTimeout(
      () => deadline.abort(new Error(`timed out after ${this.timeoutMs} ms`)),
      this.timeoutMs,
    )
    const onAbort = () => deadline.abort(signal?.reason)
    signal?.addEventListener('abort', onAbort, { once: true })
    const failureReason = (error: unknown): RetryableReason => {
      if (signal?.aborted) return 'aborted'
      if (deadline.signal.aborted) return 'timeout'
      return reasonOf(error)
    }
    try {
      let response: Awaited<ReturnType<typeof request>>
      try {
        response = await request(checked.url, {
          dispatcher: this.agent,
          method: outbound.method,
          headers: outbound.headers,
          body: outbound.body,
          signal: deadline.signal,
        })
      } catch (error) {
        if (error instanceof TargetRefusedError) {
          return { kind: 'refused', refusal: error.refusal, durationMs: elapsed() }
        }
        return {
          kind: 'failed',
          reason: failureReason(error),
          message: messageOf(error),
          durationMs: elapsed(),
        }
      }
      const { body, complete } = await this.readCapped(response.body)
      const status = response.statusCode
      const location = response.headers.location
      const redirectRefusal =
        status >= 300 && status < 400 && typeof location === 'string'
          ? await this.refusalOfRedirect(location, checked.url)
          : undefined
      return {
        kind: 'response',
        status,
        headers: response.headers,
        body,
        bodyComplete: complete,
        ...(redirectRefusal === undefined ? {} : { redirectRefusal }),
        durationMs: elapsed(),
      }
    } finally {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /** close closes idle connections and waits for requests in flight. */
  async close(): Promise<void> {
    await this.agent.close()
  }

  /**
   * readCapped keeps the first maxResponseBytes of `stream`. Past the cap, or when the
   * deadline or the connection ends the read, the stream is destroyed, which closes the
   * socket instead of draining an unbounded body into a pooled connection.
   */
  private async readCapped(stream: AsyncIterable<Buffer> & { destroy(): void }) {
    const chunks: Buffer[] = []
    let size = 0
    let complete = true
    try {
      for await (const chunk of stream) {
        const room = this.maxResponseBytes - size
        if (chunk.length > room) {
          if (room > 0) chunks.push(chunk.subarray(0, room))
          size += room
          complete = false
          break
        }
        chunks.push(chunk)
        size += chunk.length
      }
    } catch {
      // The status and headers are in: a body cut short by the deadline or a reset is kept as read.
      complete = false
    }
    if (!complete) stream.destroy()
    return { body: Buffer.concat(chunks, size), complete }
  }

  /** refusalOfRedirect checks where a 3xx points, without connecting, so the outcome can say ssrf-blocked. */
  private async refusalOfRedirect(location: string, base: URL): Promise<TargetRefusal | undefined> {
    let target: string
    try {
      target = new URL(location, base).href
    } catch {
      return { reason: 'invalid-url', host: '' }
    }
    try {
      return await this.guard.checkTarget(target)
    } catch {
      // A redirect target that does not resolve cannot be classified: the 3xx stays a plain redirect.
      return undefined
    }
  }
}

function reasonOf(error: unknown): RetryableReason {
  if (
    error instanceof errors.ConnectTimeoutError ||
    error instanceof errors.HeadersTimeoutError ||
    error instanceof errors.BodyTimeoutError
  ) {
    return 'timeout'
  }
  if (
    error instanceof errors.HeadersOverflowError ||
    error instanceof errors.HTTPParserError ||
    error instanceof errors.ResponseContentLengthMismatchError
  ) {
    return 'protocol-error'
  }
  return 'connection-error'
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

function positiveInteger(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new TypeError(`HttpClient: expected ${name} to be an integer above 0, got ${String(value)}`)
  }
  return value
}

function nonNegativeInteger(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new TypeError(`HttpClient: expected ${name} to be an integer >= 0, got ${String(value)}`)
  }
  return value
}
