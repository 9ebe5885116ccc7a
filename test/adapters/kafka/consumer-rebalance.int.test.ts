import { describe, expect, it } from 'vitest'
import { type AssignmentEvent, createThrottledConsumer } from '../../../src/adapters/kafka/index.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import {
  committedOffsets,
  createTopics,
  endOffsets,
  kafkaClient,
  merchantSchedule,
  type Payload,
  produce,
  testLogger,
  useKafkaFixture,
} from './support/kafka.js'

const MERCHANTS = 20
const TOTAL = 8_000
const BOUND = 100
const PARTITIONS = 6

describe('createThrottledConsumer through a rebalance', () => {
  const fixture = useKafkaFixture('kafka-rebalance-test')

  // With parking, each merchant's lane holds 20: most of every merchant's messages go
  // through the parking topic, and its partitions move with their source partitions.
  for (const parking of [false, true]) {
    it(`loses nothing when a second consumer joins mid-run and leaves again; duplicates stay within the buffered bound${parking ? ' (with parking)' : ''}`, async () => {
      const { admin, producer, consumers } = fixture
      const topic = uniqueName('rebalance')
      const deadLetterTopic = `${topic}-dlq`
      const parkingTopic = `${topic}-parking`
      const groupId = uniqueName('group')
      await createTopics(admin, PARTITIONS, topic)
      await createTopics(admin, 1, deadLetterTopic)
      if (parking) await createTopics(admin, PARTITIONS * 4, parkingTopic)
      const weights: Record<string, number> = {}
      for (let i = 0; i < MERCHANTS; i++) weights[`m-${i}`] = 1
      const schedule = merchantSchedule(weights, TOTAL, 11)
      await produce(producer, topic, schedule)

      /** started lists every handler start of both consumers, in the order they happened. */
      const started: { consumer: string; merchant: string; seq: number }[] = []
      const handled = new Map<string, number>()
      const assignments: Record<string, AssignmentEvent[]> = { a: [], b: [] }
      const make = (name: string) => {
        // Each member has its own limiter, as separate processes would: 50/s per merchant keeps
        // the run long enough to rebalance in the middle of it.
        const limiter = new KeyedLimiter({ rate: '50/s burst 5' })
        const consumer = createThrottledConsumer<Payload>({
          kafka: kafkaClient(`member-${name}`),
          groupId,
          topics: [topic],
          fromBeginning: true,
          deadLetterTopic,
          limiter,
          decode: (value) => JSON.parse(value!.toString()) as Payload,
          maxBufferedPerPartition: BOUND,
          ...(parking ? { maxBufferedPerMerchant: 20, parking: { topics: { [topic]: parkingTopic } } } : {}),
          concurrency: 32,
          commitIntervalMs: 500,
          consumerConfig: { heartbeatInterval: 500, sessionTimeout: 10_000 },
          logger: testLogger.child({ member: name }),
          handler: async ({ value }) => {
            started.push({ consumer: name, merchant: value.merchant, seq: value.seq })
            await new Promise((resolve) => setTimeout(resolve, 2))
            const id = `${value.merchant}#${value.seq}`
            handled.set(id, (handled.get(id) ?? 0) + 1)
          },
        })
        consumer.on('assignment', (event) => assignments[name]!.push(event))
        consumers.push(consumer)
        return consumer
      }

      /** sourcePartitions counts the partitions of the source topic in an assignment (not the parking ones). */
      const sourcePartitions = (ids: string[] | undefined) =>
        (ids ?? []).filter((id) => id.startsWith(`${topic}:`)).length
      const a = make('a')
      await a.run()
      await waitFor('a quarter of the messages', () => handled.size >= TOTAL / 4, 30_000)

      const b = make('b')
      await b.run()
      await waitFor(
        'b to take partitions',
        () => sourcePartitions(assignments.b!.at(-1)?.assigned) > 0,
        20_000,
      )
      const handledByB = () => started.filter((s) => s.consumer === 'b').length
      await waitFor('b to handle 500 messages', () => handledByB() >= 500, 20_000)
      await b.stop()
      await waitFor(
        'a to own every partition again',
        () => sourcePartitions(assignments.a!.at(-1)?.assigned) === PARTITIONS,
        20_000,
      )

      await waitFor(`all ${TOTAL} messages handled`, () => handled.size >= TOTAL, 45_000)
      await a.stop()

      // Nothing lost: every produced message was handled, and the group has committed the end.
      for (const p of schedule)
        expect(handled.has(`${p.merchant}#${p.seq}`), `${p.merchant}#${p.seq}`).toBe(true)
      expect(await committedOffsets(admin, groupId, topic)).toEqual(await endOffsets(admin, topic))

      // The rebalances really happened: a gave partitions to b, and got them back.
      expect(assignments.a!.map((e) => sourcePartitions(e.assigned))).toEqual(
        expect.arrayContaining([PARTITIONS]),
      )
      expect(Math.min(...assignments.a!.map((e) => sourcePartitions(e.assigned)))).toBeLessThan(PARTITIONS)
      expect(assignments.a!.some((e) => e.revoked.length > 0)).toBe(true)

      // Duplicates: at most what the moved partitions held (two handovers, each moving at most
      // every partition with at most BOUND messages held).
      const duplicates = [...handled.values()].reduce((sum, n) => sum + n - 1, 0)
      expect(duplicates).toBeLessThanOrEqual(2 * PARTITIONS * BOUND)
      // kafkajs fetched the kept partitions again from the committed offset; a skipped what it held.
      expect(a.stats().refetchedSkipped).toBeGreaterThan(0)

      // Per merchant, no message was first started before its predecessor's first start.
      const firstStart = new Map<string, number>()
      started.forEach((s, index) => {
        const id = `${s.merchant}#${s.seq}`
        if (!firstStart.has(id)) firstStart.set(id, index)
      })
      for (const p of schedule) {
        if (p.seq === 0) continue
        expect(firstStart.get(`${p.merchant}#${p.seq}`)!).toBeGreaterThan(
          firstStart.get(`${p.merchant}#${p.seq - 1}`)!,
        )
      }
      if (parking) expect(a.stats().parked).toBeGreaterThan(0)
      console.info(
        `rebalance test${parking ? ' (parking)' : ''}: ${duplicates} duplicates of ${TOTAL}; a skipped ${a.stats().refetchedSkipped} refetched` +
          (parking ? `, parked ${a.stats().parked}, skipped as parked ${a.stats().parkedSkipped}` : ''),
      )
    })
  }
})
