import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import type { Admin, Consumer, Producer } from 'kafkajs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { publishControlChange } from '../../src/control/index.js'
import { parseRate } from '../../src/limiter/index.js'
import { type RunningService, startService } from '../../src/service/service.js'
import { createTopics, kafkaClient, testLogger } from '../adapters/kafka/support/kafka.js'
import { startServer, type TestServer } from '../handlers/support.js'
import { kafkaBrokers, redisUrl, uniqueName } from '../support/services.js'
import { waitFor } from '../support/wait-for.js'
import { loadWorkerConfig } from '../support/worker-config.js'

// Issue 18 through the whole worker: a BullMQ source whose `keys` templates put every PSP
// call under its PSP account ('psp:acme') and its merchant ('psp:acme:m_N'), and a rate
// for the account set on the Kafka control topic. The PSP endpoint (loopback) must see the
// account's rate, not the merchants' sum, and the status and metrics must say who binds.

const PARENT_RATE = 10
const MERCHANTS = 3
const JOBS_PER_MERCHANT = 12

describe('worker service with key templates and a parent rate from the control topic (real Redis and Kafka)', () => {
  const queueName = uniqueName('svc-layered')
  const controlTopic = uniqueName('svc-layered-control')
  const kafka = kafkaClient('svc-layered-test')
  let admin: Admin
  let producer: Producer
  let psp: TestServer
  let service: RunningService
  let queue: Queue
  let connection: Redis
  const arrivals: Array<{ merchant: string; atMs: number }> = []

  beforeAll(async () => {
    admin = kafka.admin()
    await admin.connect()
    producer = kafka.producer()
    await producer.connect()
    psp = await startServer('127.0.0.1', (_request, response, body) => {
      arrivals.push({
        merchant: (JSON.parse(body) as { merchant: string }).merchant,
        atMs: performance.now(),
      })
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"captured"}')
    })
    const { config } = loadWorkerConfig(
      {
        kafka: { brokers: kafkaBrokers() },
        control: { topic: controlTopic },
        // each merchant alone could go at 100/s: only the account's rate can hold them to 10/s
        limiter: { defaultRate: '100/s' },
        sources: [
          {
            kind: 'bullmq',
            queue: queueName,
            handler: 'psp',
            concurrency: 20,
            attempts: 2,
            // the PSP handler's merchant key is 'acme:m_N'
            keys: ['psp:{pspId}', 'psp:{merchant}'],
          },
        ],
        psp: {
          client: { allowHosts: ['127.0.0.1'] },
          endpoints: { acme: { baseUrl: `${psp.origin}/v1/` } },
        },
        metrics: { merchantLabels: ['psp:acme:m_0'] },
      },
      { env: { REDIS_URL: redisUrl() } },
    )
    service = await startService(config, testLogger)
    connection = new Redis(redisUrl(), { maxRetriesPerRequest: null })
    queue = new Queue(queueName, { connection })
  })

  afterAll(async () => {
    await service?.stop()
    await queue?.obliterate({ force: true })
    await queue?.close()
    await connection?.quit()
    await producer?.disconnect()
    await admin?.deleteTopics({ topics: [controlTopic] }).catch(() => undefined)
    await admin?.disconnect()
    await psp?.close()
  })

  it("paces the PSP endpoint at the parent's rate set on the control topic, and shows the parent binding", async () => {
    await publishControlChange(
      producer,
      {
        type: 'set',
        merchant: 'psp:acme',
        rate: parseRate(`${PARENT_RATE}/s burst 1`),
        version: Date.now() * 1_000,
      },
      { topic: controlTopic },
    )
    await waitFor('the parent rate', () => service.limiter.rateOf('psp:acme').limit === PARENT_RATE, 10_000)

    const total = MERCHANTS * JOBS_PER_MERCHANT
    await queue.addBulk(
      Array.from({ length: total }, (_, i) => {
        const merchant = `m_${i % MERCHANTS}`
        return {
          name: 'capture',
          data: {
            pspId: 'acme',
            merchantId: merchant,
            operation: 'capture',
            path: '/captures',
            body: { merchant, i },
          },
          opts: { jobId: `${merchant}-${i}` },
        }
      }),
    )
    // while they wait, the status names the parent and which limit holds each merchant
    let shown = service.status()
    await waitFor(
      'a waiting merchant held by the parent',
      () => {
        shown = service.status()
        return shown.merchants.some((m) => m.waiting > 0 && m.binding !== null)
      },
      10_000,
      20,
    )
    const held = shown.merchants.filter((m) => m.waiting > 0 && m.binding !== null)
    for (const merchant of held) {
      expect(merchant.limitKeys).toEqual(['psp:acme', `psp:${merchant.merchantKey}`])
      expect(['parent', 'parent-share']).toContain(merchant.binding!.binds)
      expect(merchant.binding!.key).toBe('psp:acme')
    }
    await waitFor('the parent listed with its children', () => service.status().parents.length > 0, 10_000)
    const parent = service.status().parents.find((p) => p.key === 'psp:acme')
    expect(parent).toMatchObject({ key: 'psp:acme', limitPerSec: PARENT_RATE })
    expect(parent!.children.map((child) => child.key).sort()).toEqual(
      Array.from({ length: MERCHANTS }, (_, i) => `psp:acme:m_${i}`),
    )
    const metrics = await (await fetch(`${service.url}/metrics`)).text()
    expect(metrics).toContain(`mt_parent_rate_limit_per_second{parent="psp:acme"} ${PARENT_RATE}`)
    expect(metrics).toMatch(/mt_child_granted_per_second\{parent="psp:acme",child="psp:acme:m_0"\} /)
    expect(metrics).toMatch(/mt_child_granted_per_second\{parent="psp:acme",child="other"\} /)

    await waitFor(
      'every PSP call',
      async () => (await queue.getJobCounts('completed')).completed === total,
      25_000,
    )
    expect(arrivals).toHaveLength(total)
    // The account's guarantee at the endpoint: in any window of W seconds, at most
    // burst + rate × W calls, with one more for the timer's tolerance on a loaded machine.
    const times = arrivals.map((a) => a.atMs).sort((a, b) => a - b)
    for (const windowMs of [500, 1_000, 2_000]) {
      let most = 0
      for (let i = 0, j = 0; j < times.length; j++) {
        while (times[j]! - times[i]! >= windowMs) i++
        most = Math.max(most, j - i + 1)
      }
      expect(most, `calls in ${windowMs} ms`).toBeLessThanOrEqual(1 + (PARENT_RATE * windowMs) / 1_000 + 1)
    }
    // and it was the account, not the merchants, that held them: 36 calls at 10/s
    expect(times.at(-1)! - times[0]!).toBeGreaterThanOrEqual(((total - 2) / PARENT_RATE) * 1_000 * 0.9)
    const perMerchant = Array.from(
      { length: MERCHANTS },
      (_, i) => arrivals.filter((a) => a.merchant === `m_${i}`).length,
    )
    expect(perMerchant).toEqual([JOBS_PER_MERCHANT, JOBS_PER_MERCHANT, JOBS_PER_MERCHANT])
  }, 30_000)

  it('hands a weight set on the control topic to the limiter for the child it names, beside its siblings', async () => {
    // the parent's rate, as the test before sets it: this one runs alone too
    await publishControlChange(
      producer,
      {
        type: 'set',
        merchant: 'psp:acme',
        rate: parseRate(`${PARENT_RATE}/s burst 1`),
        version: Date.now() * 1_000,
      },
      { topic: controlTopic },
    )
    // the child key is psp:{merchant}, and the PSP handler's merchant key is 'acme:<merchantId>'
    await publishControlChange(
      producer,
      {
        type: 'set',
        merchant: 'psp:acme:w_big',
        rate: parseRate('100/s'),
        weight: 3,
        version: Date.now() * 1_000,
      },
      { topic: controlTopic },
    )
    await waitFor('the parent rate', () => service.limiter.rateOf('psp:acme').limit === PARENT_RATE, 10_000)
    await waitFor(
      'the weight applied',
      () =>
        service
          .status()
          .control.recentChanges.some((c) => c.description.startsWith('set psp:acme:w_big 100/s, weight 3')),
      10_000,
    )
    arrivals.length = 0
    const each = 40
    await queue.addBulk(
      ['w_big', 'w_small'].flatMap((merchant) =>
        Array.from({ length: each }, (_, i) => ({
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
      ),
    )
    // both stay backlogged for the first 4 s (80 jobs at 10/s): count what each got then
    await waitFor(
      '4 s of calls',
      () => arrivals.length > 0 && performance.now() - arrivals[0]!.atMs >= 4_000,
      15_000,
    )
    const startMs = arrivals[0]!.atMs
    const inWindow = arrivals.filter((a) => a.atMs - startMs < 4_000)
    const big = inWindow.filter((a) => a.merchant === 'w_big').length
    const small = inWindow.filter((a) => a.merchant === 'w_small').length
    const shares = service.limiter.childrenOf('psp:acme')
    // the weight set on the control topic reached the limiter, with the rate, for the child it names
    expect(Object.fromEntries(shares.map((child) => [child.key, child.weight]))).toMatchObject({
      'psp:acme:w_big': 3,
      'psp:acme:w_small': 1,
    })
    // the parent holds both, and neither is starved; how close the split comes to 3:1 is the
    // limiter's and the adapters' to test (their fairness tests), not the worker's wiring
    expect(big + small).toBeLessThanOrEqual(1 + PARENT_RATE * 4 + 1)
    expect(small).toBeGreaterThan(0)
    expect(big).toBeGreaterThan(0)
    await waitFor('every call', async () => arrivals.length === 2 * each, 20_000)
  }, 45_000)
})

describe('worker service with key templates on a Kafka source (the shared broker)', () => {
  const jobsTopic = uniqueName('svc-layered-jobs')
  const controlTopic = uniqueName('svc-layered-kcontrol')
  const kafka = kafkaClient('svc-layered-kafka-test')
  let admin: Admin
  let producer: Producer
  let merchants: TestServer
  let service: RunningService
  const deadLetters: string[] = []
  const deliveredAtMs: number[] = []
  let dlqConsumer: Consumer | undefined

  beforeAll(async () => {
    admin = kafka.admin()
    await admin.connect()
    await createTopics(admin, 2, jobsTopic)
    producer = kafka.producer()
    await producer.connect()
    merchants = await startServer('127.0.0.1', (_request, response) => {
      deliveredAtMs.push(performance.now())
      response.end('ok')
    })
    const { config } = loadWorkerConfig(
      {
        kafka: { brokers: kafkaBrokers() },
        control: { topic: controlTopic },
        limiter: { defaultRate: '100/s' },
        sources: [
          {
            kind: 'kafka',
            topic: jobsTopic,
            groupId: uniqueName('svc-layered-group'),
            handler: 'webhook',
            attempts: 2,
            keys: ['psp:{payload.psp}', 'psp:{payload.psp}:{merchant}'],
          },
        ],
      },
      { env: {} },
    )
    service = await startService(config, testLogger)
  })

  afterAll(async () => {
    await service?.stop()
    await dlqConsumer?.disconnect()
    await producer?.disconnect()
    await admin
      ?.deleteTopics({
        topics: [jobsTopic, `${jobsTopic}.dead-letter`, `${jobsTopic}.parking`, controlTopic],
      })
      .catch(() => undefined)
    await admin?.disconnect()
    await merchants?.close()
  })

  it("paces a topic's messages at the parent's rate, and dead-letters one lacking the field, naming template and field", async () => {
    await publishControlChange(
      producer,
      {
        type: 'set',
        merchant: 'psp:acme',
        rate: parseRate(`${PARENT_RATE}/s burst 1`),
        version: Date.now() * 1_000,
      },
      { topic: controlTopic },
    )
    await waitFor('the parent rate', () => service.limiter.rateOf('psp:acme').limit === PARENT_RATE, 10_000)
    dlqConsumer = kafka.consumer({ groupId: uniqueName('svc-layered-dlq') })
    await dlqConsumer.connect()
    await dlqConsumer.subscribe({ topic: `${jobsTopic}.dead-letter`, fromBeginning: true })
    await dlqConsumer.run({
      eachMessage: async ({ message }) => {
        deadLetters.push(
          Object.values(message.headers ?? {})
            .map((value) => String(value))
            .join(' '),
        )
      },
    })
    const total = 24
    const message = (merchantId: string, i: number, payload: object) => ({
      key: merchantId,
      value: JSON.stringify({
        merchantId,
        eventId: `evt_${merchantId}_${i}`,
        url: `${merchants.origin}/${merchantId}`,
        payload,
      }),
    })
    await producer.send({
      topic: jobsTopic,
      messages: [
        message('no-psp', 0, { amount: 1 }),
        ...Array.from({ length: total }, (_, i) => message(`shop-${i % 3}`, i, { psp: 'acme', i })),
      ],
    })
    await waitFor('every message delivered', () => deliveredAtMs.length >= total, 25_000)
    await waitFor('the dead letter', () => deadLetters.length >= 1, 10_000)
    expect(deadLetters.join('\n')).toContain("key template 'psp:{payload.psp}' field 'payload.psp': missing")
    expect(deliveredAtMs).toHaveLength(total)
    const times = [...deliveredAtMs].sort((a, b) => a - b)
    let most = 0
    for (let i = 0, j = 0; j < times.length; j++) {
      while (times[j]! - times[i]! >= 1_000) i++
      most = Math.max(most, j - i + 1)
    }
    // burst 1 + 10 in any second, one more for the timers of a loaded machine
    expect(most).toBeLessThanOrEqual(1 + PARENT_RATE + 1)
    expect(times.at(-1)! - times[0]!).toBeGreaterThanOrEqual(((total - 2) / PARENT_RATE) * 1_000 * 0.9)
  }, 45_000)
})
