import { describe, expect, it } from 'vitest'
import { PermanentFailureError, RetryableFailureError, RetryLaterError } from '../../src/errors.js'
import {
  classifyResult,
  type DeliveryOutcome,
  type HttpResponse,
  type HttpResult,
  settleOutcome,
} from '../../src/handlers/index.js'

const NOW_MS = Date.UTC(2026, 0, 15, 12, 0, 0)

function response(
  status: number,
  headers: Record<string, string> = {},
  extra: Partial<HttpResponse> = {},
): HttpResult {
  return {
    kind: 'response',
    status,
    headers,
    body: Buffer.alloc(0),
    bodyComplete: true,
    durationMs: 12,
    ...extra,
  }
}

describe('classifyResult', () => {
  const classify = (result: HttpResult) => classifyResult(result, { nowWallMs: NOW_MS })
  // [what, result, expected outcome (partial)]
  const table: [string, HttpResult, Partial<DeliveryOutcome> & Record<string, unknown>][] = [
    ['200', response(200), { kind: 'delivered', status: 200 }],
    ['204', response(204), { kind: 'delivered', status: 204 }],
    [
      '429 Retry-After seconds',
      response(429, { 'retry-after': '7' }),
      { kind: 'retry-later', retryAfterMs: 7_000 },
    ],
    [
      '429 Retry-After date',
      response(429, { 'retry-after': 'Thu, 15 Jan 2026 12:00:30 GMT' }),
      { kind: 'retry-later', retryAfterMs: 30_000 },
    ],
    ['429 without Retry-After: the default', response(429), { kind: 'retry-later', retryAfterMs: 60_000 }],
    [
      '429 unreadable Retry-After: the default',
      response(429, { 'retry-after': 'soon' }),
      { retryAfterMs: 60_000 },
    ],
    ['429 a day: capped at an hour', response(429, { 'retry-after': '86400' }), { retryAfterMs: 3_600_000 }],
    [
      '503 Retry-After',
      response(503, { 'retry-after': '2' }),
      { kind: 'retry-later', status: 503, retryAfterMs: 2_000 },
    ],
    ['503 without Retry-After', response(503), { kind: 'retryable', reason: 'server-error', status: 503 }],
    ['500', response(500), { kind: 'retryable', reason: 'server-error', status: 500 }],
    ['502', response(502), { kind: 'retryable', reason: 'server-error', status: 502 }],
    ['500 with Retry-After is still a 5xx', response(500, { 'retry-after': '5' }), { kind: 'retryable' }],
    ['400', response(400), { kind: 'permanent', reason: 'client-error', status: 400 }],
    ['404', response(404), { kind: 'permanent', reason: 'client-error', status: 404 }],
    ['410 Gone', response(410), { kind: 'permanent', reason: 'client-error', status: 410 }],
    [
      '301',
      response(301, { location: 'https://elsewhere.example/' }),
      { kind: 'permanent', reason: 'redirect' },
    ],
    [
      '302 to a refused address',
      response(302, {}, { redirectRefusal: { reason: 'loopback', host: '127.0.0.4', address: '127.0.0.4' } }),
      { kind: 'permanent', reason: 'ssrf-blocked', status: 302, address: '127.0.0.4' },
    ],
    [
      'refused by the guard',
      {
        kind: 'refused',
        refusal: { reason: 'link-local', host: '169.254.169.254', address: '169.254.169.254' },
        durationMs: 0,
      },
      { kind: 'permanent', reason: 'ssrf-blocked', address: '169.254.169.254' },
    ],
    [
      'refused scheme',
      { kind: 'refused', refusal: { reason: 'scheme-not-allowed', host: '' }, durationMs: 0 },
      { kind: 'permanent', reason: 'ssrf-blocked' },
    ],
    [
      'timeout',
      { kind: 'failed', reason: 'timeout', message: 'x', durationMs: 500 },
      { kind: 'retryable', reason: 'timeout' },
    ],
    [
      'connection refused',
      { kind: 'failed', reason: 'connection-error', message: 'x', durationMs: 1 },
      { kind: 'retryable', reason: 'connection-error' },
    ],
  ]
  it.each(table)('%s', (_what, result, expected) => {
    expect(classify(result)).toMatchObject(expected)
  })

  it('takes the default and the cap from the options', () => {
    const options = { nowWallMs: NOW_MS, defaultMs: 5_000, maxMs: 10_000 }
    expect(classifyResult(response(429), options)).toMatchObject({ retryAfterMs: 5_000 })
    expect(classifyResult(response(429, { 'retry-after': '60' }), options)).toMatchObject({
      retryAfterMs: 10_000,
    })
  })
})

describe('settleOutcome', () => {
  it('returns a delivered outcome', () => {
    const delivered = { kind: 'delivered', status: 200, durationMs: 3 } as const
    expect(settleOutcome(delivered)).toBe(delivered)
  })

  it('throws RetryLaterError carrying the delay for retry-later', () => {
    const error = catchOf(() =>
      settleOutcome({ kind: 'retry-later', status: 429, retryAfterMs: 7_000, durationMs: 3 }),
    )
    expect(error).toBeInstanceOf(RetryLaterError)
    expect((error as RetryLaterError).retryAfterMs).toBe(7_000)
  })

  it('throws RetryableFailureError with reason and status for retryable', () => {
    const error = catchOf(() =>
      settleOutcome({ kind: 'retryable', reason: 'server-error', status: 500, durationMs: 3 }),
    )
    expect(error).toBeInstanceOf(RetryableFailureError)
    expect(error).toMatchObject({ reason: 'server-error', status: 500, message: 'server-error (HTTP 500)' })
  })

  it('throws PermanentFailureError with the reason and the refused address in the message', () => {
    const error = catchOf(() =>
      settleOutcome({
        kind: 'permanent',
        reason: 'ssrf-blocked',
        address: '127.0.0.2',
        detail: 'target 127.0.0.2 refused: loopback',
        durationMs: 0,
      }),
    )
    expect(error).toBeInstanceOf(PermanentFailureError)
    expect(error).toMatchObject({
      reason: 'ssrf-blocked',
      message: 'ssrf-blocked: target 127.0.0.2 refused: loopback',
    })
  })
})

function catchOf(run: () => unknown): unknown {
  try {
    run()
  } catch (error) {
    return error
  }
  throw new Error('expected a throw')
}
