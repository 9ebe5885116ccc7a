import type { Admin, Consumer, Producer } from 'kafkajs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { publishControlChange } from '../../src/control/index.js'
import { parseRate } from '../../src/limiter/index.js'
import { type RunningService, startService } from '../../src/service/service.js'
import { createTopics, kafkaClient, testLogger } from '../adapters/kafka/support/kafka.js'
import { startServer, type TestServer } from '../handlers/support.js'
import { kafkaBrokers, uniqueName } from '../support/services.js'
import { waitFor } from '../support/wait-for.js'
import { loadWorkerConfig } from '../support/worker-config.js'

// The worker with Kafka everywhere: rates from the control topic, webhook jobs from a
// topic keyed by merchant, bad messages to the dead-letter topic.

const SECRET = 'whsec_a2Fma2Etc2VydmljZS10ZXN0LXNlY3JldC0zMi1ieXRlcyE='

describe('worker service with a Kafka source and the Kafka control topic', () => {
  const jobsTopic = uniqueName('svc-jobs')
  const controlTopic = uniqueName('svc-control')
  const kafka = kafkaClient('svc-kafka-test')
  let admin: Admin
  let producer: Producer
  let dlqConsumer: Consumer | undefined
  let merchants: TestServer
  let service: RunningService

  beforeAll(async () => {
    admin = kafka.admin()
    await admin.connect()
    await createTopics(admin, 3, jobsTopic)
    producer = kafka.producer()
    await producer.connect()
    merchants = await startServer('127.0.0.1', (_request, response) => response.end('ok'))
    const { config } = loadWorkerConfig(
      {
        kafka: { brokers: kafkaBrokers() },
        control: { topic: controlTopic },
        limiter: { defaultRate: '50/s' },
        sources: [
          {
            kind: 'kafka',
            topic: jobsTopic,
            groupId: uniqueName('svc-group'),
            handler: 'webhook',
            attempts: 2,
            // small, so that a merchant behind parks after a few messages
            maxBufferedPerMerchant: 5,
          },
        ],
        webhook: { defaultSecret: SECRET },
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

  it('is ready once the control topic is read, and delivers every keyed message', async () => {
    expect(service.readiness()).toMatchObject({
      ready: true,
      checks: { control: true, [`kafka:${jobsTopic}`]: true },
    })
    const messages = Array.from({ length: 60 }, (_, i) => {
      const merchantId = `shop-${i % 5}`
      return {
        key: merchantId,
        value: JSON.stringify({
          merchantId,
          eventId: `evt_${i}`,
          url: `${merchants.origin}/${merchantId}`,
          payload: { i },
        }),
      }
    })
    await producer.send({ topic: jobsTopic, messages })
    await waitFor('60 deliveries', () => merchants.requests.length >= 60, 60_000)
    const delivered = merchants.requests.map((r) => String(r.headers['webhook-id']))
    expect(new Set(delivered).size).toBe(60)
  })

  it('applies a rate change published on the control topic', async () => {
    await publishControlChange(
      producer,
      { type: 'set', merchant: 'shop-1', rate: parseRate('7/s'), version: Date.now() * 1_000 },
      { topic: controlTopic },
    )
    await waitFor('the new rate', () => service.limiter.rateOf('shop-1').limit === 7, 10_000)
    expect(service.limiter.rateOf('shop-0').limit).toBe(50)
  })

  it('dead-letters a message without a merchant key and one whose target is refused, and goes on', async () => {
    await producer.send({
      topic: jobsTopic,
      messages: [
        {
          key: null,
          value: JSON.stringify({ merchantId: 'x', eventId: 'evt_nokey', url: merchants.origin, payload: 1 }),
        },
        {
          key: 'shop-2',
          value: JSON.stringify({
            merchantId: 'shop-2',
            eventId: 'evt_ssrf',
            url: 'http://127.0.0.2:9/',
            payload: 1,
          }),
        },
        {
          key: 'shop-3',
          value: JSON.stringify({
            merchantId: 'shop-3',
            eventId: 'evt_after',
            url: `${merchants.origin}/x`,
            payload: 1,
          }),
        },
      ],
    })
    const reasons: string[] = []
    dlqConsumer = kafka.consumer({ groupId: uniqueName('svc-dlq') })
    await dlqConsumer.connect()
    await dlqConsumer.subscribe({ topic: `${jobsTopic}.dead-letter`, fromBeginning: true })
    await dlqConsumer.run({
      eachMessage: async ({ message }) => {
        const headers = Object.fromEntries(
          Object.entries(message.headers ?? {}).map(([name, value]) => [name, String(value)]),
        )
        reasons.push(JSON.stringify(headers))
      },
    })
    await waitFor('two dead letters', () => reasons.length >= 2, 30_000)
    await waitFor(
      'the message after them',
      () => merchants.requests.some((r) => r.headers['webhook-id'] === 'evt_after'),
      30_000,
    )
    expect(reasons.join('\n')).toMatch(/invalid-key/)
    expect(reasons.join('\n')).toMatch(/ssrf-blocked/)
  })

  it('parks a merchant behind its limit in the parking topic it created, shows its waiting messages, and the others flow', async () => {
    const metadata = await admin.fetchTopicMetadata({ topics: [`${jobsTopic}.parking`] })
    expect(metadata.topics[0]!.partitions).toHaveLength(3 * 16)
    await publishControlChange(
      producer,
      { type: 'set', merchant: 'slow', rate: parseRate('2/s'), version: Date.now() * 1_000 },
      { topic: controlTopic },
    )
    await waitFor('the slow rate', () => service.limiter.rateOf('slow').limit === 2, 10_000)
    const job = (merchantId: string, i: number) => ({
      key: merchantId,
      value: JSON.stringify({
        merchantId,
        eventId: `evt_${merchantId}_${i}`,
        url: `${merchants.origin}/${merchantId}`,
        payload: { i },
      }),
    })
    await producer.send({ topic: jobsTopic, messages: Array.from({ length: 40 }, (_, i) => job('slow', i)) })
    await producer.send({ topic: jobsTopic, messages: Array.from({ length: 5 }, (_, i) => job('quiet', i)) })
    const deliveredTo = (merchant: string) =>
      merchants.requests.filter((r) => r.path === `/${merchant}`).length
    await waitFor('the quiet merchant delivered', () => deliveredTo('quiet') === 5, 15_000)
    await waitFor(
      'the slow merchant parked',
      () => service.status().sources[0]!.backlog.parkTransactions > 0,
      15_000,
    )
    const status = service.status()
    const slow = status.merchants.find((m) => m.merchantKey === 'slow')!
    // 40 sent at 2/s: most still wait, a count of messages, parked ones among them
    expect(slow.waiting).toBeGreaterThan(20)
    expect(slow.waiting).toBeLessThanOrEqual(40 - deliveredTo('slow'))
    expect(slow.parked).toBeGreaterThan(0)
    expect(slow.oldestWaitingAgeMs).toBeGreaterThanOrEqual(0)
    expect(status.sources[0]!.backlog).toMatchObject({ parkFailures: 0 })
    // The source's parked total is over every merchant; only the slow one is parked here.
    expect(status.sources[0]!.backlog.parked).toBe(slow.parked)
    const deliveredBeforeScrape = deliveredTo('slow')
    const metrics = await (await fetch(`${service.url}/metrics`)).text()
    expect(metrics).toMatch(new RegExp(`mt_park_transactions_total\\{source="kafka:${jobsTopic}"\\} [1-9]`))
    const parkedGauge = metrics.match(new RegExp(`^mt_parked\\{source="kafka:${jobsTopic}"\\} (\\d+)$`, 'm'))
    expect(parkedGauge, 'mt_parked for the source').not.toBeNull()
    expect(Number(parkedGauge![1])).toBeGreaterThan(0)
    expect(Number(parkedGauge![1])).toBeLessThanOrEqual(40 - deliveredBeforeScrape)
  })
})
