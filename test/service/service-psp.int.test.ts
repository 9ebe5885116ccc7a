import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { idempotencyKeyOf } from '../../src/handlers/index.js'
import { type RunningService, startService } from '../../src/service/service.js'
import { startServer, type TestServer } from '../handlers/support.js'
import { redisUrl, uniqueName } from '../support/services.js'
import { waitFor } from '../support/wait-for.js'
import { loadWorkerConfig } from '../support/worker-config.js'

// PSP calls through the worker: paced per `psp:merchant` with that key's own rate, sent with
// the PSP's credential and an Idempotency-Key that a retried call repeats.

const CREDENTIAL = 'Bearer sk_test_service_psp_4242'

describe('worker service with a PSP source (real Redis, a local PSP)', () => {
  let psp: TestServer
  let service: RunningService
  let queue: Queue
  let connection: Redis
  const queueName = uniqueName('svc-psp')
  const arrivals: Array<{ merchant: string; atMs: number; key: string; authorization: string }> = []
  let failNextCapture = true

  beforeAll(async () => {
    psp = await startServer('127.0.0.1', (request, response, body) => {
      const { merchant } = JSON.parse(body) as { merchant: string }
      arrivals.push({
        merchant,
        atMs: performance.now(),
        key: String(request.headers['idempotency-key']),
        authorization: String(request.headers.authorization),
      })
      if (merchant === 'm_fast' && failNextCapture) {
        failNextCapture = false
        response.writeHead(500).end()
        return
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"captured"}')
    })
    process.env.TEST_PSP_CREDENTIAL = CREDENTIAL
    const { config } = loadWorkerConfig(
      {
        sources: [{ kind: 'bullmq', queue: queueName, handler: 'psp', concurrency: 20, attempts: 3 }],
        psp: {
          client: { allowHosts: ['127.0.0.1'] },
          endpoints: { acme: { baseUrl: `${psp.origin}/v1/`, authorization: 'env:TEST_PSP_CREDENTIAL' } },
        },
      },
      {
        rates: {
          type: 'snapshot',
          version: 1,
          default: '100/s',
          overrides: { 'acme:m_slow': '5/s burst 1' },
        },
      },
    )
    service = await startService(config, pino({ level: 'silent' }))
    connection = new Redis(redisUrl(), { maxRetriesPerRequest: null })
    queue = new Queue(queueName, { connection })
  })

  afterAll(async () => {
    await service?.stop()
    await queue?.obliterate({ force: true })
    await queue?.close()
    await connection?.quit()
    await psp?.close()
    delete process.env.TEST_PSP_CREDENTIAL
  })

  it('paces each psp:merchant at its own rate, retries with the same Idempotency-Key, and sends the credential', async () => {
    const jobs = ['m_slow', 'm_fast'].flatMap((merchant) =>
      Array.from({ length: 10 }, (_, i) => ({
        name: 'capture',
        data: {
          pspId: 'acme',
          merchantId: merchant,
          operation: 'capture',
          path: '/captures',
          body: { merchant, i },
        },
        opts: { jobId: `${merchant}-${i}` },
      })),
    )
    await queue.addBulk(jobs)
    await waitFor(
      '20 PSP calls',
      async () => (await queue.getJobCounts('completed')).completed === 20,
      60_000,
    )

    // one Idempotency-Key per job, derived from the job id, repeated by the retried call
    const keys = new Set(arrivals.map((a) => a.key))
    expect(keys.size).toBe(20)
    expect(keys).toEqual(new Set(jobs.map((job) => idempotencyKeyOf('acme', job.opts.jobId))))
    expect(arrivals).toHaveLength(21)
    expect(arrivals.every((a) => a.authorization === CREDENTIAL)).toBe(true)

    // acme:m_slow at 5/s burst 1: ten calls take at least ~1.8 s; acme:m_fast is not held to it
    const slow = arrivals.filter((a) => a.merchant === 'm_slow').map((a) => a.atMs)
    const fast = arrivals.filter((a) => a.merchant === 'm_fast').map((a) => a.atMs)
    expect(slow.at(-1)! - slow[0]!).toBeGreaterThanOrEqual(1_800 * 0.9)
    expect(Math.max(...fast)).toBeLessThan(slow.at(-1)!)
    expect(service.limiter.rateOf('acme:m_slow').limit).toBe(5)
    expect(service.limiter.inspect('acme:m_fast')?.rate.limit).toBe(100)
  })
})
