import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createPspHandler,
  HttpClient,
  idempotencyKeyOf,
  type PspOutcome,
  pspKeyOf,
} from '../../src/handlers/index.js'
import { checkMerchantKey } from '../../src/limiter/index.js'
import { capturedLogger, startServer, type TestServer } from './support.js'

// The PSP is a local server on 127.0.0.1 (allowlisted); 127.0.0.2 plays an internal host.

const CREDENTIAL = 'Bearer sk_test_do-not-log-me-4242'
let psp: TestServer
let internal: TestServer
let client: HttpClient
let failuresLeft = 0

beforeAll(async () => {
  internal = await startServer('127.0.0.2')
  psp = await startServer('127.0.0.1', (request, response, body) => {
    if (request.url === '/api/v1/captures') {
      if (failuresLeft > 0) {
        failuresLeft--
        response.writeHead(500)
        return void response.end()
      }
      response.writeHead(200, { 'content-type': 'application/json' })
      return void response.end(JSON.stringify({ id: 'cap_1', echoed: JSON.parse(body || 'null') }))
    }
    if (request.url === '/api/v1/refunds') {
      response.writeHead(402, { 'content-type': 'application/json' })
      return void response.end('{"error":"card_declined"}')
    }
    if (request.url?.startsWith('/api/v1/status')) return void response.end('up')
    response.writeHead(404)
    response.end()
  })
  client = new HttpClient({ allowHosts: ['127.0.0.1'], httpsOnly: false, timeoutMs: 1_000 })
})

afterAll(async () => {
  await client.close()
  await psp.close()
  await internal.close()
})

function handlerWith(logger?: import('pino').Logger) {
  return createPspHandler({
    client,
    psps: {
      acme: { baseUrl: `${psp.origin}/api/`, authorization: CREDENTIAL },
      internal: { baseUrl: `${internal.origin}/` },
    },
    ...(logger === undefined ? {} : { logger }),
  })
}

const captureData = {
  pspId: 'acme',
  merchantId: 'm_1',
  operation: 'capture',
  path: '/v1/captures',
  body: { amount: 1200, currency: 'EUR', note: 'body-marker-xyz' },
}

describe('PSP calls', () => {
  it('POSTs the body under the base URL with the credential and an Idempotency-Key, and returns the response', async () => {
    const outcome = await handlerWith()({ id: 'job-42', attempt: 1, data: captureData })
    expect(outcome).toMatchObject({
      kind: 'delivered',
      status: 200,
      idempotencyKey: idempotencyKeyOf('acme', 'job-42'),
    })
    expect(JSON.parse(outcome.response?.body ?? '')).toEqual({ id: 'cap_1', echoed: captureData.body })
    const request = psp.requests.at(-1)
    expect(request?.path).toBe('/api/v1/captures')
    expect(request?.headers.authorization).toBe(CREDENTIAL)
    expect(request?.headers['idempotency-key']).toBe(idempotencyKeyOf('acme', 'job-42'))
  })

  it('sends the same Idempotency-Key on every attempt of a job, and another for another job', async () => {
    failuresLeft = 2
    const handler = handlerWith()
    const outcomes: PspOutcome[] = []
    for (const attempt of [1, 2, 3])
      outcomes.push(await handler({ id: 'job-retried', attempt, data: captureData }))
    expect(outcomes.map((outcome) => outcome.kind)).toEqual(['retryable', 'retryable', 'delivered'])
    const keys = psp.requests.slice(-3).map((request) => request.headers['idempotency-key'])
    expect(new Set(keys)).toEqual(new Set([idempotencyKeyOf('acme', 'job-retried')]))
    await handler({ id: 'job-other', attempt: 1, data: captureData })
    expect(psp.requests.at(-1)?.headers['idempotency-key']).not.toBe(keys[0])
  })

  it("uses the job's own idempotencyKey when it carries one", async () => {
    await handlerWith()({
      id: 'job-7',
      attempt: 1,
      data: { ...captureData, idempotencyKey: 'order-991-capture' },
    })
    expect(psp.requests.at(-1)?.headers['idempotency-key']).toBe('order-991-capture')
  })

  it('a 402 decline is permanent and keeps the PSP’s answer for the caller', async () => {
    const outcome = await handlerWith()({
      id: 'job-refund',
      attempt: 1,
      data: { ...captureData, operation: 'refund', path: '/v1/refunds' },
    })
    expect(outcome).toMatchObject({ kind: 'permanent', reason: 'client-error', status: 402 })
    expect(outcome.response?.body).toBe('{"error":"card_declined"}')
  })

  it('GET sends no body', async () => {
    const outcome = await handlerWith()({
      id: 'job-status',
      attempt: 1,
      data: { pspId: 'acme', merchantId: 'm_1', operation: 'status', method: 'GET', path: '/v1/status?x=1' },
    })
    expect(outcome).toMatchObject({ kind: 'delivered', response: { body: 'up' } })
    expect(psp.requests.at(-1)).toMatchObject({ method: 'GET', path: '/api/v1/status?x=1', body: '' })
  })

  it('a PSP configured at an internal address is refused by the guard', async () => {
    const outcome = await handlerWith()({
      id: 'job-i',
      attempt: 1,
      data: { ...captureData, pspId: 'internal' },
    })
    expect(outcome).toMatchObject({ kind: 'permanent', reason: 'ssrf-blocked', address: '127.0.0.2' })
    expect(internal.connections()).toBe(0)
  })

  it.each([
    [{ pspId: 'nope' }, 'unknown-psp'],
    [{ path: '//evil.test/x' }, 'invalid-job'], // would change the host
    [{ path: 'v1/captures' }, 'invalid-job'],
    [{ method: 'TRACE' }, 'invalid-job'],
    [{ method: 'GET' }, 'invalid-job'], // a GET with a body
    [{ pspId: 'a:b' }, 'invalid-job'],
  ])('refuses %j before sending (%s)', async (change, reason) => {
    const before = psp.requests.length
    const outcome = await handlerWith()({ id: 'job-bad', attempt: 1, data: { ...captureData, ...change } })
    expect(outcome).toMatchObject({ kind: 'permanent', reason })
    expect(psp.requests.length).toBe(before)
  })

  it('logs ids, PSP, merchant, operation and status, never the credential or a body', async () => {
    const { logger, text } = capturedLogger()
    failuresLeft = 1
    const handler = handlerWith(logger)
    await handler({ id: 'job-log', attempt: 1, data: captureData })
    await handler({ id: 'job-log', attempt: 2, data: captureData })
    await handler({ id: 'job-log-2', attempt: 1, data: { ...captureData, path: '/v1/refunds' } })
    const logs = text()
    expect(logs).toContain('"pspId":"acme"')
    expect(logs).toContain('"operation":"capture"')
    expect(logs).toContain('"status":402')
    for (const value of [
      CREDENTIAL,
      'sk_test_do-not-log-me-4242',
      'body-marker-xyz',
      'card_declined',
      'cap_1',
    ]) {
      expect(logs).not.toContain(value)
    }
  })

  it('refuses a bad configuration with a TypeError that does not repeat the credential', () => {
    expect(() => createPspHandler({ client, psps: { acme: { baseUrl: 'ftp://psp.example/' } } })).toThrow(
      TypeError,
    )
    expect(() => createPspHandler({ client, psps: { 'a:b': { baseUrl: 'https://psp.example/' } } })).toThrow(
      TypeError,
    )
    const bad = 'Bearer sk_live\nInjected: yes'
    expect(() =>
      createPspHandler({ client, psps: { acme: { baseUrl: 'https://psp.example/', authorization: bad } } }),
    ).toThrow(/^(?!.*sk_live).*authorization/)
  })
})

describe('pspKeyOf and idempotencyKeyOf', () => {
  it('keys a job by PSP and merchant, a key the limiter accepts', () => {
    const key = pspKeyOf({ data: captureData })
    expect(key).toBe('acme:m_1')
    expect(checkMerchantKey(key)).toEqual({ ok: true, key: 'acme:m_1' })
    expect(pspKeyOf({ data: { merchantId: 'm_1' } })).toBeUndefined()
    expect(pspKeyOf({ data: null })).toBeUndefined()
  })

  it('derives a stable key from PSP and job id', () => {
    expect(idempotencyKeyOf('acme', 'job-1')).toBe(idempotencyKeyOf('acme', 'job-1'))
    expect(idempotencyKeyOf('acme', 'job-1')).not.toBe(idempotencyKeyOf('acme', 'job-2'))
    expect(idempotencyKeyOf('acme', 'job-1')).not.toBe(idempotencyKeyOf('other', 'job-1'))
    expect(idempotencyKeyOf('acme', 'job-1')).toMatch(/^[0-9a-f]{64}$/)
  })
})
