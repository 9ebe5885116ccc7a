import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Admin, Producer } from 'kafkajs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { publishControlChange } from '../../src/control/index.js'
import { parseRate } from '../../src/limiter/index.js'
import { loadConfig } from '../../src/service/config.js'
import { type RunningService, startService } from '../../src/service/service.js'
import { createTopics, kafkaClient, testLogger } from '../adapters/kafka/support/kafka.js'
import { startServer, type TestServer } from '../handlers/support.js'
import { kafkaBrokers, uniqueName } from '../support/services.js'
import { waitFor } from '../support/worker-process.js'

// A hanging merchant on a Kafka source whose messages are spread over 6 partitions (keyed
// by event, merchant from the payload), so it has up to 6 lanes: its cap, set on the
// control topic, holds it to 2 handlers at once, and the quiet merchants are not starved.

const SECRET = 'whsec_a2Fma2Etc2VydmljZS10ZXN0LXNlY3JldC0zMi1ieXRlcyE='

describe('a hanging merchant on a Kafka source held to its in-flight cap', () => {
  const jobsTopic = uniqueName('svc-slow-jobs')
  const controlTopic = uniqueName('svc-slow-control')
  const kafka = kafkaClient('svc-slow-kafka-test')
  let admin: Admin
  let producer: Producer
  let merchants: TestServer
  let service: RunningService
  let hangingNow = 0
  let hangingMax = 0

  beforeAll(async () => {
    admin = kafka.admin()
    await admin.connect()
    await createTopics(admin, 6, jobsTopic)
    producer = kafka.producer()
    await producer.connect()
    merchants = await startServer('127.0.0.1', (request, response) => {
      if (request.url!.startsWith('/hang')) {
        hangingNow++
        hangingMax = Math.max(hangingMax, hangingNow)
        request.socket.once('close', () => hangingNow--)
        return
      }
      response.end('ok')
    })
    const dir = mkdtempSync(join(tmpdir(), 'mt-slow-kafka-'))
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({
        http: { port: 0 },
        kafka: { brokers: kafkaBrokers() },
        control: { topic: controlTopic },
        limiter: { defaultRate: '1000/s' },
        breaker: { failureThreshold: 100_000 },
        sources: [
          {
            kind: 'kafka',
            topic: jobsTopic,
            groupId: uniqueName('svc-slow-group'),
            handler: 'webhook',
            keyFrom: 'field:merchantId',
            concurrency: 10,
            attempts: 1,
          },
        ],
        webhook: { client: { allowHosts: ['127.0.0.1'], timeoutMs: 2_000 }, defaultSecret: SECRET },
        shutdown: { deadlineMs: 3_000 },
      }),
    )
    service = await startService(loadConfig({ file: join(dir, 'config.json'), env: {} }), testLogger)
  })

  afterAll(async () => {
    await service?.stop()
    await producer?.disconnect()
    await admin
      ?.deleteTopics({ topics: [jobsTopic, `${jobsTopic}.dead-letter`, controlTopic] })
      .catch(() => undefined)
    await admin?.disconnect()
    await merchants?.close()
  })

  it('takes the cap from the control topic, holds the merchant to it, and lets the quiet merchants through', async () => {
    await publishControlChange(
      producer,
      {
        type: 'set',
        merchant: 'hang',
        rate: parseRate('1000/s'),
        maxInFlight: 2,
        version: Date.now() * 1_000,
      },
      { topic: controlTopic },
    )
    await waitFor(() => service.inFlight.capOf('hang') === 2, 10_000, 'the new cap')
    const message = (merchantId: string, i: number) => ({
      key: `evt_${merchantId}_${i}`,
      value: JSON.stringify({
        merchantId,
        eventId: `evt_${merchantId}_${i}`,
        url: `${merchants.origin}/${merchantId}`,
        payload: { i },
      }),
    })
    await producer.send({
      topic: jobsTopic,
      messages: Array.from({ length: 30 }, (_, i) => message('hang', i)),
    })
    const startedAtMs = performance.now()
    await producer.send({
      topic: jobsTopic,
      messages: Array.from({ length: 100 }, (_, i) => message(`quiet${i % 20}`, i)),
    })
    const quiet = () => merchants.requests.filter((r) => r.path.startsWith('/quiet')).length
    await waitFor(() => quiet() >= 100, 20_000, '100 quiet deliveries')
    const quietMs = performance.now() - startedAtMs
    console.info(
      `kafka: hanging max in flight ${hangingMax} (cap 2, 6 lanes); 100 quiet deliveries in ${Math.round(quietMs)} ms`,
    )
    expect(hangingMax).toBe(2)
    // Without the cap the hanging lanes would hold 6 of 10 slots for 2 s each, 5 times over.
    expect(quietMs).toBeLessThan(10_000)
    expect(service.inFlight.count('hang')).toBeLessThanOrEqual(2)
  }, 45_000)
})
