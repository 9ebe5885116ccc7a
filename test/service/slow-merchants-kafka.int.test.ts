import type { Admin, Producer } from 'kafkajs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { publishControlChange } from '../../src/control/index.js'
import { parseRate } from '../../src/limiter/index.js'
import { type RunningService, type StatusSnapshot, startService } from '../../src/service/service.js'
import { createTopics, kafkaClient, testLogger } from '../adapters/kafka/support/kafka.js'
import { startServer, type TestServer } from '../handlers/support.js'
import { kafkaBrokers, uniqueName } from '../support/services.js'
import { waitFor } from '../support/wait-for.js'
import { loadWorkerConfig } from '../support/worker-config.js'

// A hanging merchant on a Kafka source whose messages are spread over 6 partitions (keyed
// by event, merchant from the payload), so it has up to 6 lanes: its cap, set on the
// control topic, holds it to 2 handlers at once, and the quiet merchants are not starved.

const SECRET = 'whsec_a2Fma2Etc2VydmljZS10ZXN0LXNlY3JldC0zMi1ieXRlcyE='

/** startKafkaService runs the worker on a Kafka source keyed by the payload's merchantId, with a Kafka control topic. */
async function startKafkaService(options: {
  jobsTopic: string
  controlTopic: string
  groupId: string
  breaker: object
  concurrency: number
  attempts: number
  merchantLabels?: string[]
}): Promise<RunningService> {
  const { config } = loadWorkerConfig(
    {
      kafka: { brokers: kafkaBrokers() },
      control: { topic: options.controlTopic },
      limiter: { defaultRate: '1000/s' },
      breaker: options.breaker,
      sources: [
        {
          kind: 'kafka',
          topic: options.jobsTopic,
          groupId: options.groupId,
          handler: 'webhook',
          keyFrom: 'field:merchantId',
          concurrency: options.concurrency,
          attempts: options.attempts,
        },
      ],
      webhook: { client: { timeoutMs: 2_000 }, defaultSecret: SECRET },
      metrics: { merchantLabels: options.merchantLabels ?? [] },
      shutdown: { deadlineMs: 3_000 },
    },
    { env: {} },
  )
  return startService(config, testLogger)
}

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
    service = await startKafkaService({
      jobsTopic,
      controlTopic,
      groupId: uniqueName('svc-slow-group'),
      breaker: { failureThreshold: 100_000 },
      concurrency: 10,
      attempts: 1,
    })
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
    await waitFor('the new cap', () => service.inFlight.capOf('hang') === 2, 10_000)
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
    await waitFor('100 quiet deliveries', () => quiet() >= 100, 20_000)
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

// A merchant answering 500 for 10 s on a Kafka source: its messages are keyed by merchant
// (one partition, one lane, order kept), so exactly one of its requests is out at a time.
// Its breaker opens after the 3rd failure; while it is open nothing reaches the merchant,
// while half-open only the probe does; no message is dead-lettered, and all are delivered
// in order once it answers 200 again. Quiet merchants on the same topic keep flowing.

describe('a merchant answering 500 for 10 s on a Kafka source trips its circuit breaker', () => {
  const jobsTopic = uniqueName('svc-breaker-jobs')
  const controlTopic = uniqueName('svc-breaker-control')
  const groupId = uniqueName('svc-breaker-group')
  const deadLetterTopic = `${jobsTopic}.dead-letter`
  const kafka = kafkaClient('svc-breaker-kafka-test')
  const FLAKY_MESSAGES = 20
  const QUIET_MESSAGES = 20
  const PARTITIONS = 3
  let admin: Admin
  let producer: Producer
  let merchants: TestServer
  let service: RunningService
  let outageEndsAtMs = Number.POSITIVE_INFINITY
  const arrivals: Array<{ atMs: number; n: number; status: number; breaker: string }> = []

  beforeAll(async () => {
    admin = kafka.admin()
    await admin.connect()
    await createTopics(admin, PARTITIONS, jobsTopic)
    producer = kafka.producer()
    await producer.connect()
    merchants = await startServer('127.0.0.1', (request, response, body) => {
      if (request.url!.startsWith('/flaky')) {
        const now = performance.now()
        if (outageEndsAtMs === Number.POSITIVE_INFINITY) outageEndsAtMs = now + 10_000
        const status = now < outageEndsAtMs ? 500 : 200
        arrivals.push({
          atMs: now,
          n: (JSON.parse(body) as { n: number }).n,
          status,
          breaker: service.breakers.view('flaky').state,
        })
        response.writeHead(status).end()
        return
      }
      response.end('ok')
    })
    service = await startKafkaService({
      jobsTopic,
      controlTopic,
      groupId,
      breaker: { failureThreshold: 3, windowMs: 10_000, coolDownMs: 2_000, maxCoolDownMs: 4_000 },
      concurrency: 10,
      attempts: 10,
      merchantLabels: ['flaky'],
    })
  })

  afterAll(async () => {
    await service?.stop()
    await producer?.disconnect()
    await admin?.deleteTopics({ topics: [jobsTopic, deadLetterTopic, controlTopic] }).catch(() => undefined)
    await admin?.disconnect()
    await merchants?.close()
  })

  const message = (merchantId: string, n: number, partition?: number) => ({
    key: merchantId,
    ...(partition === undefined ? {} : { partition }),
    value: JSON.stringify({
      merchantId,
      eventId: `evt_${merchantId}_${n}`,
      url: `${merchants.origin}/${merchantId}`,
      payload: { n },
    }),
  })

  /** warmUp writes to every partition until each has a delivery: the group has joined and holds its offsets. */
  async function warmUp(): Promise<void> {
    const warmed = new Set<number>()
    const warmedPartitions = () => {
      for (const r of merchants.requests)
        if (r.path.startsWith('/warm')) warmed.add((JSON.parse(r.body) as { n: number }).n % PARTITIONS)
      return warmed.size === PARTITIONS
    }
    for (let round = 0; round < 40 && !warmedPartitions(); round++) {
      await producer.send({
        topic: jobsTopic,
        messages: Array.from({ length: PARTITIONS }, (_, p) => message('warm', round * PARTITIONS + p, p)),
      })
      await new Promise((resolve) => setTimeout(resolve, 500))
    }
    expect(warmedPartitions()).toBe(true)
  }

  it('opens after 3 failures, sends only probes while open, dead-letters nothing, and delivers every message in order', async () => {
    await warmUp()
    const transitions: Array<{ state: string; atMs: number }> = []
    const poll = setInterval(() => {
      const state = service.breakers.view('flaky').state
      if (transitions.at(-1)?.state !== state) transitions.push({ state, atMs: performance.now() })
    }, 20)
    try {
      await producer.send({
        topic: jobsTopic,
        messages: Array.from({ length: FLAKY_MESSAGES }, (_, n) => message('flaky', n)),
      })
      await waitFor('the breaker to open', () => service.breakers.view('flaky').state === 'open', 10_000)
      const whileOpen = (await (await fetch(`${service.url}/status.json`)).json()) as StatusSnapshot
      // Quiet merchants on the same topic are not held by flaky's breaker.
      await producer.send({
        topic: jobsTopic,
        messages: Array.from({ length: QUIET_MESSAGES }, (_, n) => message(`quiet${n % 5}`, n)),
      })
      const quiet = () => merchants.requests.filter((r) => r.path.startsWith('/quiet')).length
      await waitFor('the quiet deliveries', () => quiet() >= QUIET_MESSAGES, 5_000)
      const quietDoneAtMs = performance.now()
      const delivered = () => arrivals.filter((a) => a.status === 200)
      await waitFor('every flaky message delivered', () => delivered().length >= FLAKY_MESSAGES, 30_000)

      const duringOutage = arrivals.filter((a) => a.atMs < outageEndsAtMs)
      const probes = duringOutage.filter((a) => a.breaker === 'half-open')
      const whileClosed = duringOutage.filter((a) => a.breaker === 'closed')
      const sentWhileOpen = duringOutage.filter((a) => a.breaker === 'open')
      const metrics = await (await fetch(`${service.url}/metrics`)).text()
      const transitionCount = (from: string, to: string) =>
        Number(
          metrics.match(
            new RegExp(`mt_breaker_transitions_total\\{from="${from}",to="${to}",merchant="flaky"\\} (\\d+)`),
          )?.[1] ?? 0,
        )
      const halfOpenings = transitionCount('open', 'half-open')
      const status = (await (await fetch(`${service.url}/status.json`)).json()) as StatusSnapshot
      console.info(
        `kafka flaky: ${duringOutage.length} requests during the 10 s outage (${whileClosed.length} while closed, ${sentWhileOpen.length} while open, ${probes.length} probes while half-open); ${halfOpenings} half-openings in all; transitions ${transitions.map((t) => t.state).join(' > ')}; ${delivered().length} delivered of ${arrivals.length} requests; quiet done ${Math.round(outageEndsAtMs - quietDoneAtMs)} ms before the outage ended`,
      )

      // Opens after the configured 3 failures, each sent while it was closed.
      expect(transitions.slice(0, 2).map((t) => t.state)).toEqual(['closed', 'open'])
      expect(arrivals.slice(0, 3).map((a) => [a.breaker, a.status])).toEqual([
        ['closed', 500],
        ['closed', 500],
        ['closed', 500],
      ])
      expect(whileClosed).toHaveLength(3)
      expect(whileOpen.slow.breakers).toContainEqual(
        expect.objectContaining({ merchantKey: 'flaky', state: 'open', openings: 1 }),
      )
      // While open nothing reaches the merchant; while half-open, one probe per half-opening.
      expect(sentWhileOpen).toHaveLength(0)
      expect(probes.length).toBeGreaterThanOrEqual(1)
      expect(probes.length).toBeLessThanOrEqual(halfOpenings)
      expect(transitionCount('closed', 'open')).toBe(1)
      expect(transitionCount('half-open', 'open')).toBe(probes.length)
      expect(transitionCount('half-open', 'closed')).toBe(1)
      expect(metrics).toMatch(/mt_breaker_refused_total [1-9]/)
      expect(status.merchants.find((m) => m.merchantKey === 'flaky')?.breaker.state).toBe('closed')
      expect(quietDoneAtMs).toBeLessThan(outageEndsAtMs)

      // Every message delivered once, in order; every request in order (retries repeat the head).
      expect(delivered().map((a) => a.n)).toEqual(Array.from({ length: FLAKY_MESSAGES }, (_, n) => n))
      const sequence = arrivals.map((a) => a.n)
      expect(sequence).toEqual([...sequence].sort((a, b) => a - b))

      // Nothing dead-lettered, and the group's committed offsets reach the end of every partition.
      expect(metrics).not.toMatch(/mt_handler_outcomes_total\{[^}]*outcome="dead-lettered"[^}]*\} [1-9]/)
      const deadLetters = await admin.fetchTopicOffsets(deadLetterTopic)
      expect(deadLetters.map((p) => Number(p.high))).toEqual(deadLetters.map(() => 0))
      const ends = await admin.fetchTopicOffsets(jobsTopic)
      await waitFor(
        'the committed offsets to reach the end',
        async () => {
          const [committed] = await admin.fetchOffsets({ groupId, topics: [jobsTopic] })
          return ends.every(
            (end) => committed!.partitions.find((p) => p.partition === end.partition)?.offset === end.high,
          )
        },
        5_000,
      )
    } finally {
      clearInterval(poll)
    }
  }, 45_000)
})
