import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Kafka, logLevel } from 'kafkajs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createThrottledConsumer, type ThrottledConsumer } from '../../../src/adapters/kafka/index.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import {
  committedOffsets,
  createTopics,
  endOffsets,
  merchantSchedule,
  type Payload,
  produce,
  testLogger,
} from './support/kafka.js'

const execFileAsync = promisify(execFile)
const kafkaLocal = fileURLToPath(new URL('../../../scripts/kafka-local', import.meta.url))

// This test restarts a broker: not the shared one other tests use, but a second one of its
// own (scripts/kafka-local with its own run folder; KAFKA_LOCAL_KEEP_DATA=1 restarts it on
// the same port and data, so topics and committed offsets survive).
const runDir = mkdtempSync(join(tmpdir(), 'mt-kafka-restart-'))
async function kafkaLocalCommand(command: 'start' | 'stop', keepData = false): Promise<string> {
  const env = { ...process.env, KAFKA_LOCAL_RUN: runDir, ...(keepData ? { KAFKA_LOCAL_KEEP_DATA: '1' } : {}) }
  const { stdout } = await execFileAsync(kafkaLocal, [command], { env, timeout: 150_000 })
  return stdout.trim()
}

describe('createThrottledConsumer across a broker restart', () => {
  let brokers: string[]
  let kafka: Kafka
  let consumer: ThrottledConsumer | undefined

  beforeAll(async () => {
    brokers = (await kafkaLocalCommand('start')).split(',')
    expect(brokers.every((b) => b.startsWith('127.0.0.1:'))).toBe(true)
    // Retries short enough to come back within the test's time once the broker is back.
    kafka = new Kafka({
      clientId: uniqueName('restart-test'),
      brokers,
      logLevel: process.env.MT_TEST_LOG ? logLevel.WARN : logLevel.NOTHING,
      retry: { initialRetryTime: 200, maxRetryTime: 2_000, retries: 8 },
    })
  })

  afterAll(async () => {
    await consumer?.stop()
    await kafkaLocalCommand('stop')
    rmSync(runDir, { recursive: true, force: true })
  })

  it('recovers when the broker restarts mid-run and finishes every message, in order per merchant, doing again at most what was not committed at the stop', async () => {
    const topic = uniqueName('restart')
    const deadLetterTopic = `${topic}-dlq`
    const groupId = uniqueName('group')
    const admin = kafka.admin()
    await admin.connect()
    await createTopics(admin, 3, topic)
    await createTopics(admin, 1, deadLetterTopic)
    const weights: Record<string, number> = {}
    for (let i = 0; i < 10; i++) weights[`m-${i}`] = 1
    const schedule = merchantSchedule(weights, 3_000, 5)
    const before = schedule.slice(0, 2_000)
    const after = schedule.slice(2_000)
    const producer = kafka.producer()
    await producer.connect()
    await produce(producer, topic, before)
    await producer.disconnect()
    await admin.disconnect()

    const started: string[] = []
    const handled = new Set<string>()
    const crashes: boolean[] = []
    consumer = createThrottledConsumer<Payload>({
      kafka,
      groupId,
      topics: [topic],
      fromBeginning: true,
      deadLetterTopic,
      limiter: new KeyedLimiter({ rate: '50/s burst 5' }),
      decode: (value) => JSON.parse(value!.toString()) as Payload,
      maxBufferedPerPartition: 100,
      commitIntervalMs: 300,
      consumerConfig: { heartbeatInterval: 500, sessionTimeout: 10_000 },
      logger: testLogger,
      handler: async ({ value }) => {
        started.push(`${value.merchant}#${value.seq}`)
        await new Promise((resolve) => setTimeout(resolve, 1))
        handled.add(`${value.merchant}#${value.seq}`)
      },
    })
    consumer.on('crash', ({ restart }) => crashes.push(restart))
    await consumer.run()
    await waitFor('500 messages handled', () => handled.size >= 500, 30_000)

    await kafkaLocalCommand('stop')
    const handledWhileDown = handled.size
    // Handled at the stop but not committed: what a restart may do again, at most.
    const committedAtStop = Object.values(consumer.stats().committed).reduce((sum, offset) => sum + offset, 0)
    const uncommittedAtStop = handledWhileDown - committedAtStop
    await new Promise((resolve) => setTimeout(resolve, 2_000))
    expect(await kafkaLocalCommand('start', true)).toBe(brokers.join(','))

    // New messages after the restart: the consumer must fetch again to see them.
    const admin2 = kafka.admin()
    const producer2 = kafka.producer()
    await Promise.all([admin2.connect(), producer2.connect()])
    await produce(producer2, topic, after)
    await waitFor('all 3000 messages handled', () => handled.size >= schedule.length, 60_000)
    await consumer.stop()

    for (const p of schedule)
      expect(handled.has(`${p.merchant}#${p.seq}`), `${p.merchant}#${p.seq}`).toBe(true)
    expect(await committedOffsets(admin2, groupId, topic)).toEqual(await endOffsets(admin2, topic))
    const firstStart = new Map<string, number>()
    started.forEach((id, index) => {
      if (!firstStart.has(id)) firstStart.set(id, index)
    })
    for (const p of schedule) {
      if (p.seq > 0)
        expect(firstStart.get(`${p.merchant}#${p.seq}`)!).toBeGreaterThan(
          firstStart.get(`${p.merchant}#${p.seq - 1}`)!,
        )
    }
    const stats = consumer.stats()
    const duplicates = started.length - handled.size
    expect(duplicates).toBeLessThanOrEqual(Math.max(0, uncommittedAtStop))
    console.info(
      `broker restart test: ${handledWhileDown} handled at the stop (${uncommittedAtStop} not committed), ${duplicates} duplicates, ` +
        `${crashes.length} kafkajs crash(es), ${stats.commitFailures} failed commits, ${stats.rebalances} joins`,
    )
    await Promise.all([admin2.disconnect(), producer2.disconnect()])
  })
})
