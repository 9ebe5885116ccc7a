import { randomBytes } from 'node:crypto'
import { Webhook } from 'standardwebhooks'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PermanentFailureError, RetryableFailureError, RetryLaterError } from '../../src/errors.js'
import {
  createWebhookHandler,
  type DeliveryOutcome,
  HttpClient,
  type SigningSecrets,
  settleOutcome,
} from '../../src/handlers/index.js'
import { FakeClock } from '../../src/limiter/index.js'
import { capturedLogger, closedPort, startServer, type TestServer, testResolver } from './support.js'

// Merchants are local servers on 127.0.0.1 (allowlisted); 127.0.0.2 and .3 play internal hosts.

const TIMEOUT_MS = 500
const secretOf = () => `whsec_${randomBytes(32).toString('base64')}`
const CURRENT = secretOf()
const PREVIOUS = secretOf()
const OTHER = secretOf()

let merchant: TestServer
let internal: TestServer
let client: HttpClient
let retryAfterDate = ''

beforeAll(async () => {
  internal = await startServer('127.0.0.2')
  merchant = await startServer('127.0.0.1', (request, response) => {
    switch (request.url) {
      case '/ok':
        return void response.end('thanks')
      case '/429-seconds':
        response.writeHead(429, { 'retry-after': '7' })
        return void response.end()
      case '/429-date':
        response.writeHead(429, { 'retry-after': retryAfterDate })
        return void response.end()
      case '/429-bare':
        response.writeHead(429)
        return void response.end()
      case '/503-retry-after':
        response.writeHead(503, { 'retry-after': '3' })
        return void response.end()
      case '/500':
        response.writeHead(500)
        return void response.end('database down')
      case '/410':
        response.writeHead(410)
        return void response.end('endpoint removed')
      case '/moved':
        response.writeHead(301, { location: `${internal.origin}/hook` })
        return void response.end()
      case '/silent':
        return
      default:
        response.writeHead(404)
        response.end()
    }
  })
  client = new HttpClient({
    allowHosts: ['127.0.0.1'],
    httpsOnly: false,
    timeoutMs: TIMEOUT_MS,
    resolve: testResolver({ 'internal.test': ['127.0.0.3'] }),
  })
})

afterAll(async () => {
  await client.close()
  await merchant.close()
  await internal.close()
})

const secrets: Record<string, SigningSecrets> = {
  m_plain: CURRENT,
  m_rotating: { current: CURRENT, previous: { secret: PREVIOUS, expiresAtWallMs: Date.now() + 3_600_000 } },
  m_rotated: { current: CURRENT, previous: { secret: PREVIOUS, expiresAtWallMs: Date.now() - 1 } },
  m_bad: 'whsec_tooshort',
}

function handlerWith(options: { wallClock?: FakeClock; logger?: import('pino').Logger } = {}) {
  return createWebhookHandler({ client, secretFor: (merchantId) => secrets[merchantId], ...options })
}

let jobSeq = 0
function job(path: string, data: Record<string, unknown> = {}, attempt = 1) {
  jobSeq++
  return {
    id: `job-${jobSeq}`,
    attempt,
    data: {
      merchantId: 'm_plain',
      eventId: `evt_${jobSeq}`,
      url: `${merchant.origin}${path}`,
      payload: { type: 'payment.succeeded', amount: 1200, marker: `payload-marker-${jobSeq}` },
      ...data,
    },
  }
}

function lastRequest() {
  const request = merchant.requests.at(-1)
  if (request === undefined) throw new Error('the merchant received nothing')
  return request
}

function headersOf(request: ReturnType<typeof lastRequest>): Record<string, string> {
  return Object.fromEntries(Object.entries(request.headers).map(([name, value]) => [name, String(value)]))
}

describe('webhook delivery', () => {
  it('POSTs the JSON payload with Standard Webhooks headers that standardwebhooks verifies', async () => {
    const outcome = await handlerWith()(job('/ok'))
    expect(outcome).toMatchObject({ kind: 'delivered', status: 200 })
    const request = lastRequest()
    expect(request.method).toBe('POST')
    expect(request.headers['content-type']).toBe('application/json')
    expect(request.headers['webhook-id']).toBe(`evt_${jobSeq}`)
    expect(new Webhook(CURRENT).verify(request.body, headersOf(request))).toMatchObject({
      type: 'payment.succeeded',
      amount: 1200,
    })
    expect(() => new Webhook(OTHER).verify(request.body, headersOf(request))).toThrow()
  })

  it('keeps webhook-id across attempts while the timestamp is each attempt’s own', async () => {
    const wallClock = new FakeClock(Math.floor(Date.now() / 1000) * 1000)
    const handler = handlerWith({ wallClock })
    const first = job('/ok', { eventId: 'evt_stable' }, 1)
    await handler(first)
    const one = lastRequest()
    wallClock.advance(5_000)
    await handler({ ...first, attempt: 2 })
    const two = lastRequest()
    expect(one.headers['webhook-id']).toBe('evt_stable')
    expect(two.headers['webhook-id']).toBe('evt_stable')
    expect(Number(two.headers['webhook-timestamp']) - Number(one.headers['webhook-timestamp'])).toBe(5)
    expect(new Webhook(CURRENT).verify(two.body, headersOf(two))).toBeDefined()
  })

  it('signs with both secrets during a rotation’s grace period, and with the current one after it', async () => {
    const handler = handlerWith()
    await handler(job('/ok', { merchantId: 'm_rotating' }))
    const during = lastRequest()
    expect(String(during.headers['webhook-signature']).split(' ')).toHaveLength(2)
    expect(new Webhook(CURRENT).verify(during.body, headersOf(during))).toBeDefined()
    expect(new Webhook(PREVIOUS).verify(during.body, headersOf(during))).toBeDefined()

    await handler(job('/ok', { merchantId: 'm_rotated' }))
    const after = lastRequest()
    expect(String(after.headers['webhook-signature']).split(' ')).toHaveLength(1)
    expect(() => new Webhook(PREVIOUS).verify(after.body, headersOf(after))).toThrow()
  })

  it("signs with the job's own secret over the configured one", async () => {
    await handlerWith()(job('/ok', { secret: OTHER }))
    const request = lastRequest()
    expect(new Webhook(OTHER).verify(request.body, headersOf(request))).toBeDefined()
  })
})

describe('webhook outcomes', () => {
  it('429 with Retry-After in seconds: RetryLaterError of 7000 ms', async () => {
    const outcome = await handlerWith()(job('/429-seconds'))
    expect(outcome).toMatchObject({ kind: 'retry-later', status: 429, retryAfterMs: 7_000 })
    expect(() => settleOutcome(outcome)).toThrow(RetryLaterError)
    expect(errorOf(outcome)).toMatchObject({ retryAfterMs: 7_000 })
  })

  it('429 with Retry-After as an HTTP date: the time until that date', async () => {
    const wallClock = new FakeClock(Math.floor(Date.now() / 1000) * 1000)
    retryAfterDate = new Date(wallClock.now() + 90_000).toUTCString()
    const outcome = await handlerWith({ wallClock })(job('/429-date'))
    expect(outcome).toMatchObject({ kind: 'retry-later', retryAfterMs: 90_000 })
    expect(errorOf(outcome)).toBeInstanceOf(RetryLaterError)
  })

  it('429 without Retry-After: the default delay', async () => {
    expect(await handlerWith()(job('/429-bare'))).toMatchObject({ kind: 'retry-later', retryAfterMs: 60_000 })
  })

  it('503 with Retry-After: retry later', async () => {
    expect(await handlerWith()(job('/503-retry-after'))).toMatchObject({
      kind: 'retry-later',
      retryAfterMs: 3_000,
    })
  })

  it('500: retryable', async () => {
    const outcome = await handlerWith()(job('/500'))
    expect(outcome).toMatchObject({ kind: 'retryable', reason: 'server-error', status: 500 })
    expect(errorOf(outcome)).toBeInstanceOf(RetryableFailureError)
  })

  it('410: permanent, with the status', async () => {
    const outcome = await handlerWith()(job('/410'))
    expect(outcome).toMatchObject({ kind: 'permanent', reason: 'client-error', status: 410 })
    expect(errorOf(outcome)).toMatchObject({ reason: 'client-error', message: 'client-error (HTTP 410)' })
  })

  it('a server that never answers: retryable timeout', async () => {
    const outcome = await handlerWith()(job('/silent'))
    expect(outcome).toMatchObject({ kind: 'retryable', reason: 'timeout' })
  })

  it('connection refused on a closed port: retryable connection-error', async () => {
    const port = await closedPort()
    const outcome = await handlerWith()(job('/', { url: `http://127.0.0.1:${port}/hook` }))
    expect(outcome).toMatchObject({ kind: 'retryable', reason: 'connection-error' })
  })

  it('a redirect to an internal address: permanent ssrf-blocked, not followed', async () => {
    const outcome = await handlerWith()(job('/moved'))
    expect(outcome).toMatchObject({
      kind: 'permanent',
      reason: 'ssrf-blocked',
      status: 301,
      address: '127.0.0.2',
    })
    expect(internal.connections()).toBe(0)
  })

  it('an internal target, literal or by name: permanent ssrf-blocked with the address, nothing sent', async () => {
    const literal = await handlerWith()(job('/', { url: `${internal.origin}/hook` }))
    expect(literal).toMatchObject({ kind: 'permanent', reason: 'ssrf-blocked', address: '127.0.0.2' })
    const named = await handlerWith()(job('/', { url: 'http://internal.test:9/hook' }))
    expect(named).toMatchObject({ kind: 'permanent', reason: 'ssrf-blocked', address: '127.0.0.3' })
    const error = errorOf(literal)
    expect(error).toBeInstanceOf(PermanentFailureError)
    expect(error).toMatchObject({ reason: 'ssrf-blocked' })
    expect((error as Error).message).toContain('127.0.0.2')
    expect(internal.connections()).toBe(0)
  })

  it.each([
    [{ eventId: 'has space' }, 'eventId'],
    [{ merchantId: '' }, 'merchantId'],
    [{ url: 42 }, 'url'],
    [{ payload: undefined }, 'payload'],
  ])('invalid job data %j: permanent invalid-job naming the field', async (data, field) => {
    const outcome = await handlerWith()(job('/ok', data))
    expect(outcome).toMatchObject({ kind: 'permanent', reason: 'invalid-job' })
    expect((outcome as { detail: string }).detail).toContain(field)
  })

  it('a bad or missing secret: permanent, without echoing the secret', async () => {
    const bad = await handlerWith()(job('/ok', { merchantId: 'm_bad' }))
    expect(bad).toMatchObject({ kind: 'permanent', reason: 'invalid-secret' })
    expect(JSON.stringify(bad)).not.toContain('tooshort')
    expect(await handlerWith()(job('/ok', { merchantId: 'm_unknown' }))).toMatchObject({
      kind: 'permanent',
      reason: 'no-secret',
    })
  })
})

describe('webhook logs', () => {
  it('hold ids, merchant, status and duration, and no secret, signature or payload body', async () => {
    const { logger, text } = capturedLogger()
    const handler = handlerWith({ logger })
    const jobs = [
      job('/ok'),
      job('/ok', { merchantId: 'm_rotating' }),
      job('/ok', { secret: OTHER }),
      job('/500'),
      job('/410'),
      job('/429-seconds'),
      job('/moved'),
      job('/', { url: `${internal.origin}/` }),
      job('/ok', { merchantId: 'm_bad' }),
    ]
    const requestsBefore = merchant.requests.length
    const outcomes: DeliveryOutcome[] = []
    for (const each of jobs) outcomes.push(await handler(each))
    const logs = text()
    const thrown = outcomes
      .map((outcome) => errorOf(outcome))
      .map((error) => (error === undefined ? '' : `${(error as Error).message} ${JSON.stringify(error)}`))
      .join('\n')

    expect(logs).toContain('"jobId"')
    expect(logs).toContain('"merchantId":"m_plain"')
    expect(logs).toContain('"status":500')
    expect(logs).toContain('"durationMs"')
    const sent = merchant.requests.slice(requestsBefore)
    expect(sent.length).toBeGreaterThanOrEqual(6)
    const secretsUsed = [CURRENT, PREVIOUS, OTHER, 'whsec_tooshort']
    const forbidden = [
      ...secretsUsed,
      ...secretsUsed.map((secret) => secret.replace(/^whsec_/, '')),
      ...sent.flatMap((request) => String(request.headers['webhook-signature']).split(' ')),
      ...sent.flatMap((request) =>
        String(request.headers['webhook-signature'])
          .split(/[ ,]/)
          .filter((part) => part.length > 8),
      ),
      ...sent.map((request) => request.body),
      ...jobs.map((each) => String(each.data.payload.marker)),
    ]
    for (const value of forbidden) {
      expect(logs).not.toContain(value)
      expect(thrown).not.toContain(value)
    }
  })
})

function errorOf(outcome: DeliveryOutcome): unknown {
  try {
    settleOutcome(outcome)
  } catch (error) {
    return error
  }
  return undefined
}
