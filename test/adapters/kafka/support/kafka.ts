import { type Admin, Kafka, type KafkaMessage, logLevel, type Producer } from 'kafkajs'
import { pino } from 'pino'
import { afterAll, beforeAll } from 'vitest'
import type { ThrottledConsumer } from '../../../../src/adapters/kafka/index.js'
import { kafkaBrokers, uniqueName } from '../../../support/services.js'

/** testLogger is silent unless MT_TEST_LOG names a pino level (e.g. MT_TEST_LOG=info). */
export const testLogger = pino({ level: process.env.MT_TEST_LOG ?? 'silent' })

/** kafkaClient is a kafkajs client on the test broker (or `brokers`), quiet unless MT_TEST_LOG is set. */
export function kafkaClient(prefix: string, brokers: string[] = kafkaBrokers()): Kafka {
  return new Kafka({
    clientId: uniqueName(prefix),
    brokers,
    logLevel: process.env.MT_TEST_LOG ? logLevel.WARN : logLevel.NOTHING,
  })
}

/** KafkaFixture is what a test file on the broker shares: a client, its admin and producer, and the consumers to stop. */
export interface KafkaFixture {
  kafka: Kafka
  admin: Admin
  producer: Producer
  /** consumers are stopped after the file's tests; push every consumer a test runs. */
  consumers: ThrottledConsumer[]
}

/**
 * useKafkaFixture connects a client's admin and producer before the file's tests and,
 * after them, stops every consumer pushed to `consumers` and disconnects. Read its fields
 * inside tests (they are set in beforeAll).
 */
export function useKafkaFixture(clientPrefix: string): KafkaFixture {
  const fixture = { consumers: [] as ThrottledConsumer[] } as KafkaFixture
  beforeAll(async () => {
    fixture.kafka = kafkaClient(clientPrefix)
    fixture.admin = fixture.kafka.admin()
    fixture.producer = fixture.kafka.producer()
    await Promise.all([fixture.admin.connect(), fixture.producer.connect()])
  })
  afterAll(async () => {
    await Promise.all(fixture.consumers.map((c) => c.stop()))
    await Promise.all([fixture.admin?.disconnect(), fixture.producer?.disconnect()])
  })
  return fixture
}

/**
 * createTopics creates each topic with `partitions` partitions and waits until every
 * partition has a leader. kafkajs's own `waitForLeaders: true` gives up on the first
 * UNKNOWN_TOPIC_OR_PARTITION, which a KRaft broker answers while the new topic's metadata
 * propagates; this waits through it.
 */
export async function createTopics(admin: Admin, partitions: number, ...topics: string[]): Promise<void> {
  await admin.createTopics({
    topics: topics.map((topic) => ({ topic, numPartitions: partitions })),
    waitForLeaders: false,
  })
  await waitForLeaders(admin, topics, 30_000)
}

/** waitForLeaders polls metadata until every partition of `topics` has a leader. */
export async function waitForLeaders(admin: Admin, topics: string[], timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs
  let last: unknown
  while (performance.now() < deadline) {
    try {
      const { topics: metadata } = await admin.fetchTopicMetadata({ topics })
      const ready = metadata.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))
      if (ready) return
      last = 'partitions without a leader'
    } catch (error) {
      last = error
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`topics ${topics.join(', ')} have no leaders after ${timeoutMs} ms: ${String(last)}`)
}

/** Payload is what the test producers write: the merchant and its message's sequence number. */
export interface Payload {
  merchant: string
  seq: number
}

/**
 * merchantSchedule lists `total` messages over merchants with the given weights, in a
 * seeded random interleaving, each merchant's messages numbered 0, 1, 2, … in order.
 */
export function merchantSchedule(weights: Record<string, number>, total: number, seed = 42): Payload[] {
  const merchants = Object.keys(weights)
  const cumulative: number[] = []
  let sum = 0
  for (const merchant of merchants) {
    sum += weights[merchant]!
    cumulative.push(sum)
  }
  const random = mulberry32(seed)
  const next = new Map<string, number>()
  const schedule: Payload[] = []
  for (let i = 0; i < total; i++) {
    const pick = random() * sum
    const merchant = merchants[cumulative.findIndex((c) => pick < c)]!
    const seq = next.get(merchant) ?? 0
    next.set(merchant, seq + 1)
    schedule.push({ merchant, seq })
  }
  return schedule
}

/** produce writes `payloads` keyed by merchant, JSON values, in batches, in order. */
export async function produce(
  producer: Producer,
  topic: string,
  payloads: Payload[],
  batch = 1_000,
): Promise<void> {
  for (let i = 0; i < payloads.length; i += batch) {
    await producer.send({
      topic,
      messages: payloads.slice(i, i + batch).map((p) => ({ key: p.merchant, value: JSON.stringify(p) })),
    })
  }
}

/** endOffsets maps "topic:partition" to the partition's high watermark (the offset after its last message). */
export async function endOffsets(admin: Admin, topic: string): Promise<Record<string, number>> {
  const offsets: Record<string, number> = {}
  for (const { partition, high } of await admin.fetchTopicOffsets(topic))
    offsets[`${topic}:${partition}`] = Number(high)
  return offsets
}

/** committedOffsets maps "topic:partition" to the group's committed offset (-1 when none). */
export async function committedOffsets(
  admin: Admin,
  groupId: string,
  topic: string,
): Promise<Record<string, number>> {
  const offsets: Record<string, number> = {}
  const [result] = await admin.fetchOffsets({ groupId, topics: [topic] })
  for (const { partition, offset } of result!.partitions) offsets[`${topic}:${partition}`] = Number(offset)
  return offsets
}

/** readTopic consumes `count` messages of `topic` from the beginning with a plain kafkajs consumer. */
export async function readTopic(
  kafka: Kafka,
  topic: string,
  count: number,
  timeoutMs = 20_000,
): Promise<KafkaMessage[]> {
  const consumer = kafka.consumer({ groupId: uniqueName('reader'), maxWaitTimeInMs: 200 })
  const messages: KafkaMessage[] = []
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`read ${messages.length} of ${count} messages of ${topic}`)),
        timeoutMs,
      )
      void consumer.run({
        eachMessage: async ({ message }) => {
          messages.push(message)
          if (messages.length >= count) {
            clearTimeout(timer)
            resolve()
          }
        },
      })
    })
  } finally {
    await consumer.disconnect()
  }
  return messages
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
