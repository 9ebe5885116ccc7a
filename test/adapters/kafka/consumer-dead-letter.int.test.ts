import { describe, expect, it } from 'vitest'
import {
  createThrottledConsumer,
  DEAD_LETTER_HEADERS,
  type DeadLetterEvent,
} from '../../../src/adapters/kafka/index.js'
import { PermanentFailureError } from '../../../src/errors.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import {
  committedOffsets,
  createTopics,
  endOffsets,
  readTopic,
  testLogger,
  useKafkaFixture,
} from './support/kafka.js'

interface Order {
  merchant: string
  seq: number
  fail?: 'always' | 'permanent'
}

describe('createThrottledConsumer dead letters', () => {
  const fixture = useKafkaFixture('kafka-dead-letter-test')

  it('sends messages without a key, with a bad key, with a bad payload, a failing or a refusing handler to the dead-letter topic with their reason, and goes on', async () => {
    const { kafka, admin, producer, consumers } = fixture
    const topic = uniqueName('orders')
    const deadLetterTopic = `${topic}-dlq`
    const groupId = uniqueName('group')
    await createTopics(admin, 2, topic)
    await createTopics(admin, 1, deadLetterTopic)

    const good = (merchant: string, seq: number) => ({
      key: merchant,
      value: JSON.stringify({ merchant, seq }),
    })
    const messages = [
      good('m-1', 0),
      { key: null, value: JSON.stringify({ merchant: 'none', seq: 0 }) },
      good('m-2', 0),
      { key: 'bad key!', value: JSON.stringify({ merchant: 'bad', seq: 0 }) },
      { key: 'm-1', value: '{not json' },
      { key: 'm-2', value: JSON.stringify({ merchant: 'm-2', seq: 1, fail: 'always' }) },
      { key: 'm-3', value: JSON.stringify({ merchant: 'm-3', seq: 0, fail: 'permanent' }) },
      good('m-3', 1),
      good('m-1', 1),
      good('m-2', 2),
      { key: null, value: 'neither key nor json' },
      good('m-1', 2),
    ]
    await producer.send({ topic, messages })

    const handled: string[] = []
    const events: DeadLetterEvent[] = []
    const consumer = createThrottledConsumer<Order>({
      kafka,
      groupId,
      topics: [topic],
      fromBeginning: true,
      deadLetterTopic,
      limiter: new KeyedLimiter({ rate: '1000/s' }),
      decode: (value) => JSON.parse(value!.toString()) as Order,
      maxAttempts: 2,
      backoff: { initialMs: 50 },
      logger: testLogger,
      handler: async ({ value, attempt }) => {
        if (value.fail === 'permanent') throw new PermanentFailureError('client-error', 'HTTP 400')
        if (value.fail === 'always') throw new Error(`refused on attempt ${attempt}`)
        handled.push(`${value.merchant}#${value.seq}`)
      },
    })
    consumer.on('dead-letter', (event) => events.push(event))
    consumers.push(consumer)
    await consumer.run()
    await waitFor('6 dead letters and 6 handled', () => events.length >= 6 && handled.length >= 6, 30_000)

    // The stream went on past every bad message, in order per merchant.
    expect(handled.filter((h) => h.startsWith('m-1'))).toEqual(['m-1#0', 'm-1#1', 'm-1#2'])
    expect(handled.filter((h) => h.startsWith('m-2'))).toEqual(['m-2#0', 'm-2#2'])
    expect(handled.filter((h) => h.startsWith('m-3'))).toEqual(['m-3#1'])

    const dead = await readTopic(kafka, deadLetterTopic, 6)
    const header = (m: (typeof dead)[number], name: string) => m.headers?.[name]?.toString()
    const byReason = (reason: string) => dead.filter((m) => header(m, DEAD_LETTER_HEADERS.reason) === reason)
    expect(
      byReason('invalid-key')
        .map((m) => m.value?.toString())
        .sort(),
    ).toEqual(
      [JSON.stringify({ merchant: 'bad', seq: 0 }), JSON.stringify({ merchant: 'none', seq: 0 })].sort(),
    )
    expect(
      byReason('invalid-key')
        .map((m) => header(m, DEAD_LETTER_HEADERS.error))
        .sort(),
    ).toEqual([expect.stringContaining('contains characters outside'), 'invalid merchant key: missing'])
    // A message that is neither keyed nor JSON is undecodable: the value is checked first.
    expect(
      byReason('undecodable')
        .map((m) => m.value?.toString())
        .sort(),
    ).toEqual(['neither key nor json', '{not json'])
    const [failed] = byReason('handler-failed')
    expect(failed?.key?.toString()).toBe('m-2')
    expect(header(failed!, DEAD_LETTER_HEADERS.attempts)).toBe('2')
    expect(header(failed!, DEAD_LETTER_HEADERS.error)).toBe('refused on attempt 2')
    const [permanent] = byReason('permanent-failure')
    expect(header(permanent!, DEAD_LETTER_HEADERS.attempts)).toBe('1')
    expect(header(permanent!, DEAD_LETTER_HEADERS.error)).toBe('client-error: HTTP 400')

    // Each dead letter says where it came from: its original topic, partition and offset.
    for (const m of dead) {
      const event = events.find(
        (e) =>
          String(e.partition) === header(m, DEAD_LETTER_HEADERS.partition) &&
          e.offset === header(m, DEAD_LETTER_HEADERS.offset),
      )
      expect(header(m, DEAD_LETTER_HEADERS.topic)).toBe(topic)
      expect(event?.reason).toBe(header(m, DEAD_LETTER_HEADERS.reason))
    }
    expect(consumer.stats().deadLettered).toEqual({
      'invalid-key': 2,
      undecodable: 2,
      'handler-failed': 1,
      'permanent-failure': 1,
    })

    // Dead-lettered messages count as done: the watermark passed them.
    await consumer.stop()
    expect(await committedOffsets(admin, groupId, topic)).toEqual(await endOffsets(admin, topic))
  })
})
