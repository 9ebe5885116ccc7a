import { type Admin, Kafka, logLevel, type Producer } from 'kafkajs'
import {
  createKafkaControlSource,
  type KafkaControlSource,
  type KafkaControlSourceOptions,
} from '../../src/control/kafka-source.js'
import { KeyedLimiter } from '../../src/limiter/index.js'

/** ControlFixture holds what one control integration test opened, so that afterEach can close it all. */
export interface ControlFixture {
  kafka: Kafka
  admin: Admin
  producer: Producer
  sources: KafkaControlSource[]
  topics: string[]
}

/** openFixture connects an admin and a producer to `brokers`. */
export async function openFixture(brokers: string[], clientId: string): Promise<ControlFixture> {
  const kafka = new Kafka({ clientId, brokers, logLevel: logLevel.NOTHING })
  const admin = kafka.admin()
  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await admin.connect()
  await producer.connect()
  return { kafka, admin, producer, sources: [], topics: [] }
}

/** closeFixture stops every source, deletes the topics and disconnects. */
export async function closeFixture(fixture: ControlFixture | undefined): Promise<void> {
  if (fixture === undefined) return
  await Promise.all(fixture.sources.map((source) => source.stop()))
  await fixture.producer.disconnect()
  if (fixture.topics.length > 0) await fixture.admin.deleteTopics({ topics: fixture.topics })
  await fixture.admin.disconnect()
}

/** startSource starts a control source with a limiter of its own (default 100/min) and waits until it is ready. */
export async function startSource(
  fixture: ControlFixture,
  options: Omit<KafkaControlSourceOptions, 'kafka' | 'limiter'>,
): Promise<{ source: KafkaControlSource; limiter: KeyedLimiter }> {
  const limiter = new KeyedLimiter({ rate: '100/min' })
  const source = createKafkaControlSource({ kafka: fixture.kafka, limiter, ...options })
  fixture.sources.push(source)
  await source.start()
  await source.ready
  return { source, limiter }
}

/** send publishes raw records, as anyone with write access to the topic could. */
export async function send(
  fixture: ControlFixture,
  topic: string,
  records: Array<{ key: string | null; value: string | Buffer | null; headers?: Record<string, string> }>,
): Promise<void> {
  await fixture.producer.send({ topic, acks: -1, messages: records })
}

/** overridesOf lists a limiter's own overrides as `limit/intervalMs` text, to compare tables. */
export function overridesOf(limiter: KeyedLimiter): Record<string, string> {
  const { overrides } = limiter.rates()
  return Object.fromEntries(
    Object.keys(overrides)
      .sort()
      .map((key) => [key, `${overrides[key]!.limit}/${overrides[key]!.intervalMs}`]),
  )
}
