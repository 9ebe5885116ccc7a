import { describe, expect, it } from 'vitest'
import { compileKeyTemplates } from '../../../src/service/limit-keys.js'
import { kafkaBacklog, messageLimitKeys, parkingTopicOf } from '../../../src/service/sources/kafka.js'

describe('parkingTopicOf', () => {
  it('is <topic>.parking unless the source names its own', () => {
    expect(parkingTopicOf({ topic: 'jobs', parking: { enabled: true, partitionsPerSource: 16 } })).toBe(
      'jobs.parking',
    )
    expect(
      parkingTopicOf({
        topic: 'jobs',
        parking: { enabled: true, topic: 'parked-jobs', partitionsPerSource: 16 },
      }),
    ).toBe('parked-jobs')
  })
})

describe('kafkaBacklog', () => {
  it("counts a merchant's waiting messages as its buffered plus its parked ones, and takes the parked total over every merchant, not only those listed", () => {
    const backlog = kafkaBacklog({
      backlog: [
        {
          merchantKey: 'hot',
          buffered: 100,
          parked: 9_900,
          oldestAgeMs: 61_000,
          limitKeys: ['psp:a', 'psp:a:hot'],
        },
        { merchantKey: 'warm', buffered: 4, parked: 0, oldestAgeMs: 120 },
      ],
      buffered: 140,
      bufferedBytes: 71_680,
      parkedMerchants: 2,
      // 9 900 of the listed merchant plus 35 of one past the listed ones
      parkedWaiting: 9_935,
      parkTransactions: 20,
      parkFailures: 1,
      lateGrants: 2,
    })
    expect(backlog).toEqual({
      merchants: [
        // the limit keys of its lane's head, for the status page's explain
        {
          merchantKey: 'hot',
          jobs: 10_000,
          parked: 9_900,
          oldestAgeMs: 61_000,
          limitKeys: ['psp:a', 'psp:a:hot'],
        },
        { merchantKey: 'warm', jobs: 4, parked: 0, oldestAgeMs: 120 },
      ],
      totals: {
        parked: 9_935,
        buffered: 140,
        bufferedBytes: 71_680,
        parkedMerchants: 2,
        parkTransactions: 20,
        parkFailures: 1,
        lateGrants: 2,
      },
    })
  })
})

describe('messageLimitKeys', () => {
  const limitKeys = messageLimitKeys(compileKeyTemplates(['psp:{psp}', 'psp:{psp}:{merchant}']))

  it('reads the raw value as JSON, and a value the consumer already decoded as it is', () => {
    const keys = ['psp:acme', 'psp:acme:m1']
    expect(limitKeys('m1', Buffer.from(JSON.stringify({ psp: 'acme' })))).toEqual(keys)
    // a `field:` keyFrom makes the consumer decode JSON itself
    expect(limitKeys('m1', { psp: 'acme' })).toEqual(keys)
  })

  it('refuses a value that is not JSON, or none, as lacking the field', () => {
    expect(() => limitKeys('m1', Buffer.from('not json'))).toThrow(
      "key template 'psp:{psp}' field 'psp': missing",
    )
    expect(() => limitKeys('m1', null)).toThrow("field 'psp': missing")
  })
})
