// Issue 14, the hot merchant's rate while its backlog is parked and read back: a one-partition
// topic holds MT_BENCH_BACKLOG messages of one merchant (100/s burst 10 by default), and the
// consumer runs with its parking topic for MT_BENCH_SECONDS. Every start of the hot merchant's
// handler is timed (performance.now); the report gives its starts per second and, for windows
// W from 100 ms to 10 s, the fewest and most starts in any window beside the bounds
// rate × W − 1 and burst + rate × W, and where the first windows out of bounds were, with the
// consumer's state sampled every 100 ms around them.
//   KAFKA_BROKERS=127.0.0.1:33489 node --import tsx bench/kafka-hot-rate.ts
import { randomUUID } from 'node:crypto'
import { createThrottledConsumer, type ThrottledConsumerStats } from '../src/adapters/kafka/index.js'
import { KeyedLimiter } from '../src/limiter/index.js'
import { countBetween, watchStalls, windowCounts } from '../test/adapters/kafka/support/windows.js'
import { benchBrokers, benchKafka, createTopic, produceKeyed } from './kafka-support.js'

const HOT = 'hot'
const BACKLOG = Number(process.env.MT_BENCH_BACKLOG ?? 100_000)
const RATE_PER_SEC = Number(process.env.MT_BENCH_RATE ?? 100)
const BURST = Number(process.env.MT_BENCH_BURST ?? 10)
const SECONDS = Number(process.env.MT_BENCH_SECONDS ?? 40)
const PARKING_PARTITIONS = Number(process.env.MT_BENCH_PARKING_PARTITIONS ?? 16)
/** SKIP_MS leaves the windows of the first SKIP_MS after the first start out (the consumer starting). */
const SKIP_MS = Number(process.env.MT_BENCH_SKIP_MS ?? 0)
const WINDOWS_MS = [100, 250, 500, 1_000, 2_000, 5_000, 10_000]

interface Sample {
  atMs: number
  stats: Pick<
    ThrottledConsumerStats,
    'parked' | 'parkQueued' | 'parkTransactions' | 'pausedPartitions' | 'buffered' | 'lateGrants' | 'delayed'
  >
}

const brokers = await benchBrokers()
const kafka = benchKafka(brokers, 'bench-kafka-hot-rate')
const admin = kafka.admin()
const producer = kafka.producer()
await Promise.all([admin.connect(), producer.connect()])
const topic = `bench-hot-rate-${randomUUID().slice(0, 8)}`
await createTopic(admin, topic, 1)
await createTopic(admin, `${topic}-dlq`, 1)
await createTopic(admin, `${topic}-parking`, PARKING_PARTITIONS)
await produceKeyed(
  producer,
  topic,
  Array.from({ length: BACKLOG }, (_, i) => ({ key: HOT, value: `{"n":${i}}` })),
)
// Batches the consumer takes and the event loop's stalls, to tell what held the handlers up.
const batches: { atMs: number; topic: string; size: number; tookMs: number }[] = []
const makeConsumer = kafka.consumer.bind(kafka)
kafka.consumer = (config) => {
  const inner = makeConsumer(config)
  inner.on(inner.events.END_BATCH_PROCESS, ({ payload }) =>
    batches.push({
      atMs: performance.now(),
      topic: payload.topic,
      size: payload.batchSize,
      tookMs: payload.duration,
    }),
  )
  return inner
}
const stopWatching = watchStalls(30)
const limiter = new KeyedLimiter({ rate: '1000000/s' })
limiter.setRate(HOT, `${RATE_PER_SEC}/s burst ${BURST}`)
const starts: number[] = []
const consumer = createThrottledConsumer({
  kafka,
  groupId: `bench-hot-rate-${randomUUID()}`,
  topics: [topic],
  fromBeginning: true,
  deadLetterTopic: `${topic}-dlq`,
  limiter,
  parking: { topics: { [topic]: `${topic}-parking` } },
  stopTimeoutMs: 1_000,
  handler: async ({ merchantKey }) => {
    if (merchantKey === HOT) starts.push(performance.now())
    await new Promise((resolve) => setTimeout(resolve, 1))
  },
})
const samples: Sample[] = []
const sampler = setInterval(() => {
  const s = consumer.stats()
  samples.push({
    atMs: performance.now(),
    stats: {
      parked: s.parked,
      parkQueued: s.parkQueued,
      parkTransactions: s.parkTransactions,
      pausedPartitions: s.pausedPartitions,
      buffered: s.buffered,
      lateGrants: s.lateGrants,
      delayed: s.delayed,
    },
  })
}, 100)
await consumer.run()
await new Promise((resolve) => setTimeout(resolve, SECONDS * 1_000))
clearInterval(sampler)
const stalls = stopWatching()
const endMs = performance.now()
const final = consumer.stats()
await consumer.stop()
await admin.deleteTopics({ topics: [topic, `${topic}-dlq`, `${topic}-parking`] })
await Promise.all([admin.disconnect(), producer.disconnect()])

const firstMs = starts[0]!
const perSecond: number[] = []
for (let from = firstMs; from + 1_000 <= endMs; from += 1_000)
  perSecond.push(countBetween(starts, from, from + 1_000))
console.log(
  `backlog ${BACKLOG}, ${RATE_PER_SEC}/s burst ${BURST}, ${SECONDS} s: ${starts.length} hot starts; ` +
    `parked ${final.parked} in ${final.parkTransactions} transactions, late grants ${final.lateGrants}, pauses ${final.pauses}`,
)
console.log(`per second from the first start: ${perSecond.join(' ')}`)
// From the first start to the end the merchant has a backlog (it cannot drain 100,000 here).
let outOfBounds = 0
for (const windowMs of WINDOWS_MS) {
  const { fewest, most, fewestAtMs, mostAtMs } = windowCounts(starts, windowMs, firstMs + SKIP_MS, endMs)
  const low = (RATE_PER_SEC * windowMs) / 1_000 - 1
  const high = BURST + (RATE_PER_SEC * windowMs) / 1_000
  const verdict = fewest >= low && most <= high ? 'ok' : 'OUT'
  if (verdict === 'OUT') outOfBounds++
  console.log(
    `W ${String(windowMs).padStart(5)} ms: fewest ${fewest} (bound ${low}) at +${((fewestAtMs - firstMs) / 1_000).toFixed(2)} s, ` +
      `most ${most} (bound ${high}) at +${((mostAtMs - firstMs) / 1_000).toFixed(2)} s  ${verdict}`,
  )
}
const gaps = starts
  .slice(1)
  .map((at, i) => ({ gapMs: at - starts[i]!, atMs: starts[i]! }))
  .sort((a, b) => b.gapMs - a.gapMs)
  .slice(0, 5)
console.log(
  `longest gaps between starts: ${gaps.map((g) => `${g.gapMs.toFixed(0)} ms at +${((g.atMs - firstMs) / 1_000).toFixed(2)} s`).join(', ')}`,
)
const rel = (atMs: number) => `+${((atMs - firstMs) / 1_000).toFixed(2)} s`
console.log(
  `event loop stalls over 30 ms: ${stalls.length}; longest: ${[...stalls]
    .sort((a, b) => b.lateMs - a.lateMs)
    .slice(0, 8)
    .map((s) => `${s.lateMs.toFixed(0)} ms at ${rel(s.atMs)}`)
    .join(', ')}`,
)
const bigBatches = batches.filter((b) => b.size >= 1_000)
console.log(
  `batches of 1,000 or more: ${bigBatches.length}; ${bigBatches
    .slice(0, 40)
    .map(
      (b) =>
        `${b.topic.endsWith('-parking') ? 'parking' : 'source'} ${b.size} at ${rel(b.atMs)} took ${b.tookMs} ms`,
    )
    .join(', ')}`,
)
if (process.env.MT_BENCH_SAMPLES !== undefined) {
  for (const { atMs, stats } of samples) {
    const at = ((atMs - firstMs) / 1_000).toFixed(1)
    console.log(`+${at} s starts ${countBetween(starts, atMs - 100, atMs)} ${JSON.stringify(stats)}`)
  }
}
process.exitCode = outOfBounds > 0 ? 1 : 0
