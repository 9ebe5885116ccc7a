import { writeFileSync } from 'node:fs'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RunningService, startService } from '../../src/service/service.js'
import { testLogger } from '../adapters/kafka/support/kafka.js'
import { startServer, type TestServer } from '../handlers/support.js'
import { redisUrl, uniqueName } from '../support/services.js'
import { waitFor } from '../support/wait-for.js'
import { loadWorkerConfig } from '../support/worker-config.js'

// The worker's BullMQ source with a standing backlog: a merchant at 2/s given 30 jobs
// parks most of them in its backlog in Redis; /status.json counts them as jobs waiting,
// parked, with the oldest's age; a raise in the rates file empties the backlog.

describe('worker service: a standing BullMQ backlog', () => {
  let merchants: TestServer
  let service: RunningService
  let queue: Queue
  let connection: Redis
  let ratesFile: string
  const queueName = uniqueName('svc-backlog')

  beforeAll(async () => {
    merchants = await startServer('127.0.0.1', (_request, response) => response.end('ok'))
    const loaded = loadWorkerConfig(
      {
        sources: [
          {
            kind: 'bullmq',
            queue: queueName,
            handler: 'webhook',
            concurrency: 20,
            reservationKey: 'env:TEST_RESERVATION_KEY',
          },
        ],
      },
      { rates: { type: 'snapshot', version: 1, default: '100/s', overrides: { hot: '2/s burst 1' } } },
    )
    ratesFile = loaded.ratesFile
    process.env.TEST_RESERVATION_KEY = 'a-reservation-key-for-the-backlog-test'
    service = await startService(loaded.config, testLogger)
    connection = new Redis(redisUrl(), { maxRetriesPerRequest: null })
    queue = new Queue(queueName, { connection })
  })

  afterAll(async () => {
    await service?.stop()
    await queue?.obliterate({ force: true })
    await queue?.close()
    await connection?.quit()
    await merchants?.close()
    delete process.env.TEST_RESERVATION_KEY
  })

  const job = (merchantId: string, i: number) => ({
    name: 'webhook',
    data: {
      merchantId,
      eventId: `evt_${merchantId}_${i}`,
      url: `${merchants.origin}/${merchantId}`,
      payload: i,
    },
  })
  const deliveredTo = (merchant: string) => merchants.requests.filter((r) => r.path === `/${merchant}`).length

  it('counts the parked jobs as waiting, with the oldest one, in /status.json and /metrics; the others flow', async () => {
    await queue.addBulk(Array.from({ length: 30 }, (_, i) => job('hot', i)))
    await queue.addBulk(Array.from({ length: 3 }, (_, i) => job('quiet', i)))
    await waitFor('the quiet merchant delivered', () => deliveredTo('quiet') === 3, 10_000)
    await waitFor(
      'the hot backlog seen',
      () => (service.status().merchants.find((m) => m.merchantKey === 'hot')?.parked ?? 0) >= 20,
      10_000,
    )
    const status = service.status()
    const hot = status.merchants.find((m) => m.merchantKey === 'hot')!
    // 30 jobs at 2/s: the parked ones and those delayed on a reservation, a count of jobs
    expect(hot.waiting).toBeGreaterThanOrEqual(hot.parked)
    expect(hot.waiting).toBeLessThanOrEqual(30)
    expect(hot.oldestWaitingAgeMs).toBeGreaterThan(0)
    expect(status.sources[0]!.backlog).toMatchObject({ parkedMerchants: 1 })
    expect(status.sources[0]!.backlog.parked).toBeGreaterThanOrEqual(20)
    const metrics = await (await fetch(`${service.url}/metrics`)).text()
    expect(metrics).toMatch(new RegExp(`mt_parked\\{source="bullmq:${queueName}"\\} [1-9]`))
    expect(metrics).toMatch(
      new RegExp(
        `mt_decisions_total\\{source="bullmq:${queueName}",outcome="backlogged",merchant="other"\\} [1-9]`,
      ),
    )
  })

  it('empties the backlog once the rates file raises the merchant, and shows nothing waiting after', async () => {
    const before = deliveredTo('hot')
    writeFileSync(
      ratesFile,
      JSON.stringify({ type: 'snapshot', version: 2, default: '100/s', overrides: { hot: '200/s' } }),
    )
    // At 2/s the rest would take more than 10 s.
    await waitFor('every hot job delivered', () => deliveredTo('hot') === 30, 8_000)
    expect(before).toBeLessThan(25)
    await waitFor(
      'nothing waiting',
      () => service.status().merchants.find((m) => m.merchantKey === 'hot')?.waiting === 0,
      5_000,
    )
    expect(service.status().merchants.find((m) => m.merchantKey === 'hot')).toMatchObject({
      parked: 0,
      oldestWaitingAgeMs: null,
    })
  })
})
