import { describe, expect, it } from 'vitest'
import { createThrottledConsumer } from '../../../src/adapters/kafka/index.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import {
  createTopics,
  merchantSchedule,
  type Payload,
  produce,
  testLogger,
  useKafkaFixture,
} from './support/kafka.js'
import { watchStalls, windowCounts } from './support/windows.js'

// Issue 14: two hot merchants parked on one parking partition (a parking topic of one
// partition forces it), at different rates, with quiet merchants beside them. Reading the
// partition gives both merchants' messages in the order they were moved; the slow one's lane
// fills first, and pausing the partition for it starved the fast one.
const RATES = { fast: { perSec: 100, burst: 10 }, slow: { perSec: 20, burst: 2 } } as const
const BACKLOG_EACH = 5_000
const QUIET_MERCHANTS = 5
const MEASURE_MS = 10_000
const WINDOWS_MS = [1_000, 2_000, 5_000]
/** STALL_ALLOWANCE_MS: see consumer-parking-rate.int.test.ts. */
const STALL_ALLOWANCE_MS = 300

describe('createThrottledConsumer with two hot merchants on one parking partition', () => {
  const fixture = useKafkaFixture('kafka-parking-shared-test')

  it('holds each to its own rate within the window bounds: the slow one full does not hold up the fast one', async () => {
    const { kafka, admin, producer, consumers } = fixture
    const topic = uniqueName('park-shared')
    await createTopics(admin, 1, topic, `${topic}-dlq`, `${topic}-parking`)
    const weights: Record<string, number> = { fast: BACKLOG_EACH, slow: BACKLOG_EACH }
    for (let i = 0; i < QUIET_MERCHANTS; i++) weights[`quiet-${i}`] = 10
    const schedule = merchantSchedule(weights, 2 * BACKLOG_EACH, 5)
    await produce(producer, topic, schedule)
    const limiter = new KeyedLimiter({ rate: '100000/s' })
    for (const [merchant, { perSec, burst }] of Object.entries(RATES))
      limiter.setRate(merchant, `${perSec}/s burst ${burst}`)
    const startsMs: Record<string, number[]> = { fast: [], slow: [] }
    const seqs = new Map<string, number[]>()
    const consumer = createThrottledConsumer<Payload>({
      kafka,
      groupId: uniqueName('group'),
      topics: [topic],
      fromBeginning: true,
      deadLetterTopic: `${topic}-dlq`,
      limiter,
      parking: { topics: { [topic]: `${topic}-parking` }, maxBufferedPerMerchant: 150, maxBatch: 200 },
      consumerConfig: { maxBytesPerPartition: 16 * 1024 },
      decode: (value) => JSON.parse(value!.toString()) as Payload,
      logger: testLogger,
      handler: async ({ value }) => {
        startsMs[value.merchant]?.push(performance.now())
        const list = seqs.get(value.merchant) ?? []
        list.push(value.seq)
        seqs.set(value.merchant, list)
      },
    })
    consumers.push(consumer)
    const stalls = watchStalls()
    await consumer.run()
    await waitFor(
      'both hot merchants started',
      () => startsMs.fast!.length > 0 && startsMs.slow!.length > 0,
      20_000,
    )
    const firstMs = Math.max(startsMs.fast![0]!, startsMs.slow![0]!)
    await waitFor('the measured stretch', () => performance.now() - firstMs >= MEASURE_MS, MEASURE_MS + 5_000)
    const endMs = performance.now()
    const stats = consumer.stats()
    const longStalls = stalls()
    await consumer.stop()

    expect(stats.parkedMerchants).toBe(2)
    // The partition was read again from messages passed over (one join: no refetch otherwise).
    expect(stats.refetchedSkipped).toBeGreaterThan(0)
    expect(stats.parkedHandled).toBeGreaterThan(RATES.fast.perSec * 2)
    for (const [merchant, list] of seqs) expect(list, merchant).toEqual(list.map((_, i) => i))
    // The quiet merchants, among the hot ones on the same source partition, are all done.
    for (let i = 0; i < QUIET_MERCHANTS; i++) {
      const merchant = `quiet-${i}`
      expect(seqs.get(merchant)?.length, merchant).toBe(
        schedule.filter((p) => p.merchant === merchant).length,
      )
    }
    const counts = Object.entries(RATES).flatMap(([merchant, rate]) =>
      WINDOWS_MS.map((windowMs) => ({
        merchant,
        ...rate,
        windowMs,
        ...windowCounts(startsMs[merchant]!, windowMs, firstMs, endMs),
      })),
    )
    console.info(
      `parking shared test: ${counts.map((c) => `${c.merchant} ${c.windowMs} ms: ${c.fewest}-${c.most}`).join(', ')}; ` +
        `parked ${stats.parked}, read back ${stats.parkedHandled}, ${stats.pauses} pauses; ` +
        `event loop stalls over 30 ms: ${longStalls.length}, longest ${Math.max(0, ...longStalls.map((s) => s.lateMs)).toFixed(0)} ms`,
    )
    for (const { merchant, perSec, burst, windowMs, fewest, most } of counts) {
      // Both still have a backlog at the end: the windows are under a standing backlog.
      expect(startsMs[merchant]!.length, merchant).toBeLessThan(BACKLOG_EACH / 2)
      expect(most, `${merchant}: most in ${windowMs} ms`).toBeLessThanOrEqual(
        burst + (perSec * windowMs) / 1_000 + 1,
      )
      expect(fewest, `${merchant}: fewest in ${windowMs} ms`).toBeGreaterThanOrEqual(
        (perSec * (windowMs - STALL_ALLOWANCE_MS)) / 1_000 - 1,
      )
    }
  })
  it('reads the messages passed over again after a stop and a new owner: every message handled, each merchant in order', async () => {
    const { kafka, admin, producer, consumers } = fixture
    const topic = uniqueName('park-shared-restart')
    await createTopics(admin, 1, topic, `${topic}-dlq`, `${topic}-parking`)
    const schedule = merchantSchedule({ fast: 2_000, slow: 150, 'quiet-0': 10 }, 2_160, 9)
    await produce(producer, topic, schedule)
    const groupId = uniqueName('group')
    const lines: Payload[] = []
    const start = () => {
      const limiter = new KeyedLimiter({ rate: '100000/s' })
      limiter.setRate('fast', '400/s burst 10')
      limiter.setRate('slow', '40/s burst 2')
      const consumer = createThrottledConsumer<Payload>({
        kafka,
        groupId,
        topics: [topic],
        fromBeginning: true,
        deadLetterTopic: `${topic}-dlq`,
        limiter,
        maxBufferedPerMerchant: 20,
        parking: { topics: { [topic]: `${topic}-parking` }, maxBufferedPerMerchant: 40, maxBatch: 100 },
        consumerConfig: { maxBytesPerPartition: 8 * 1024 },
        decode: (value) => JSON.parse(value!.toString()) as Payload,
        logger: testLogger,
        handler: async ({ value }) => {
          lines.push(value)
        },
      })
      consumers.push(consumer)
      return consumer
    }
    const first = start()
    await first.run()
    await waitFor('messages passed over and read again', () => lines.length >= 600, 20_000)
    // Read again from a message passed over: what lay between was fetched again (one join, no rejoin).
    expect(first.stats().refetchedSkipped).toBeGreaterThan(0)
    await first.stop()
    const second = start()
    await second.run()
    const unique = () => new Set(lines.map((l) => `${l.merchant}#${l.seq}`))
    await waitFor('every message handled', () => unique().size >= schedule.length, 30_000)

    // First seen in order per merchant: a message passed over never ran after a newer one.
    for (const merchant of ['fast', 'slow', 'quiet-0']) {
      const firstSeen: number[] = []
      for (const { merchant: m, seq } of lines)
        if (m === merchant && !firstSeen.includes(seq)) firstSeen.push(seq)
      expect(firstSeen, merchant).toEqual(firstSeen.map((_, i) => i))
    }
    console.info(
      `parking shared restart test: ${lines.length - unique().size} duplicates of ${schedule.length}`,
    )
  })
})
