// Isolation: how fast the other merchants complete while one merchant on the same partitions
// is throttled, with createThrottledConsumer's lanes against kafkajs's documented pattern
// (pause the partition, re-throw, resume later), side by side in one run.
//   node --import tsx bench/kafka-isolation.ts
import { randomUUID } from 'node:crypto'
import type { Kafka } from 'kafkajs'
import { createThrottledConsumer } from '../src/adapters/kafka/index.js'
import { KeyedLimiter } from '../src/limiter/index.js'
import { benchBrokers, benchKafka, createTopic, fixed, produceKeyed, versionsLine } from './kafka-support.js'
import { machineLine, median, writeSection } from './report.js'

const PARTITIONS = 3
const OTHERS = 30
const MESSAGES = 20_000
const HOT_SHARE = 0.1
const HOT_RATE = '20/s burst 1'
const WINDOW_MS = 10_000
const ROUNDS = Number(process.env.MT_BENCH_ROUNDS ?? 3)
const HOT = 'm-hot'

interface Run {
  /** othersPerSec: the other merchants' completions per second, until they were all done or the window closed. */
  othersPerSec: number
  /** othersDoneSec: when the last other merchant's message completed, or undefined if not within the window. */
  othersDoneSec: number | undefined
  hotPerSec: number
  crashes: number
}

/** handler stands for an I/O call of about 1 ms. */
const handler = () => new Promise<void>((resolve) => setTimeout(resolve, 1))

function limiterFor(throttleHot: boolean): KeyedLimiter {
  const limiter = new KeyedLimiter({ rate: '1000000/s' })
  if (throttleHot) limiter.setRate(HOT, HOT_RATE)
  return limiter
}

/** measure counts completions from the start until the others are done or WINDOW_MS passed. */
async function measure(
  othersTotal: number,
  start: (
    completed: (merchant: string) => void,
  ) => Promise<{ stop: () => Promise<void>; crashes: () => number }>,
): Promise<Run> {
  let others = 0
  let hot = 0
  let othersDoneMs: number | undefined
  let finish!: () => void
  const finished = new Promise<void>((resolve) => {
    finish = resolve
  })
  const startedMs = performance.now()
  const running = await start((merchant) => {
    if (merchant === HOT) {
      hot++
      return
    }
    others++
    if (others === othersTotal) {
      othersDoneMs = performance.now() - startedMs
      finish()
    }
  })
  const window = setTimeout(finish, WINDOW_MS)
  await finished
  clearTimeout(window)
  const elapsedSec = (performance.now() - startedMs) / 1_000
  const run: Run = {
    othersPerSec: others / elapsedSec,
    othersDoneSec: othersDoneMs === undefined ? undefined : othersDoneMs / 1_000,
    hotPerSec: hot / elapsedSec,
    crashes: running.crashes(),
  }
  await running.stop()
  return run
}

type Contender = (kafka: Kafka, topic: string, othersTotal: number, throttleHot: boolean) => Promise<Run>

const pausePattern: Contender = (kafka, topic, othersTotal, throttleHot) =>
  measure(othersTotal, async (completed) => {
    const limiter = limiterFor(throttleHot)
    const consumer = kafka.consumer({ groupId: `bench-pause-${randomUUID()}`, maxWaitTimeInMs: 250 })
    let crashes = 0
    consumer.on(consumer.events.CRASH, () => {
      crashes++
    })
    await consumer.connect()
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({
      partitionsConsumedConcurrently: PARTITIONS,
      // As kafkajs documents it: on "too many requests", pause this partition, resume it when
      // the merchant may go again, and re-throw so that the message is delivered again.
      eachMessage: async ({ message, pause }) => {
        const merchant = message.key!.toString()
        if (!limiter.tryAcquire(merchant)) {
          const resumeLater = pause()
          setTimeout(resumeLater, Math.max(1, limiter.inspect(merchant)?.waitMs ?? 1))
          throw new Error(`${merchant} throttled`)
        }
        await handler()
        completed(merchant)
      },
    })
    return { stop: () => consumer.disconnect(), crashes: () => crashes }
  })

const lanes: Contender = (kafka, topic, othersTotal, throttleHot) =>
  measure(othersTotal, async (completed) => {
    const consumer = createThrottledConsumer({
      kafka,
      groupId: `bench-lanes-${randomUUID()}`,
      topics: [topic],
      fromBeginning: true,
      deadLetterTopic: `${topic}-dlq`,
      limiter: limiterFor(throttleHot),
      stopTimeoutMs: 1_000,
      handler: async ({ merchantKey }) => {
        await handler()
        completed(merchantKey)
      },
    })
    let crashes = 0
    consumer.on('crash', () => {
      crashes++
    })
    await consumer.run()
    return { stop: () => consumer.stop(), crashes: () => crashes }
  })

const brokers = await benchBrokers()
const kafka = benchKafka(brokers, 'bench-kafka-isolation')
const admin = kafka.admin()
const producer = kafka.producer()
await Promise.all([admin.connect(), producer.connect()])
const topic = `bench-isolation-${randomUUID().slice(0, 8)}`
await createTopic(admin, topic, PARTITIONS)
await createTopic(admin, `${topic}-dlq`, 1)
// One merchant sends HOT_SHARE of the traffic; the rest is spread over OTHERS merchants.
const messages = Array.from({ length: MESSAGES }, (_, i) => {
  const hot = i % Math.round(1 / HOT_SHARE) === 0
  return { key: hot ? HOT : `m-${i % OTHERS}`, value: `{"n":${i}}` }
})
const othersTotal = messages.filter((m) => m.key !== HOT).length
await produceKeyed(producer, topic, messages)
const hotPartitionShare = await (async () => {
  const offsets = await admin.fetchTopicOffsets(topic)
  return offsets.map((o) => o.high).join(' / ')
})()

const runs: Record<string, Run[]> = { 'pause-ref': [], 'lanes-ref': [], pause: [], lanes: [] }
const log = (name: string, run: Run) =>
  console.error(
    `${name}: others ${fixed(run.othersPerSec, 0)}/s (done ${run.othersDoneSec === undefined ? 'no' : `${fixed(run.othersDoneSec)} s`}), hot ${fixed(run.hotPerSec)}/s, crashes ${run.crashes}`,
  )
// Each round runs the four back to back, in alternating order: both consumers with the hot
// merchant throttled, and both with it not throttled (the reference).
for (let round = 0; round < ROUNDS; round++) {
  const order: [string, Contender, boolean][] = [
    ['pause', pausePattern, true],
    ['lanes', lanes, true],
    ['pause-ref', pausePattern, false],
    ['lanes-ref', lanes, false],
  ]
  if (round % 2 === 1) order.reverse()
  for (const [name, contender, throttleHot] of order) {
    const run = await contender(kafka, topic, othersTotal, throttleHot)
    runs[name]!.push(run)
    log(name, run)
  }
}
await admin.deleteTopics({ topics: [topic, `${topic}-dlq`] })
await Promise.all([admin.disconnect(), producer.disconnect()])

const med = (name: string, pick: (run: Run) => number) => median(runs[name]!.map(pick))
const doneText = (name: string) => {
  const done = runs[name]!.map((r) => r.othersDoneSec)
  return done.every((d) => d !== undefined)
    ? `${fixed(median(done as number[]))} s`
    : `not within ${WINDOW_MS / 1_000} s (${done.filter((d) => d === undefined).length} of ${done.length} runs)`
}
const row = (label: string, ref: string, name: string) =>
  `| ${label} | ${fixed(
    med(ref, (r) => r.othersPerSec),
    0,
  )} | ${fixed(
    med(name, (r) => r.othersPerSec),
    0,
  )} | **${fixed((med(name, (r) => r.othersPerSec) / med(ref, (r) => r.othersPerSec)) * 100)}%** | ${doneText(name)} | ${fixed(med(name, (r) => r.hotPerSec))} | ${runs[name]!.map((r) => r.crashes).join(', ')} |`
await writeSection(
  'kafka-isolation',
  `## Kafka adapter: isolation from a throttled merchant

How the other merchants fare while one merchant on the same partitions is throttled. A topic of
${PARTITIONS} partitions (messages per partition: ${hotPartitionShare}) holds ${MESSAGES} keyed messages: one merchant
sends ${HOT_SHARE * 100}% of them and is limited to ${HOT_RATE}; ${OTHERS} others share the rest with limits that never bind.
The handler waits 1 ms (an I/O call). Each run is a fresh group from the beginning, measured until the
others' ${othersTotal} messages are all done or ${WINDOW_MS / 1_000} s passed.

- **pause pattern**: what kafkajs documents for throttling: a plain \`eachMessage\` consumer
  (\`partitionsConsumedConcurrently: ${PARTITIONS}\`) that, when the merchant has no token, calls \`pause()\`
  for the partition, schedules its resume for when the token is there, and re-throws so that the
  message is delivered again.
- **lanes**: \`createThrottledConsumer\` with its defaults (concurrency 100).

Reference: the same consumer with the hot merchant not throttled. ${ROUNDS} rounds, each running the
four (two consumers, hot merchant throttled or not) back to back in alternating order; medians.

${machineLine()}; ${await versionsLine()}.
Command: \`node --import tsx bench/kafka-isolation.ts\`

| consumer | others/s, hot not throttled (median) | others/s, hot throttled (median) | kept | others all done after (median) | hot merchant/s (median) | kafkajs crashes per run |
| --- | ---: | ---: | ---: | --- | ---: | --- |
${row('pause pattern', 'pause-ref', 'pause')}
${row('lanes', 'lanes-ref', 'lanes')}

Runs (others/s): pause ${runs.pause!.map((r) => fixed(r.othersPerSec, 0)).join(', ')}; lanes ${runs.lanes!.map((r) => fixed(r.othersPerSec, 0)).join(', ')}.

With the pause pattern, every time the throttled merchant's message reaches the head of its
partition, the whole partition stops until that merchant may go again, and each re-throw spends
one of the runner's retries (5 by default) with a growing backoff before fetching resumes for every
partition; when they run out kafkajs crashes, restarts and forgets which partitions were paused.
With lanes the throttled merchant waits in its own lane and the others keep flowing.`,
)
console.error('wrote the kafka-isolation section of docs/benchmarks.md')
