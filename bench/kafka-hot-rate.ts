// Issue 14, the hot merchant's rate while its backlog is parked and read back: a one-partition
// topic holds MT_BENCH_BACKLOG messages of one merchant (200/s burst 20 by default, as in
// kafka-backlog), and the consumer runs with its parking topic for MT_BENCH_SECONDS. Every
// start of the hot merchant's handler is timed (performance.now); the report gives its starts
// per second and, for windows W from 100 ms to 10 s, the fewest and most starts in any window
// beside the bounds rate × W − 1 and burst + rate × W (from the first start, and from 1 s
// after it), the event loop's stalls and the large batches; MT_BENCH_SAMPLES=1 adds the
// consumer's state every 100 ms; MT_BENCH_FETCH_BYTES=131072 passes that consumerConfig.maxBytesPerPartition
// (kafkajs's default: 1 MiB).
//   KAFKA_BROKERS=127.0.0.1:33489 node --import tsx bench/kafka-hot-rate.ts
import { randomUUID } from 'node:crypto'
import { createThrottledConsumer, type ThrottledConsumerStats } from '../src/adapters/kafka/index.js'
import { KeyedLimiter } from '../src/limiter/index.js'
import { countBetween, watchStalls, windowCounts } from '../test/adapters/kafka/support/windows.js'
import { benchBrokers, benchKafka, createTopic, produceKeyed, versionsLine } from './kafka-support.js'
import { machineLine, writeSection } from './report.js'

const HOT = 'hot'
const BACKLOG = Number(process.env.MT_BENCH_BACKLOG ?? 100_000)
const RATE_PER_SEC = Number(process.env.MT_BENCH_RATE ?? 200)
const BURST = Number(process.env.MT_BENCH_BURST ?? 20)
const SECONDS = Number(process.env.MT_BENCH_SECONDS ?? 25)
const PARKING_PARTITIONS = Number(process.env.MT_BENCH_PARKING_PARTITIONS ?? 16)
const FETCH_BYTES =
  process.env.MT_BENCH_FETCH_BYTES === undefined ? undefined : Number(process.env.MT_BENCH_FETCH_BYTES)
/** SKIP_MS is where the second set of windows starts after the first start (the consumer's first read of the backlog left out). */
const SKIP_MS = 1_000
const WINDOWS_MS = [100, 250, 500, 1_000, 2_000, 5_000, 10_000]
/** BLOCK_THRESHOLD_MS: a 5 ms timer this late or later marks the event loop blocked for the lateness. */
const BLOCK_THRESHOLD_MS = 2

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
// Every stall over BLOCK_THRESHOLD_MS, to tell how much of each window the event loop was not
// running anything (the adjusted floor below).
const stopWatchingBlocks = watchStalls(BLOCK_THRESHOLD_MS)
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
  ...(FETCH_BYTES === undefined ? {} : { consumerConfig: { maxBytesPerPartition: FETCH_BYTES } }),
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
const blocks = stopWatchingBlocks().map((s) => ({ fromMs: s.atMs + 5, toMs: s.atMs + 5 + s.lateMs }))
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
const rows: string[] = []
for (const windowMs of WINDOWS_MS) {
  const all = windowCounts(starts, windowMs, firstMs, endMs)
  const later = windowCounts(starts, windowMs, firstMs + SKIP_MS, endMs)
  const low = (RATE_PER_SEC * windowMs) / 1_000 - 1
  const high = BURST + (RATE_PER_SEC * windowMs) / 1_000
  console.log(
    `W ${String(windowMs).padStart(5)} ms: fewest ${all.fewest}, from 1 s ${later.fewest} at +${((later.fewestAtMs - firstMs) / 1_000).toFixed(2)} s (bound ${low}); ` +
      `most ${all.most} at +${((all.mostAtMs - firstMs) / 1_000).toFixed(2)} s (bound ${high})`,
  )
  const adjusted = adjustedMargin(starts, blocks, windowMs, firstMs + SKIP_MS, endMs)
  console.log(
    `           fewest less rate × (W − blocked) − 1, from 1 s: ${adjusted.margin.toFixed(2)} at +${((adjusted.atMs - firstMs) / 1_000).toFixed(2)} s (the window blocked ${adjusted.blockedMs.toFixed(0)} ms)`,
  )
  rows.push(
    `| ${windowMs} ms | ${all.fewest} | ${later.fewest} | ${low} | ${adjusted.margin.toFixed(1)} (${adjusted.blockedMs.toFixed(0)} ms blocked) | ${all.most} | ${high} |`,
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
const fetchLine =
  FETCH_BYTES === undefined
    ? 'other options default (kafkajs fetches up to 1 MiB a partition)'
    : `\`consumerConfig.maxBytesPerPartition\` ${FETCH_BYTES.toLocaleString('en')}, other options default`
const stallsAfterFirst = stalls.filter((s) => s.atMs >= firstMs)
await writeSection(
  'kafka-hot-rate',
  `## Kafka adapter: the hot merchant's rate while its backlog is parked

A one-partition topic holds ${BACKLOG.toLocaleString('en')} messages of one merchant, limited to ${RATE_PER_SEC}/s burst ${BURST};
\`createThrottledConsumer\` with a ${PARKING_PARTITIONS}-partition parking topic, ${fetchLine}, runs for ${SECONDS} s
(the move of the backlog to the parking topic takes most of it). The handler waits 1 ms. Starts of the hot
merchant's handler, counted in every window of each length (exactly: a window's edges slide over the starts),
from the first start and from 1 s after it. The first second holds the consumer's first read of the whole
backlog: kafkajs decodes each fetch in one go (1 MiB: about 48,000 of these messages, 100-350 ms here), and
the lane, which starts one message per turn of the event loop (its handler waits on a timer), gets few turns
while 100,000 messages are decoded and buffered: its tokens are there, the turns are not.

${machineLine()}; ${await versionsLine()}. The machine was shared with other work (2 cores).
Command: \`${FETCH_BYTES === undefined ? '' : `MT_BENCH_FETCH_BYTES=${FETCH_BYTES} `}node --import tsx bench/kafka-hot-rate.ts\`

Starts per second from the first: ${perSecond.join(' ')}

| window | fewest | fewest from 1 s | at least (rate × W − 1) | from 1 s: least starts − (rate × (W − blocked) − 1) | most | at most (burst + rate × W) |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: |
${rows.join('\n')}

Event loop stalls over 30 ms after the first start: ${stallsAfterFirst.length}, the longest ${Math.max(0, ...stallsAfterFirst.map((s) => s.lateMs)).toFixed(0)} ms.
Why a window falls short although the bucket holds ${((BURST / RATE_PER_SEC) * 1_000).toFixed(0)} ms of the rate to catch up with: a start held up g ms
by the event loop is missing from every window that ends when the stall does, which holds about
rate × (W − g) starts, whatever the merchant catches up afterwards. The catch-up is there (the lane starts
every head that fell due in the turn it wakes, up to the burst: the long windows and the most show it), but
rate × W − 1 holds in every window only if no start is held up more than about 2 / rate (10 ms at 200/s).
The fifth column takes that time out: a 5 ms timer that fires ${BLOCK_THRESHOLD_MS} ms or more late marks the event loop
blocked for its lateness (${blocks.length} such stalls, ${blocks.reduce((sum, b) => sum + b.toMs - b.fromMs, 0).toFixed(0)} ms in all), and each window from 1 s on is held to
rate × (W − the time blocked inside it) − 1; the column is the least margin over every window (0 or more:
the lane started all the rate let it while the process was running).`,
)
console.error('wrote the kafka-hot-rate section of docs/benchmarks.md')

/**
 * adjustedMargin is the least, over windows [t, t + windowMs) inside [fromMs, toMs], of the
 * starts in the window less rate × (windowMs − the time `blocks` cover inside it) − 1, with
 * where it is and how long that window was blocked. The margin changes slope only at a block's
 * edges and steps only at starts, so windows at every start (and just past it) and at every
 * block edge (as left or right edge) are tried.
 */
function adjustedMargin(
  startsMs: number[],
  blockList: { fromMs: number; toMs: number }[],
  windowMs: number,
  fromMs: number,
  toMs: number,
): { margin: number; atMs: number; blockedMs: number } {
  const blockedIn = (leftMs: number, rightMs: number) => {
    let total = 0
    for (const b of blockList) total += Math.max(0, Math.min(b.toMs, rightMs) - Math.max(b.fromMs, leftMs))
    return total
  }
  const best = { margin: Number.POSITIVE_INFINITY, atMs: fromMs, blockedMs: 0 }
  const consider = (leftMs: number) => {
    if (leftMs < fromMs || leftMs + windowMs > toMs) return
    const blockedMs = blockedIn(leftMs, leftMs + windowMs)
    const margin =
      countBetween(startsMs, leftMs, leftMs + windowMs) -
      ((RATE_PER_SEC * (windowMs - blockedMs)) / 1_000 - 1)
    if (margin < best.margin) Object.assign(best, { margin, atMs: leftMs, blockedMs })
  }
  for (const atMs of startsMs) {
    consider(atMs)
    consider(atMs + 1e-6)
  }
  for (const b of blockList)
    for (const edge of [b.fromMs, b.toMs]) {
      consider(edge)
      consider(edge - windowMs)
    }
  return best
}
