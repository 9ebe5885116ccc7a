// Memory of createThrottledConsumer with 100,000 merchants active at once: each has one
// message handled and the next one waiting in its lane for its reservation.
//   node --import tsx bench/kafka-memory.ts
import { spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { createThrottledConsumer } from '../src/adapters/kafka/index.js'
import { KeyedLimiter, ReservationBook } from '../src/limiter/index.js'
import { benchBrokers, benchKafka, createTopic, fixed, produceKeyed, versionsLine } from './kafka-support.js'
import { machineLine, writeSection } from './report.js'

// Heap figures need a full GC before each reading: rerun this file with --expose-gc.
if (typeof globalThis.gc !== 'function') {
  const child = spawnSync(process.execPath, ['--expose-gc', ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
  })
  process.exit(child.status ?? 1)
}
const gc = globalThis.gc as () => void

const MERCHANTS = 100_000
const PARTITIONS = 6

function heapUsedAfterGc(): number {
  for (let i = 0; i < 3; i++) gc()
  return process.memoryUsage().heapUsed
}

const brokers = await benchBrokers()
const kafka = benchKafka(brokers, 'bench-kafka-memory')
const admin = kafka.admin()
const producer = kafka.producer()
await Promise.all([admin.connect(), producer.connect()])
const topic = `bench-memory-${randomUUID().slice(0, 8)}`
await createTopic(admin, topic, PARTITIONS)
await createTopic(admin, `${topic}-dlq`, 1)
// Two messages per merchant: every merchant's first, then every merchant's second.
const key = (i: number) => `merchant-${String(i % MERCHANTS).padStart(6, '0')}`
await produceKeyed(
  producer,
  topic,
  Array.from({ length: 2 * MERCHANTS }, (_, i) => ({ key: key(i), value: `{"order":${i},"amount":1250}` })),
)

// The limiter alone, with the same keys and reservations held as the lanes hold them (rows
// of a ReservationBook), for the breakdown.
const limiterBaseMs = heapUsedAfterGc()
const lone = new KeyedLimiter({ rate: '1/min burst 1', maxKeys: 2 * MERCHANTS })
const book = new ReservationBook()
const held = Array.from({ length: MERCHANTS }, (_, i) => {
  lone.tryAcquire(key(i))
  return lone.reserveIn(book, key(i))
})
const limiterBytes = heapUsedAfterGc() - limiterBaseMs
held.length = 0

// kafkajs's messages alone: a plain consumer that keeps the first MERCHANTS messages it gets.
const messagesBase = heapUsedAfterGc()
const kept: unknown[] = []
const plain = kafka.consumer({ groupId: `bench-memory-plain-${randomUUID()}` })
await plain.connect()
await plain.subscribe({ topics: [topic], fromBeginning: true })
await plain.run({
  eachBatch: async ({ batch }) => {
    for (const message of batch.messages) if (kept.length < MERCHANTS) kept.push(message)
  },
})
while (kept.length < MERCHANTS) await new Promise((resolve) => setTimeout(resolve, 100))
await plain.stop()
const messageBytes = heapUsedAfterGc() - messagesBase
await plain.disconnect()
kept.length = 0

// 1/min with a burst of 1: the first message of each merchant runs at once, the second waits
// about a minute in its lane, holding its reservation.
const limiter = new KeyedLimiter({ rate: '1/min burst 1', maxKeys: 2 * MERCHANTS })
let handled = 0
const consumer = createThrottledConsumer({
  kafka,
  groupId: `bench-memory-${randomUUID()}`,
  topics: [topic],
  fromBeginning: true,
  deadLetterTopic: `${topic}-dlq`,
  limiter,
  maxBufferedPerPartition: 2 * MERCHANTS,
  stopTimeoutMs: 1_000,
  handler: async () => {
    handled++
  },
})
const before = heapUsedAfterGc()
const startedMs = performance.now()
await consumer.run()
const deadline = performance.now() + 90_000
while (handled < MERCHANTS || consumer.stats().lanesWaiting < MERCHANTS) {
  if (performance.now() > deadline)
    throw new Error(`only ${handled} handled, ${consumer.stats().lanesWaiting} waiting`)
  await new Promise((resolve) => setTimeout(resolve, 200))
}
const activeAfterSec = (performance.now() - startedMs) / 1_000
const after = heapUsedAfterGc()
const stats = consumer.stats()
const rss = process.memoryUsage().rss
await consumer.stop()
await admin.deleteTopics({ topics: [topic, `${topic}-dlq`] })
await Promise.all([admin.disconnect(), producer.disconnect()])

const perMerchant = (after - before) / MERCHANTS
const limiterPerKey = limiterBytes / MERCHANTS
const perMessage = messageBytes / MERCHANTS
console.error(
  `${MERCHANTS} active: heap +${fixed((after - before) / 2 ** 20)} MiB (${fixed(perMerchant, 0)} B/merchant), limiter ${fixed(limiterPerKey, 0)} B/key`,
)
await writeSection(
  'kafka-memory',
  `## Kafka adapter: memory with ${MERCHANTS.toLocaleString('en')} merchants active

${MERCHANTS.toLocaleString('en')} merchants, two keyed messages each (${2 * MERCHANTS} messages, ${PARTITIONS} partitions, ~30-byte JSON
values). The limit is 1/min with a burst of 1, so each merchant's first message is handled at once
and its second waits about a minute in its lane: at the reading every merchant has a lane, a held
reservation, a pending wake-up and a buffered message, and the limiter holds ${MERCHANTS.toLocaleString('en')} keys.
Heap used after a full GC (\`--expose-gc\`), read before \`run()\` and once all ${MERCHANTS.toLocaleString('en')} lanes were
waiting (${fixed(activeAfterSec)} s after \`run()\`).

${machineLine()}; ${await versionsLine()}.
Command: \`node --import tsx bench/kafka-memory.ts\` (it reruns itself with \`--expose-gc\`)

| | bytes |
| --- | ---: |
| heap growth, whole consumer | ${fixed((after - before) / 2 ** 20)} MiB |
| per active merchant (lane, reservation, wake-up, buffered message, limiter key) | **${fixed(perMerchant, 0)}** |
| of which the limiter, per key with a held reservation (a ReservationBook row, measured alone) | ${fixed(limiterPerKey, 0)} |
| of which the buffered kafkajs message (measured alone: a plain consumer keeping ${MERCHANTS.toLocaleString('en')}) | ${fixed(perMessage, 0)} |
| the rest: lane, wake-up, offset tracking, per merchant | ${fixed(perMerchant - limiterPerKey - perMessage, 0)} |
| process RSS at the reading | ${fixed(rss / 2 ** 20)} MiB |

At the reading: ${stats.lanes} lanes, ${stats.lanesWaiting} waiting, ${stats.buffered} messages buffered, ${limiter.size} limiter keys.

**Target (issue 14): lanes + limiter at most 300 B per active merchant.** Here
${fixed(perMerchant - perMessage, 0)} B (everything but the buffered kafkajs message): ${perMerchant - perMessage <= 300 ? '**met**' : '**not met**'}.
What each active merchant holds: its lane (one small object: state, flags and attempts in one
integer, the head item, the queue behind it and the merchant key in one field, no timer or
closure), a slot of its partition's LaneTable (open addressing over one array of lanes), a
row of the dispatcher's ReservationBook (4 numbers in one Float64Array) for the reservation it
waits on, a slot of the wake-up heap (its due time in a Float64Array), the buffered message's
item (partition, sequence number, bytes, key) and its offset's slot in the partition's tracker;
in the limiter, its key's Map entry and arrival time. The buffer itself is bounded in bytes
(\`maxBufferedBytes\`).
A merchant with nothing buffered costs only its limiter key: lanes are removed as soon as they
are empty. (A kafkajs message's key and value are slices of its fetch response, so a buffered
message can keep that response's buffer alive.)`,
)
console.error('wrote the kafka-memory section of docs/benchmarks.md')
