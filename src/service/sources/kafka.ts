import type { Kafka, KafkaMessage } from 'kafkajs'
import { createThrottledConsumer, type ThrottledConsumer } from '../../adapters/kafka/index.js'
import { PermanentFailureError, RetryLaterError } from '../../errors.js'
import type { Config } from '../config.js'
import {
  reportDelivered,
  reportFailure,
  type Source,
  type SourceHandler,
  type SourceWiring,
} from './source.js'

type KafkaSourceConfig = Extract<Config['sources'][number], { kind: 'kafka' }>

/**
 * startKafkaSource checks the topic, creates its dead-letter topic when missing, and runs
 * a throttled consumer on it with the source's handler. It resolves once consuming.
 */
export async function startKafkaSource(
  config: KafkaSourceConfig,
  handler: SourceHandler,
  wiring: SourceWiring,
  kafka: Kafka,
  stopTimeoutMs: number,
): Promise<Source> {
  const sourceLabel = `kafka:${config.topic}`
  const deadLetterTopic = config.deadLetterTopic ?? `${config.topic}.dead-letter`
  await ensureDeadLetterTopic(kafka, config.topic, deadLetterTopic)
  const keyOf =
    handler.keyOf !== undefined
      ? (message: KafkaMessage) => handler.keyOf!(parseJson(message.value))
      : config.keyFrom === 'key'
        ? undefined
        : keySourceOf(config.keyFrom)
  const consumer: ThrottledConsumer = createThrottledConsumer({
    kafka,
    groupId: config.groupId,
    topics: [config.topic],
    limiter: wiring.limiter,
    ...(keyOf === undefined ? {} : { keyOf }),
    concurrency: config.concurrency,
    maxAttempts: config.attempts,
    deadLetterTopic,
    stopTimeoutMs,
    inFlight: wiring.inFlight,
    breakers: wiring.breakers,
    // As on BullMQ: every retryable outcome (timeouts, connection errors, 5xx, a module's own errors) counts.
    isEndpointFailure: (error) =>
      !(error instanceof RetryLaterError || error instanceof PermanentFailureError),
    logger: wiring.logger.child({ source: sourceLabel }),
    handler: async (message) => {
      // listed on the status page from its first call, not only once a call succeeds
      wiring.activity.seen(message.merchantKey)
      try {
        await handler.handle({
          id: `${message.topic}/${message.partition}/${message.offset}`,
          data: parseJson(message.message.value),
          attempt: message.attempt,
        })
        reportDelivered(wiring, sourceLabel, message.merchantKey)
      } catch (error) {
        // The consumer dead-letters a permanent failure at once, any other after maxAttempts calls.
        const deadLettered = error instanceof PermanentFailureError || message.attempt >= config.attempts
        reportFailure(wiring, sourceLabel, message.merchantKey, error, deadLettered)
        throw error
      }
    },
  })
  let running = false
  consumer.on('crash', ({ restart }) => {
    if (!restart) running = false
  })
  await consumer.run()
  running = true
  return {
    kind: 'kafka',
    name: config.topic,
    concurrency: config.concurrency,
    ready: () => running,
    close: async () => {
      running = false
      await consumer.stop()
    },
  }
}

function parseJson(value: Buffer | null): unknown {
  if (value === null) return null
  try {
    return JSON.parse(value.toString('utf8'))
  } catch {
    return value.toString('utf8')
  }
}

function keySourceOf(keyFrom: string): { header: string } | { field: string } {
  const [kind, ...rest] = keyFrom.split(':')
  const name = rest.join(':')
  return kind === 'header' ? { header: name } : { field: name }
}

/**
 * ensureDeadLetterTopic checks that the source topic exists (a worker never creates the
 * topic it consumes: a typo would otherwise consume an empty new one) and creates the
 * dead-letter topic when missing, with the source's partition count.
 */
async function ensureDeadLetterTopic(kafka: Kafka, topic: string, deadLetterTopic: string): Promise<void> {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const topics = await admin.listTopics()
    if (!topics.includes(topic)) {
      throw new TypeError(`config field 'sources': Kafka topic '${topic}' does not exist; create it first`)
    }
    if (topics.includes(deadLetterTopic)) return
    const metadata = await admin.fetchTopicMetadata({ topics: [topic] })
    const partitions = metadata.topics[0]?.partitions.length ?? 1
    // kafkajs's waitForLeaders gives up on a KRaft broker still creating the topic; the producer retries
    await admin.createTopics({
      waitForLeaders: false,
      topics: [{ topic: deadLetterTopic, numPartitions: partitions }],
    })
  } finally {
    await admin.disconnect()
  }
}
