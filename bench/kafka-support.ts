import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { type Admin, Kafka, logLevel, type Producer } from 'kafkajs'

/**
 * Shared by the bench/kafka-*.ts scenarios: where the broker is ($KAFKA_BROKERS, else the
 * broker scripts/kafka-local runs or starts; loopback only), topics, producing, versions.
 */

const execFileAsync = promisify(execFile)
const kafkaLocal = fileURLToPath(new URL('../scripts/kafka-local', import.meta.url))

/** benchBrokers is $KAFKA_BROKERS, or the broker `scripts/kafka-local start` runs (reused if running). */
export async function benchBrokers(): Promise<string[]> {
  const list =
    process.env.KAFKA_BROKERS ?? (await execFileAsync(kafkaLocal, ['start'], { timeout: 180_000 })).stdout
  const brokers = list.trim().split(',')
  for (const broker of brokers) {
    const host = broker.replace(/:\d+$/, '').replace(/^\[|\]$/g, '')
    if (!(host === 'localhost' || host === '::1' || host.startsWith('127.'))) {
      throw new TypeError(
        `benchmarks run on loopback only: expected KAFKA_BROKERS on 127.0.0.0/8 or ::1, got ${host}`,
      )
    }
  }
  return brokers
}

/** benchKafka is a quiet kafkajs client. */
export function benchKafka(brokers: string[], clientId: string): Kafka {
  return new Kafka({ clientId, brokers, logLevel: logLevel.NOTHING })
}

/** versionsLine names the kafkajs and broker versions a Kafka benchmark ran with. */
export async function versionsLine(): Promise<string> {
  const kafkajs = JSON.parse(
    await readFile(new URL('../node_modules/kafkajs/package.json', import.meta.url), 'utf8'),
  ) as { version: string }
  let broker = 'a broker from $KAFKA_BROKERS'
  if (process.env.KAFKA_BROKERS === undefined) {
    const { stdout } = await execFileAsync(kafkaLocal, ['status'])
    broker = /Kafka (\S+)/.exec(stdout)?.[0] ?? 'Kafka (version unknown)'
    broker += ' (scripts/kafka-local, one KRaft node)'
  }
  return `kafkajs ${kafkajs.version}, ${broker} on loopback`
}

/** createTopic creates `topic` and waits until each of its partitions has a leader. */
export async function createTopic(admin: Admin, topic: string, partitions: number): Promise<void> {
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: false })
  // A KRaft broker answers UNKNOWN_TOPIC_OR_PARTITION until the new topic's metadata
  // propagates (kafkajs's waitForLeaders gives up on it): poll through it.
  const deadline = performance.now() + 30_000
  let last: unknown = 'no answer'
  while (performance.now() < deadline) {
    try {
      const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
      if (topics.every((t) => t.partitions.length === partitions && t.partitions.every((p) => p.leader >= 0)))
        return
      last = 'partitions without a leader'
    } catch (error) {
      last = error
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`topic ${topic} has no leaders after 30 s: ${String(last)}`)
}

/** produceKeyed writes the messages in order, in batches of 2,000. */
export async function produceKeyed(
  producer: Producer,
  topic: string,
  messages: { key: string; value: string }[],
): Promise<void> {
  for (let i = 0; i < messages.length; i += 2_000) {
    await producer.send({ topic, messages: messages.slice(i, i + 2_000) })
  }
}

/** fixed formats a number with `digits` decimals. */
export function fixed(value: number, digits = 1): string {
  return value.toFixed(digits)
}
