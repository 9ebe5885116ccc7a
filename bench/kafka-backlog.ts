// Standing backlog (issue 14): how fast quiet merchants are handled while a hot merchant on
// the same partition has 100,000 messages waiting, and whether the hot merchant holds its
// rate; createThrottledConsumer with its parking topic, side by side in one run with the
// adapter before the parking path (MT_BENCH_OLD_ADAPTER: a checkout of 7729fa9) and with
// kafkajs's documented pause-the-partition pattern.
//   git worktree add /tmp/kafka-old 7729fa9 && ln -s "$PWD/node_modules" /tmp/kafka-old/node_modules
//   MT_BENCH_OLD_ADAPTER=/tmp/kafka-old node --import tsx bench/kafka-backlog.ts
import { randomUUID } from 'node:crypto'
import type { Kafka, KafkaMessage } from 'kafkajs'
import { createThrottledConsumer } from '../src/adapters/kafka/index.js'
import { KeyedLimiter } from '../src/limiter/index.js'
import { benchBrokers, benchKafka, createTopic, fixed, produceKeyed, versionsLine } from './kafka-support.js'
import { machineLine, writeSection } from './report.js'

const HOT = 'hot'
const HOT_BACKLOG = Number(process.env.MT_BENCH_BACKLOG ?? 100_000)
const HOT_RATE_PER_SEC = 200
const HOT_BURST = 20
const QUIET_MERCHANTS = 20
const QUIET_PER_SEC = 20
const WARMUP_MS = 3_000
const WINDOW_MS = 12_000
const PARKING_PARTITIONS = 16

interface Run {
  quietProduced: number
  quietHandled: number
  /** quiet latencies (ms, message timestamp to handler start), sorted. */
  latenciesMs: number[]
  /** hotPerSec: the hot merchant's handled per second over the window. */
  hotPerSec: number
  /** hotMostPerSec: the most hot starts in any 1 s of the window (limit: burst + rate). */
  hotMostPerSec: number
}

type Started = (merchant: string, message: KafkaMessage) => void
type Contender = (kafka: Kafka, topic: string, started: Started) => Promise<() => Promise<void>>

/** handler stands for an I/O call of about 1 ms. */
const handler = () => new Promise<void>((resolve) => setTimeout(resolve, 1))

function limiter(): KeyedLimiter {
  const keyed = new KeyedLimiter({ rate: '1000000/s' })
  keyed.setRate(HOT, `${HOT_RATE_PER_SEC}/s burst ${HOT_BURST}`)
  return keyed
}

const parking: Contender = async (kafka, topic, started) => {
  const consumer = createThrottledConsumer({
    kafka,
    groupId: `bench-backlog-${randomUUID()}`,
    topics: [topic],
    fromBeginning: true,
    deadLetterTopic: `${topic}-dlq`,
    limiter: limiter(),
    parking: { topics: { [topic]: `${topic}-parking` } },
    stopTimeoutMs: 1_000,
    handler: async ({ merchantKey, message }) => {
      started(merchantKey, message)
      await handler()
    },
  })
  await consumer.run()
  return () => consumer.stop()
}

async function oldAdapter(path: string): Promise<Contender> {
  const old = (await import(
    `${path}/src/adapters/kafka/index.ts`
  )) as typeof import('../src/adapters/kafka/index.js')
  return async (kafka, topic, started) => {
    const consumer = old.createThrottledConsumer({
      kafka,
      groupId: `bench-backlog-old-${randomUUID()}`,
      topics: [topic],
      fromBeginning: true,
      deadLetterTopic: `${topic}-dlq`,
      limiter: limiter(),
      stopTimeoutMs: 1_000,
      handler: async ({ merchantKey, message }) => {
        started(merchantKey, message)
        await handler()
      },
    } as Parameters<typeof old.createThrottledConsumer>[0])
    await consumer.run()
    return () => consumer.stop()
  }
}

const pausePattern: Contender = async (kafka, topic, started) => {
  const keyed = limiter()
  const consumer = kafka.consumer({ groupId: `bench-backlog-pause-${randomUUID()}`, maxWaitTimeInMs: 250 })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    // As kafkajs documents it: pause the partition, resume it when the merchant may go
    // again, and re-throw so that the message is delivered again.
    eachMessage: async ({ message, pause }) => {
      const merchant = message.key!.toString()
      if (!keyed.tryAcquire(merchant)) {
        const resumeLater = pause()
        setTimeout(resumeLater, Math.max(1, keyed.inspect(merchant)?.waitMs ?? 1))
        throw new Error(`${merchant} throttled`)
      }
      started(merchant, message)
      await handler()
    },
  })
  return () => consumer.disconnect()
}

/** measure runs one contender on a fresh topic holding the hot backlog, producing quiet messages at a steady pace. */
async function measure(kafka: Kafka, contender: Contender): Promise<Run> {
  const admin = kafka.admin()
  const producer = kafka.producer()
  await Promise.all([admin.connect(), producer.connect()])
  const topic = `bench-backlog-${randomUUID().slice(0, 8)}`
  await createTopic(admin, topic, 1)
  await createTopic(admin, `${topic}-dlq`, 1)
  await createTopic(admin, `${topic}-parking`, PARKING_PARTITIONS)
  await produceKeyed(
    producer,
    topic,
    Array.from({ length: HOT_BACKLOG }, (_, i) => ({ key: HOT, value: `{"n":${i}}` })),
  )
  const latenciesMs: number[] = []
  const hotStartsMs: number[] = []
  const stop = await contender(kafka, topic, (merchant, message) => {
    const nowMs = Date.now()
    if (merchant === HOT) hotStartsMs.push(nowMs)
    else latenciesMs.push(nowMs - Number(message.timestamp))
  })
  await new Promise((resolve) => setTimeout(resolve, WARMUP_MS))
  const windowStartMs = Date.now()
  let quietProduced = 0
  while (Date.now() - windowStartMs < WINDOW_MS) {
    const merchant = `quiet-${quietProduced % QUIET_MERCHANTS}`
    await producer.send({ topic, messages: [{ key: merchant, value: `{"q":${quietProduced}}` }] })
    quietProduced++
    await new Promise((resolve) => setTimeout(resolve, 1_000 / QUIET_PER_SEC))
  }
  await new Promise((resolve) => setTimeout(resolve, 1_000))
  const windowEndMs = Date.now()
  await stop()
  await admin.deleteTopics({ topics: [topic, `${topic}-dlq`, `${topic}-parking`] })
  await Promise.all([admin.disconnect(), producer.disconnect()])
  const inWindow = hotStartsMs.filter((at) => at >= windowStartMs && at < windowEndMs)
  let hotMostPerSec = 0
  for (let from = windowStartMs; from + 1_000 <= windowEndMs; from += 50) {
    hotMostPerSec = Math.max(hotMostPerSec, inWindow.filter((at) => at >= from && at < from + 1_000).length)
  }
  return {
    quietProduced,
    quietHandled: latenciesMs.length,
    latenciesMs: latenciesMs.sort((a, b) => a - b),
    hotPerSec: inWindow.length / ((windowEndMs - windowStartMs) / 1_000),
    hotMostPerSec,
  }
}

function percentile(sorted: number[], p: number): string {
  if (sorted.length === 0) return 'none handled'
  return `${fixed(sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * p) - 1)]!, 0)} ms`
}

const brokers = await benchBrokers()
const kafka = benchKafka(brokers, 'bench-kafka-backlog')
const contenders: [string, Contender][] = [['lanes + parking topic (this branch)', parking]]
const oldPath = process.env.MT_BENCH_OLD_ADAPTER
if (oldPath !== undefined)
  contenders.push(['lanes before the parking path (7729fa9)', await oldAdapter(oldPath)])
contenders.push(['pause-the-partition pattern', pausePattern])

const rows: string[] = []
for (const [name, contender] of contenders) {
  const run = await measure(kafka, contender)
  console.error(
    `${name}: quiet ${run.quietHandled}/${run.quietProduced}, p50 ${percentile(run.latenciesMs, 0.5)}, p99 ${percentile(run.latenciesMs, 0.99)}, hot ${fixed(run.hotPerSec)}/s (most ${run.hotMostPerSec} in 1 s)`,
  )
  rows.push(
    `| ${name} | ${run.quietHandled} of ${run.quietProduced} | ${percentile(run.latenciesMs, 0.5)} | ${percentile(run.latenciesMs, 0.99)} | ${fixed(run.hotPerSec)} | ${run.hotMostPerSec} |`,
  )
}

await writeSection(
  'kafka-backlog',
  `## Kafka adapter: quiet merchants beside a standing backlog

A one-partition topic holds ${HOT_BACKLOG.toLocaleString('en')} messages of one merchant, limited to ${HOT_RATE_PER_SEC}/s burst ${HOT_BURST}.
After ${WARMUP_MS / 1_000} s, ${QUIET_MERCHANTS} quiet merchants (limits that never bind) send ${QUIET_PER_SEC} messages a second to the same
partition for ${WINDOW_MS / 1_000} s. Quiet latency: from a message's timestamp to its handler's start. The handler waits 1 ms.
One run per consumer, each on a fresh topic and group, one after the other.

- **lanes + parking topic**: \`createThrottledConsumer\` with \`parking\` (a ${PARKING_PARTITIONS}-partition parking topic), other options default.
- **lanes before the parking path**: the adapter at 7729fa9, defaults (\`maxBufferedPerPartition\` 5,000, then the partition pauses).${oldPath === undefined ? ' (Not run: MT_BENCH_OLD_ADAPTER unset.)' : ''}
- **pause-the-partition pattern**: a plain \`eachMessage\` consumer that pauses the partition, schedules its resume and re-throws.

${machineLine()}; ${await versionsLine()}. The machine was shared with other work (2 cores).
Command: \`MT_BENCH_OLD_ADAPTER=/tmp/kafka-old node --import tsx bench/kafka-backlog.ts\`

| consumer | quiet handled in the window | quiet p50 | quiet p99 | hot merchant/s | hot most in 1 s (limit ${HOT_BURST + HOT_RATE_PER_SEC}) |
| --- | ---: | ---: | ---: | ---: | ---: |
${rows.join('\n')}

The hot merchant's figure for the parking topic is over the whole window: while its backlog is
being moved (each message encoded, written in a transaction of 500, read back), the moves share
the consumer's one event loop with the handlers (the mover yields between transactions), so the
hot merchant may run below its rate until its backlog is parked.`,
)
console.error('wrote the kafka-backlog section of docs/benchmarks.md')
