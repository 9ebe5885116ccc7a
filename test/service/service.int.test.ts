import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Webhook } from 'standardwebhooks'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { loadConfig } from '../../src/service/config.js'
import { type RunningService, type StatusSnapshot, startService } from '../../src/service/service.js'
import { capturedLogger, closedPort, startServer, type TestServer } from '../handlers/support.js'
import { redisUrl, uniqueName } from '../support/services.js'
import { waitFor } from '../support/wait-for.js'
import { loadWorkerConfig } from '../support/worker-config.js'

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
  let counts: Record<string, number> = {}

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
    const { config } = loadWorkerConfig(
      {
        sources: [{ kind: 'bullmq', queue: queueName, handler: 'webhook', concurrency: 50, attempts: 3 }],
        webhook: { client: { timeoutMs: 3_000 }, defaultSecret: 'env:TEST_WEBHOOK_SECRET' },
      },
      {
        rates: { type: 'snapshot', version: 1, default: '10/s burst 5', overrides: { slow: '5/s burst 2' } },
      },
    )
    process.env.TEST_WEBHOOK_SECRET = SECRET
    service = await startService(config, captured.logger)
    connection = new Redis(redisUrl(), { maxRetriesPerRequest: null })
    queue = new Queue(queueName, { connection })
    // One batch for the whole file: each test below reads what this run left, none what another test did.
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
    await waitFor(
      `all ${jobs.length} jobs completed or failed`,
      async () => {
        counts = await queue.getJobCounts('completed', 'failed')
        return (counts.completed ?? 0) + (counts.failed ?? 0) >= jobs.length
      },
      60_000,
    )
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
    expect(counts).toEqual({ completed: 44, failed: 4 })

    const failed = await queue.getFailed()
    const reasons = Object.fromEntries(failed.map((job) => [job.data.eventId, job.failedReason]))
    expect(reasons.evt_gone_0).toMatch(/^client-error: .*410/)
    expect(reasons.evt_broken_0).toMatch(/^gave up after 3 attempts: .*500/)
    // BullMQ counted the attempts itself: the source's attempts and backoff, no field of ours in the job's data
    const broken = failed.filter((job) => job.data.merchantId === 'broken')
    expect(broken.map((job) => [job.attemptsMade, job.opts.attempts ?? 0])).toEqual([
      [3, 0],
      [3, 0],
    ])
    expect(failed.flatMap((job) => Object.keys(job.data)).filter((key) => key.startsWith('__'))).toEqual([])
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

  it('reports ready, and lists the merchants on /status.json, their failures and dead letters too', async () => {
    expect(service.readiness().ready).toBe(true)
    const status = (await (await fetch(`${service.url}/status.json`)).json()) as StatusSnapshot
    const merchant = (key: string) => status.merchants.find((m) => m.merchantKey === key)
    expect(merchant('fast')).toMatchObject({
      rate: '10/s burst 5',
      limitPerSec: 10,
      deliveredLastMinute: 30,
      failures: { count: 0, lastReason: null },
    })
    // every job of 'gone' failed with 410: listed with its dead letters and their reason, not idle
    expect(merchant('gone')).toMatchObject({
      deliveredLastMinute: 0,
      failedLastMinute: 2,
      deadLetters: { count: 2, lastReason: expect.stringMatching(/410/) },
    })
    expect(merchant('broken')).toMatchObject({
      failures: { count: 6, lastReason: expect.stringMatching(/500/) },
      deadLetters: { count: 2 },
    })
  })

  it('serves the outcomes and the process metrics on /metrics, with no empty label', async () => {
    const metrics = await (await fetch(`${service.url}/metrics`)).text()
    expect(metrics).toMatch(
      new RegExp(
        `mt_handler_outcomes_total\\{source="bullmq:${queueName}",outcome="delivered",merchant="other"\\} 44`,
      ),
    )
    expect(metrics).toMatch(
      new RegExp(
        `mt_handler_outcomes_total\\{source="bullmq:${queueName}",outcome="dead-lettered",merchant="other"\\} 4`,
      ),
    )
    expect(metrics).toContain('mt_control_messages_total{result="applied"} 1')
    expect(metrics).toMatch(/^process_cpu_user_seconds_total \d/m)
    expect(metrics).toMatch(/^nodejs_eventloop_lag_seconds \d/m)
    expect(metrics).not.toContain('=""')
  })
})

describe('worker service start-up', () => {
  it('checks module handlers before it connects to anything, reporting every problem at once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mt-module-'))
    writeFileSync(join(dir, 'not-a-handler.mjs'), 'export default 42\n')
    const config = loadConfig({
      env: { MT_HTTP_PORT: '0', REDIS_URL: `redis://127.0.0.1:${await closedPort()}` },
    })
    const sources = [
      {
        ...config.sources[0]!,
        queue: 'a',
        handler: 'module' as const,
        module: join(dir, 'not-a-handler.mjs'),
      },
      {
        ...config.sources[0]!,
        queue: 'b',
        handler: 'module' as const,
        module: join(dir, 'not-a-handler.mjs'),
      },
    ]
    const error = await startService({ ...config, sources }, pino({ level: 'silent' })).catch(
      (e: unknown) => e,
    )
    // a ConfigError, not the ConnectionError the closed Redis port would give
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).problems).toEqual([
      expect.stringMatching(
        /\(a\): expected .*not-a-handler\.mjs to export a handler function as default, got number/,
      ),
      expect.stringMatching(/\(b\): expected .*not-a-handler\.mjs to export a handler function/),
    ])
  })

  it('refuses a config whose control file is missing, naming it', async () => {
    const config = loadConfig({ env: { MT_CONTROL_FILE: '/nonexistent/rates.json', MT_HTTP_PORT: '0' } })
    await expect(startService({ ...config, sources: [] }, pino({ level: 'silent' }))).rejects.toThrow(
      /\/nonexistent\/rates\.json/,
    )
  })
})
