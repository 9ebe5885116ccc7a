import { describe, expect, it } from 'vitest'
import { createThrottledConsumer } from '../../../src/adapters/kafka/index.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import {
  committedOffsets,
  createTopics,
  endOffsets,
  merchantSchedule,
  type Payload,
  produce,
  testLogger,
  useKafkaFixture,
} from './support/kafka.js'

// The short version runs in `npm test`; MT_FULL=1 runs the full size (20,000 messages).
const FULL = process.env.MT_FULL === '1'
const TOTAL = FULL ? 20_000 : 6_000
const HOT_RATE_PER_SEC = FULL ? 1_000 : 500
const HOT_BURST = 20

interface Handled {
  merchant: string
  seq: number
  startedMs: number
  doneMs: number
}

describe('createThrottledConsumer on a real broker', () => {
  const fixture = useKafkaFixture('kafka-consumer-test')

  it(`handles ${TOTAL} messages of 50 merchants in per-merchant order; the hot one is held to its rate and the others do not wait behind it`, async () => {
    const { kafka, admin, producer, consumers } = fixture
    const topic = uniqueName('payments')
    const deadLetterTopic = `${topic}-dlq`
    const groupId = uniqueName('group')
    await createTopics(admin, 6, topic)
    await createTopics(admin, 1, deadLetterTopic)

    const weights: Record<string, number> = { 'm-hot': 100 }
    for (let i = 1; i < 50; i++) weights[`m-${String(i).padStart(2, '0')}`] = 1
    const schedule = merchantSchedule(weights, TOTAL)
    const hotTotal = schedule.filter((p) => p.merchant === 'm-hot').length
    await produce(producer, topic, schedule)

    // Everyone else is far from their limit; the hot merchant is held to 500/s.
    const limiter = new KeyedLimiter({ rate: '100000/s' })
    limiter.setRate('m-hot', `${HOT_RATE_PER_SEC}/s burst ${HOT_BURST}`)
    const handled: Handled[] = []
    const consumer = createThrottledConsumer<Payload>({
      kafka,
      groupId,
      topics: [topic],
      fromBeginning: true,
      deadLetterTopic,
      limiter,
      decode: (value) => JSON.parse(value!.toString()) as Payload,
      // The bound holds the hot partition's whole backlog: past it the partition pauses and
      // its other merchants would wait (the next test shows the bound at work).
      maxBufferedPerPartition: TOTAL,
      concurrency: 64,
      logger: testLogger,
      handler: async ({ value }) => {
        const startedMs = performance.now()
        await new Promise((resolve) => setImmediate(resolve))
        handled.push({ merchant: value.merchant, seq: value.seq, startedMs, doneMs: performance.now() })
      },
    })
    consumers.push(consumer)
    const runStartedMs = performance.now()
    await consumer.run()
    await waitFor(`${TOTAL} messages handled`, () => handled.length >= TOTAL, 80_000)

    // Every message exactly once (one consumer, no rebalance), and each merchant in order.
    expect(handled).toHaveLength(TOTAL)
    const seqs = new Map<string, number[]>()
    for (const h of handled) seqs.set(h.merchant, [...(seqs.get(h.merchant) ?? []), h.seq])
    for (const [merchant, list] of seqs) {
      expect(list, merchant).toEqual(list.map((_, i) => i))
    }
    expect(seqs.size).toBe(50)

    // The hot merchant's rate: starts in any 1 s window stay within burst + rate (10% slack for
    // starts bunched by a busy event loop), and under its backlog it gets most of its rate.
    const hotStarts = handled.filter((h) => h.merchant === 'm-hot').map((h) => h.startedMs)
    let maxInWindow = 0
    for (let i = 0, j = 0; i < hotStarts.length; i++) {
      while (hotStarts[i]! - hotStarts[j]! >= 1_000) j++
      maxInWindow = Math.max(maxInWindow, i - j + 1)
    }
    expect(maxInWindow).toBeLessThanOrEqual((HOT_BURST + HOT_RATE_PER_SEC) * 1.1)
    const hotSpanSec = (hotStarts[hotStarts.length - 1]! - hotStarts[0]!) / 1_000
    const hotRate = (hotTotal - HOT_BURST) / hotSpanSec
    expect(hotRate).toBeLessThanOrEqual(HOT_RATE_PER_SEC * 1.05)
    expect(hotRate).toBeGreaterThan(HOT_RATE_PER_SEC * 0.7)

    // The others are done long before the hot merchant: they never queued behind it.
    const othersDoneMs = Math.max(...handled.filter((h) => h.merchant !== 'm-hot').map((h) => h.doneMs))
    const hotDoneMs = Math.max(...handled.filter((h) => h.merchant === 'm-hot').map((h) => h.doneMs))
    const hotMinimumMs = ((hotTotal - HOT_BURST) / HOT_RATE_PER_SEC) * 1_000
    expect(othersDoneMs - runStartedMs).toBeLessThan(hotMinimumMs / 2)
    expect(hotDoneMs - runStartedMs).toBeGreaterThan(hotMinimumMs * 0.95)

    const stats = consumer.stats()
    expect(stats.handled).toBe(TOTAL)
    expect(stats.delayed).toBeGreaterThan(0)
    expect(stats.buffered).toBe(0)
    expect(stats.lanes).toBe(0)
    await consumer.stop()
    // After stop, the committed offsets are the ends of the partitions: nothing left to redo.
    expect(await committedOffsets(admin, groupId, topic)).toEqual(await endOffsets(admin, topic))
  })

  it('pauses a partition once it holds its buffer bound and resumes it when half drained, in order and complete', async () => {
    const { kafka, admin, producer, consumers } = fixture
    const topic = uniqueName('bounded')
    const deadLetterTopic = `${topic}-dlq`
    const groupId = uniqueName('group')
    await createTopics(admin, 2, topic)
    await createTopics(admin, 1, deadLetterTopic)
    const total = 2_000
    const bound = 100
    const weights: Record<string, number> = {}
    for (let i = 0; i < 20; i++) weights[`m-${i}`] = 1
    const schedule = merchantSchedule(weights, total, 7)
    // Small sends make small record batches, and small fetches take a few of them at a time.
    await produce(producer, topic, schedule, 20)

    const limiter = new KeyedLimiter({ rate: '100000/s' })
    const handled: Payload[] = []
    let maxBuffered = 0
    const consumer = createThrottledConsumer<Payload>({
      kafka,
      groupId,
      topics: [topic],
      fromBeginning: true,
      deadLetterTopic,
      limiter,
      decode: (value) => JSON.parse(value!.toString()) as Payload,
      maxBufferedPerPartition: bound,
      consumerConfig: { maxBytesPerPartition: 2_048 },
      concurrency: 8,
      logger: testLogger,
      handler: async ({ value }) => {
        maxBuffered = Math.max(maxBuffered, consumer.stats().buffered)
        await new Promise((resolve) => setTimeout(resolve, 1))
        handled.push(value)
      },
    })
    consumers.push(consumer)
    await consumer.run()
    await waitFor(`${total} messages handled`, () => handled.length >= total, 60_000)

    expect(handled).toHaveLength(total)
    for (const merchant of Object.keys(weights)) {
      const list = handled.filter((p) => p.merchant === merchant).map((p) => p.seq)
      expect(list, merchant).toEqual(list.map((_, i) => i))
    }
    // Two partitions, each holding at most the bound plus one fetch (2 KB: under 50 messages).
    expect(maxBuffered).toBeLessThanOrEqual(2 * (bound + 50))
    const stats = consumer.stats()
    expect(stats.pauses).toBeGreaterThan(0)
    expect(stats.resumes).toBeGreaterThan(0)
    await consumer.stop()
    expect(await committedOffsets(admin, groupId, topic)).toEqual(await endOffsets(admin, topic))
  })
})
