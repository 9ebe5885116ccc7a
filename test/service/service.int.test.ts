import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Webhook } from 'standardwebhooks'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/service/config.js'
import { type RunningService, type StatusSnapshot, startService } from '../../src/service/service.js'
import { capturedLogger, startServer, type TestServer } from '../handlers/support.js'
import { redisUrl, uniqueName } from '../support/services.js'

// The worker end to end: a real Redis, BullMQ jobs, and a local HTTP server playing the
// merchants (fast, slow, 429 with Retry-After, 500, 410). Every webhook is delivered or
// dead-lettered with its reason; signatures verify; each merchant's rate holds.

const SECRET = 'whsec_c2VydmljZS10ZXN0LXNlY3JldC0zMi1ieXRlcy1sb25nISE='

describe('worker service (real Redis, local merchants)', () => {
  let merchants: TestServer
  let service: RunningService
  let queue: Queue
  let connection: Redis
  const queueName = uniqueName('svc-webhooks')
  const captured = capturedLogger()
  const receivedAtMs = new Map<string, number[]>()
  const tooManyAnswered = new Map<string, number>()

  beforeAll(async () => {
    merchants = await startServer('127.0.0.1', (request, response, body) => {
      const merchant = request.url!.split('/')[1]!
      const times = receivedAtMs.get(merchant) ?? []
      times.push(performance.now())
      receivedAtMs.set(merchant, times)
      const eventId = String(request.headers['webhook-id'])
      if (merchant === 'slow') {
        setTimeout(() => response.end('ok'), 300)
      } else if (merchant === 'busy' && (tooManyAnswered.get(eventId) ?? 0) < 1) {
        tooManyAnswered.set(eventId, (tooManyAnswered.get(eventId) ?? 0) + 1)
        response.writeHead(429, { 'retry-after': '1' }).end()
      } else if (merchant === 'broken') {
        response.writeHead(500).end()
      } else if (merchant === 'gone') {
        response.writeHead(410).end()
      } else {
        response.end(body.length > 0 ? 'ok' : 'empty')
      }
    })
    const dir = mkdtempSync(join(tmpdir(), 'mt-service-'))
    writeFileSync(
      join(dir, 'rates.json'),
      JSON.stringify({
        type: 'snapshot',
        version: 1,
        default: '10/s burst 5',
        overrides: { slow: '5/s burst 2' },
      }),
    )
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({
        http: { port: 0 },
        control: { source: 'file', file: join(dir, 'rates.json') },
        sources: [{ kind: 'bullmq', queue: queueName, handler: 'webhook', concurrency: 50, attempts: 3 }],
        webhook: {
          client: { allowHosts: ['127.0.0.1'], timeoutMs: 3_000 },
          defaultSecret: 'env:TEST_WEBHOOK_SECRET',
        },
      }),
    )
    const config = loadConfig({
      file: join(dir, 'config.json'),
      env: { REDIS_URL: redisUrl(), TEST_WEBHOOK_SECRET: SECRET },
    })
    process.env.TEST_WEBHOOK_SECRET = SECRET
    service = await startService(config, captured.logger)
    connection = new Redis(redisUrl(), { maxRetriesPerRequest: null })
    queue = new Queue(queueName, { connection })
  })

  afterAll(async () => {
    await service?.stop()
    await queue?.obliterate({ force: true })
    await queue?.close()
    await connection?.quit()
    await merchants?.close()
    delete process.env.TEST_WEBHOOK_SECRET
  })

  it('delivers, retries after 429, dead-letters 500 after its attempts and 410 at once; nothing lost', async () => {
    const plan: Record<string, number> = { fast: 30, slow: 10, busy: 4, broken: 2, gone: 2 }
    const jobs = Object.entries(plan).flatMap(([merchant, count]) =>
      Array.from({ length: count }, (_, i) => ({
        name: 'webhook',
        data: {
          merchantId: merchant,
          eventId: `evt_${merchant}_${i}`,
          url: `${merchants.origin}/${merchant}/hooks`,
          payload: { type: 'payment.succeeded', amount: 1000 + i, secretCard: '4242-4242' },
        },
      })),
    )
    await queue.addBulk(jobs)
    const total = jobs.length
    const deadline = Date.now() + 60_000
    let counts = await queue.getJobCounts('completed', 'failed')
    while ((counts.completed ?? 0) + (counts.failed ?? 0) < total && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 250))
      counts = await queue.getJobCounts('completed', 'failed')
    }
    expect(counts).toEqual({ completed: 44, failed: 4 })

    const failed = await queue.getFailed()
    const reasons = Object.fromEntries(failed.map((job) => [job.data.eventId, job.failedReason]))
    expect(reasons.evt_gone_0).toMatch(/^client-error: .*410/)
    expect(reasons.evt_broken_0).toMatch(/^gave up after 3 attempts: .*500/)
    // 500: three attempts each; 410: one
    expect(receivedAtMs.get('broken')).toHaveLength(6)
    expect(receivedAtMs.get('gone')).toHaveLength(2)
    // 429 then 200, with the same webhook-id both times, so the merchant can de-duplicate
    expect(receivedAtMs.get('busy')).toHaveLength(8)
    const busyIds = merchants.requests
      .filter((r) => r.path.startsWith('/busy/'))
      .map((r) => r.headers['webhook-id'])
    expect(new Set(busyIds).size).toBe(4)
    expect(service.limiter.stats().penalties).toBeGreaterThanOrEqual(1)
  })

  it('signs every delivery so that standardwebhooks verifies it', () => {
    const verifier = new Webhook(SECRET)
    const delivered = merchants.requests.filter((r) => r.path.startsWith('/fast/'))
    expect(delivered).toHaveLength(30)
    for (const request of delivered) {
      const headers = Object.fromEntries(
        ['webhook-id', 'webhook-timestamp', 'webhook-signature'].map((name) => [
          name,
          String(request.headers[name]),
        ]),
      )
      expect(verifier.verify(request.body, headers)).toMatchObject({ type: 'payment.succeeded' })
    }
  })

  // Arrival times at the merchant include each request's own latency on a loaded machine,
  // so a window is widened by JITTER_MS: the bound is burst + rate x (W + JITTER_MS).
  const JITTER_MS = 600

  it("holds each merchant's rate: burst + rate x W in every window, give or take the request jitter", () => {
    for (const [merchant, rate] of [
      ['fast', { burst: 5, perMs: 10 / 1_000 }],
      ['slow', { burst: 2, perMs: 5 / 1_000 }],
    ] as const) {
      const times = receivedAtMs
        .get(merchant)!
        .slice()
        .sort((a, b) => a - b)
      for (let i = 0; i < times.length; i++) {
        for (let j = i; j < times.length; j++) {
          expect(j - i + 1, `${merchant} ${i}..${j}`).toBeLessThanOrEqual(
            rate.burst + rate.perMs * (times[j]! - times[i]! + JITTER_MS),
          )
        }
      }
      // and it is not starved: the whole run takes about (n - burst) / rate
      const spanMs = times.at(-1)! - times[0]!
      expect(spanMs).toBeGreaterThanOrEqual(((times.length - rate.burst - 1) / rate.perMs) * 0.9)
    }
  })

  it('logs no secret, signature or payload body', () => {
    const text = captured.text()
    expect(text).toContain('evt_fast_0')
    expect(text).not.toContain(SECRET)
    expect(text).not.toContain(SECRET.slice(6))
    expect(text).not.toContain('4242-4242')
    expect(text).not.toMatch(/v1,[A-Za-z0-9+/=]{20,}/)
  })

  it('reports ready, and lists the merchants on /status.json and in /metrics', async () => {
    expect(service.readiness().ready).toBe(true)
    const status = (await (await fetch(`${service.url}/status.json`)).json()) as StatusSnapshot
    const fast = status.merchants.find((m) => m.merchantKey === 'fast')
    expect(fast).toMatchObject({ rate: '10/s burst 5', deliveredLastMinute: 30 })
    const metrics = await (await fetch(`${service.url}/metrics`)).text()
    expect(metrics).toMatch(
      new RegExp(
        `mt_handler_outcomes_total\\{source="bullmq:${queueName}",outcome="delivered",merchant="other"\\} 44`,
      ),
    )
  })
})

describe('worker service start-up', () => {
  it('refuses a config whose control file is missing, naming it', async () => {
    const config = loadConfig({ env: { MT_CONTROL_FILE: '/nonexistent/rates.json', MT_HTTP_PORT: '0' } })
    await expect(startService({ ...config, sources: [] }, pino({ level: 'silent' }))).rejects.toThrow(
      /\/nonexistent\/rates\.json/,
    )
  })
})
