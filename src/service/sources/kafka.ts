import { setTimeout as sleep } from 'node:timers/promises'
import type { Admin, Kafka, KafkaMessage } from 'kafkajs'
import {
  createThrottledConsumer,
  type ThrottledConsumer,
  type ThrottledConsumerStats,
} from '../../adapters/kafka/index.js'
import { PermanentFailureError, RetryLaterError } from '../../errors.js'
import type { Config } from '../config.js'
import { compileKeyTemplates, type LimitKeysFunction } from '../limit-keys.js'
import type { SourceBacklog } from '../status.js'
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
  const parkingTopic = config.parking.enabled ? parkingTopicOf(config) : undefined
  await ensureTopics(kafka, config, deadLetterTopic, parkingTopic)
  const keyOf =
    handler.keyOf !== undefined
      ? (message: KafkaMessage) => handler.keyOf!(parseJson(message.value))
      : config.keyFrom === 'key'
        ? undefined
        : keySourceOf(config.keyFrom)
  const limitKeys = config.keys === undefined ? undefined : messageLimitKeys(compileKeyTemplates(config.keys))
  const consumer: ThrottledConsumer = createThrottledConsumer({
    kafka,
    groupId: config.groupId,
    topics: [config.topic],
    limiter: wiring.limiter,
    ...(keyOf === undefined ? {} : { keyOf }),
    ...(limitKeys === undefined ? {} : { limitKeys }),
    concurrency: config.concurrency,
    maxAttempts: config.attempts,
    deadLetterTopic,
    // No consumerConfig: with parking the consumer brings its own partitionAssigners.
    ...(parkingTopic === undefined ? {} : { parking: { topics: { [config.topic]: parkingTopic } } }),
    ...(config.maxBufferedPerMerchant === undefined
      ? {}
      : { maxBufferedPerMerchant: config.maxBufferedPerMerchant }),
    maxBufferedBytes: config.maxBufferedBytes,
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
  // run() resolves before the group is joined; a group without committed offsets starts at
  // the end of the topic when it first fetches, so "consuming" waits for the first assignment.
  let assigned = false
  const joined = new Promise<void>((resolve) =>
    consumer.on('assignment', () => {
      assigned = true
      resolve()
    }),
  )
  await consumer.run()
  running = true
  await Promise.race([joined, sleep(JOIN_WAIT_MS, undefined, { ref: false })])
  wiring.metrics.addBacklogReader(sourceLabel, () => kafkaBacklog(consumer.stats()).totals)
  return {
    kind: 'kafka',
    name: config.topic,
    concurrency: config.concurrency,
    ready: () => running && assigned,
    // The consumer takes no rate-change hook: a lane waiting on a reservation keeps it.
    ratesChanged: () => {},
    backlog: () => kafkaBacklog(consumer.stats()),
    close: async () => {
      running = false
      await consumer.stop()
    },
  }
}

/** JOIN_WAIT_MS bounds how long start-up waits for the group to give the consumer its partitions. */
export const JOIN_WAIT_MS = 30_000

/** LEADER_WAIT_MS bounds how long start-up waits for the partitions of topics it created to have leaders. */
export const LEADER_WAIT_MS = 10_000

/**
 * messageLimitKeys gives the consumer's `limitKeys` from compiled templates: they read the
 * value as the handler gets it, JSON when it is JSON. The consumer hands over the raw
 * Buffer, or the value it already decoded (a `field:` keyFrom decodes JSON itself).
 */
export function messageLimitKeys(
  templates: LimitKeysFunction,
): (merchantKey: string, value: unknown) => ReturnType<LimitKeysFunction> {
  return (merchantKey, value) =>
    templates(merchantKey, value === null || Buffer.isBuffer(value) ? parseJson(value) : value)
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

/** parkingTopicOf is the source's parking topic: its own, or `<topic>.parking`. */
export function parkingTopicOf(config: Pick<KafkaSourceConfig, 'topic' | 'parking'>): string {
  return config.parking.topic ?? `${config.topic}.parking`
}

/** kafkaBacklog is a consumer's waiting messages (stats) as the status and metrics read them. */
export function kafkaBacklog(
  stats: Pick<
    ThrottledConsumerStats,
    | 'backlog'
    | 'buffered'
    | 'bufferedBytes'
    | 'parkedMerchants'
    | 'parkedWaiting'
    | 'parkTransactions'
    | 'parkFailures'
    | 'lateGrants'
  >,
): SourceBacklog {
  // The adapter counts a parked message read back into a lane in `parked` only, so the two add up.
  const merchants = stats.backlog.map((row) => ({
    merchantKey: row.merchantKey,
    jobs: row.buffered + row.parked,
    parked: row.parked,
    oldestAgeMs: row.oldestAgeMs,
    ...(row.limitKeys === undefined ? {} : { limitKeys: row.limitKeys }),
  }))
  return {
    merchants,
    totals: {
      parked: stats.parkedWaiting,
      buffered: stats.buffered,
      bufferedBytes: stats.bufferedBytes,
      parkedMerchants: stats.parkedMerchants,
      parkTransactions: stats.parkTransactions,
      parkFailures: stats.parkFailures,
      lateGrants: stats.lateGrants,
    },
  }
}

/**
 * ensureTopics checks that the source topic exists (a worker never creates the topic it
 * consumes: a typo would otherwise consume an empty new one) and creates the dead-letter
 * topic when missing, with the source's partition count, and the parking topic when
 * missing, with `parking.partitionsPerSource` times as many. An existing parking topic
 * must have a multiple of the source's partitions (the consumer maps each source
 * partition to its own parking partitions).
 */
async function ensureTopics(
  kafka: Kafka,
  config: KafkaSourceConfig,
  deadLetterTopic: string,
  parkingTopic: string | undefined,
): Promise<void> {
  const topic = config.topic
  const admin = kafka.admin()
  await admin.connect()
  try {
    const topics = await admin.listTopics()
    if (!topics.includes(topic)) {
      throw new TypeError(`config field 'sources': Kafka topic '${topic}' does not exist; create it first`)
    }
    const partitionsOf = async (name: string) =>
      (await admin.fetchTopicMetadata({ topics: [name] })).topics[0]?.partitions.length ?? 1
    const partitions = await partitionsOf(topic)
    const missing: Array<{ topic: string; numPartitions: number }> = []
    if (!topics.includes(deadLetterTopic)) missing.push({ topic: deadLetterTopic, numPartitions: partitions })
    if (parkingTopic !== undefined) {
      if (!topics.includes(parkingTopic)) {
        missing.push({ topic: parkingTopic, numPartitions: partitions * config.parking.partitionsPerSource })
      } else {
        const parkingPartitions = await partitionsOf(parkingTopic)
        if (parkingPartitions % partitions !== 0) {
          throw new TypeError(
            `config field 'sources': parking topic '${parkingTopic}' has ${parkingPartitions} partitions, expected a multiple of the ${partitions} of '${topic}'`,
          )
        }
      }
    }
    if (missing.length === 0) return
    // kafkajs's waitForLeaders gives up on a KRaft broker still creating the topic: poll the metadata instead
    await admin.createTopics({ waitForLeaders: false, topics: missing })
    await waitForLeaders(
      admin,
      missing.map((created) => created.topic),
    )
  } finally {
    await admin.disconnect()
  }
}

/**
 * waitForLeaders polls the metadata of just-created `topics` until every partition has a
 * leader that answers offset look-ups, for at most LEADER_WAIT_MS: a consumer that joins
 * the group before then has them refused ("not the leader"), crashes and rejoins, and a
 * new group (no committed offsets) skips what was produced meanwhile. Past the bound it
 * goes on; kafkajs retries those look-ups.
 */
async function waitForLeaders(admin: Admin, topics: string[]): Promise<void> {
  const deadline = Date.now() + LEADER_WAIT_MS
  while (Date.now() < deadline) {
    try {
      const { topics: metadata } = await admin.fetchTopicMetadata({ topics })
      const led = metadata.every(
        (topic) =>
          topic.partitions.length > 0 && topic.partitions.every((partition) => partition.leader >= 0),
      )
      // Metadata can name a leader before it serves the partition: its offsets answer only then.
      if (led && metadata.length === topics.length) {
        for (const topic of topics) await admin.fetchTopicOffsets(topic)
        return
      }
    } catch {
      // not known to the broker yet
    }
    await sleep(100)
  }
}
