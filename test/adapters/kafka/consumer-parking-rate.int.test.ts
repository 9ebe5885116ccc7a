import { describe, expect, it } from 'vitest'
import { createThrottledConsumer } from '../../../src/adapters/kafka/index.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import { createTopics, type Payload, produce, testLogger, useKafkaFixture } from './support/kafka.js'
import { watchStalls, windowCounts } from './support/windows.js'

// Issue 14: the hot merchant holds its rate while its backlog is moved to the parking topic
// and read back, over any window W: at most burst + rate × W, at least rate × W − 1. The
// backlog is small enough for seconds, and the fetches and the parking lanes' bound are made
// small so that the test crosses every step of the move path: the source lane, the switch to
// the parking lane, moves while the lane runs, and many pauses and resumes of the parking
// partition, each refilling the lane from the parking topic (bench/kafka-hot-rate.ts measures
// the 100,000-message case).
const BACKLOG = 12_000
const RATE_PER_SEC = 100
const BURST = 10
const MEASURE_MS = 8_000
const WINDOWS_MS = [1_000, 2_000, 5_000]
/**
 * STALL_ALLOWANCE_MS is what the lower bound allows for the event loop stalling on a loaded
 * machine (kafkajs decodes a whole fetch in one go; vitest and other work share 2 cores): a
 * stall longer than the burst lasts costs the merchant starts it cannot take back.
 */
const STALL_ALLOWANCE_MS = 300

describe('createThrottledConsumer with parking: the hot merchant rate through the move path', () => {
  const fixture = useKafkaFixture('kafka-parking-rate-test')

  it('keeps the hot merchant within burst + rate × W and rate × W − 1 over windows of 1, 2 and 5 s while its backlog is parked and read back, in order', async () => {
    const { kafka, admin, producer, consumers } = fixture
    const topic = uniqueName('park-rate')
    await createTopics(admin, 1, topic, `${topic}-dlq`)
    await createTopics(admin, 16, `${topic}-parking`)
    await produce(
      producer,
      topic,
      Array.from({ length: BACKLOG }, (_, seq) => ({ merchant: 'hot', seq })),
    )
    const limiter = new KeyedLimiter({ rate: '100000/s' })
    limiter.setRate('hot', `${RATE_PER_SEC}/s burst ${BURST}`)
    const startsMs: number[] = []
    const seqs: number[] = []
    const consumer = createThrottledConsumer<Payload>({
      kafka,
      groupId: uniqueName('group'),
      topics: [topic],
      fromBeginning: true,
      deadLetterTopic: `${topic}-dlq`,
      limiter,
      // A parking lane of at most 150, refilled by fetches of about 200 parked messages.
      parking: { topics: { [topic]: `${topic}-parking` }, maxBufferedPerMerchant: 150, maxBatch: 200 },
      consumerConfig: { maxBytesPerPartition: 16 * 1024 },
      decode: (value) => JSON.parse(value!.toString()) as Payload,
      logger: testLogger,
      handler: async ({ value }) => {
        startsMs.push(performance.now())
        seqs.push(value.seq)
      },
    })
    consumers.push(consumer)
    const stalls = watchStalls()
    await consumer.run()
    await waitFor('the first start', () => startsMs.length > 0, 20_000)
    const firstMs = startsMs[0]!
    await waitFor('the measured stretch', () => performance.now() - firstMs >= MEASURE_MS, MEASURE_MS + 5_000)
    const endMs = performance.now()
    const stats = consumer.stats()
    const longStalls = stalls()
    await consumer.stop()

    // The path under test was taken: moves, parked messages handled, the parking partition
    // paused and resumed again and again, and a backlog left at the end.
    expect(stats.parked).toBeGreaterThan(BACKLOG / 2)
    expect(stats.parkedHandled).toBeGreaterThan(RATE_PER_SEC)
    expect(stats.resumes).toBeGreaterThanOrEqual(3)
    expect(startsMs.length).toBeLessThan(BACKLOG / 2)
    expect(seqs).toEqual(seqs.map((_, i) => i))
    const lines: string[] = []
    for (const windowMs of WINDOWS_MS) {
      const { fewest, most } = windowCounts(startsMs, windowMs, firstMs, endMs)
      lines.push(`${windowMs} ms: ${fewest}-${most}`)
      // One more than the limiter grants in a window: a lane that starts late (it waited for
      // the event loop) runs in the window a start granted for the moment before it.
      expect(most, `most in ${windowMs} ms`).toBeLessThanOrEqual(
        BURST + (RATE_PER_SEC * windowMs) / 1_000 + 1,
      )
      expect(fewest, `fewest in ${windowMs} ms`).toBeGreaterThanOrEqual(
        (RATE_PER_SEC * (windowMs - STALL_ALLOWANCE_MS)) / 1_000 - 1,
      )
    }
    console.info(
      `parking rate test: ${startsMs.length} hot starts in ${((endMs - firstMs) / 1_000).toFixed(1)} s, ` +
        `fewest-most per window ${lines.join(', ')}; parked ${stats.parked}, read back ${stats.parkedHandled}, ` +
        `${stats.pauses} pauses; event loop stalls over 30 ms: ${longStalls.length}, longest ${Math.max(0, ...longStalls.map((s) => s.lateMs)).toFixed(0)} ms`,
    )
  })
})
