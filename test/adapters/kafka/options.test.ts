import { Kafka } from 'kafkajs'
import { describe, expect, it } from 'vitest'
import { resolveOptions, type ThrottledConsumerOptions } from '../../../src/adapters/kafka/options.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'

// A Kafka instance connects nothing until asked: options can be checked without a broker.
const base: ThrottledConsumerOptions = {
  kafka: new Kafka({ brokers: ['127.0.0.1:1'] }),
  groupId: 'g',
  topics: ['payments'],
  deadLetterTopic: 'payments-dlq',
  limiter: new KeyedLimiter({ rate: '10/s' }),
  handler: async () => undefined,
}

describe('resolveOptions', () => {
  it('fills in defaults', () => {
    const resolved = resolveOptions(base)
    expect(resolved).toMatchObject({
      keyOf: 'message-key',
      concurrency: 100,
      maxBufferedPerPartition: 5_000,
      commitIntervalMs: 1_000,
      maxAttempts: 5,
      stopTimeoutMs: 10_000,
      shareLimitAcrossMembers: false,
    })
    expect([1, 2, 3, 20].map(resolved.retryDelayMs)).toEqual([200, 400, 800, 30_000])
  })

  it('shares the limit across members by default when the key is not the message key', () => {
    expect(resolveOptions({ ...base, keyOf: { header: 'merchant' } }).shareLimitAcrossMembers).toBe(true)
    expect(resolveOptions({ ...base, keyOf: { field: 'merchantId' } }).shareLimitAcrossMembers).toBe(true)
  })

  const bad: [name: string, patch: Record<string, unknown>, message: string][] = [
    ['no groupId', { groupId: '' }, 'expected groupId to be a non-empty string, got '],
    ['no topics', { topics: [] }, 'expected topics to be a non-empty array'],
    [
      'dead letters into a consumed topic',
      { deadLetterTopic: 'payments' },
      'expected deadLetterTopic outside topics',
    ],
    ['no handler', { handler: undefined }, 'expected handler to be a function, got undefined'],
    ['no limiter', { limiter: {} }, 'expected limiter to be a KeyedLimiter'],
    ['zero concurrency', { concurrency: 0 }, 'expected concurrency to be an integer >= 1, got 0'],
    [
      'fractional buffer bound',
      { maxBufferedPerPartition: 2.5 },
      'expected maxBufferedPerPartition to be an integer >= 1, got 2.5',
    ],
    ['negative stop timeout', { stopTimeoutMs: -1 }, 'expected stopTimeoutMs to be a number >= 0, got -1'],
    [
      'unknown key source',
      { keyOf: { column: 'x' } },
      `expected keyOf to be 'message-key', { header }, { field } or a function`,
    ],
    [
      'backoff max below initial',
      { backoff: { initialMs: 500, maxMs: 100 } },
      'expected backoff.maxMs to be a number >= 500, got 100',
    ],
  ]
  it.each(bad)('refuses %s with a TypeError', (_name, patch, message) => {
    expect(() => resolveOptions({ ...base, ...patch } as ThrottledConsumerOptions)).toThrow(TypeError)
    expect(() => resolveOptions({ ...base, ...patch } as ThrottledConsumerOptions)).toThrow(message)
  })
})

describe('resolveOptions: bounds and parking', () => {
  it('bounds a merchant at 100 messages with parking, and at the partition bound without (the pause is all there is)', () => {
    const parked = resolveOptions({ ...base, parking: { topics: { payments: 'payments-parking' } } })
    expect(parked).toMatchObject({ maxBufferedPerMerchant: 100, maxBufferedBytes: 64 * 1024 * 1024 })
    expect(parked.parking).toEqual({
      topics: { payments: 'payments-parking' },
      maxBufferedPerMerchant: 2_000,
      maxBatch: 500,
      transactionTimeoutMs: 10_000,
    })
    expect(resolveOptions(base).maxBufferedPerMerchant).toBe(5_000)
    expect(resolveOptions(base).parking).toBeUndefined()
  })

  const bad: [name: string, patch: Record<string, unknown>, message: string][] = [
    [
      'a parking topic for a topic not consumed',
      { parking: { topics: { other: 'p' } } },
      'expected parking.topics keys among topics, got other',
    ],
    [
      'parking into a consumed topic',
      { parking: { topics: { payments: 'payments' } } },
      'expected parking topics apart from the others, got payments',
    ],
    [
      'parking into the dead-letter topic',
      { parking: { topics: { payments: 'payments-dlq' } } },
      'apart from the others, got payments-dlq',
    ],
    [
      'no parking topics',
      { parking: { topics: {} } },
      'expected parking.topics to map source topics to parking topics',
    ],
    [
      'a zero lane bound',
      { maxBufferedPerMerchant: 0 },
      'expected maxBufferedPerMerchant to be an integer >= 1, got 0',
    ],
    [
      'a tiny byte budget',
      { maxBufferedBytes: 10 },
      'expected maxBufferedBytes to be an integer >= 1024, got 10',
    ],
    [
      'a short transaction timeout',
      { parking: { topics: { payments: 'p' }, transactionTimeoutMs: 10 } },
      'expected parking.transactionTimeoutMs to be an integer >= 1000, got 10',
    ],
    [
      'parking without an admin',
      {
        kafka: { consumer: () => undefined, producer: () => undefined },
        parking: { topics: { payments: 'p' } },
      },
      'expected kafka to make admins for parking, got none',
    ],
  ]
  for (const [name, patch, message] of bad) {
    it(`refuses ${name}`, () => {
      expect(() => resolveOptions({ ...base, ...patch } as ThrottledConsumerOptions)).toThrow(message)
    })
  }
})
