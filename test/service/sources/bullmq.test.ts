import { describe, expect, it } from 'vitest'
import { ThrottleCounters } from '../../../src/adapters/bullmq/stats.js'
import { ConfigError } from '../../../src/errors.js'
import { backoffMs } from '../../../src/limiter/index.js'
import {
  BACKOFF_TYPE,
  backoffStrategy,
  bullmqBacklog,
  resolveReservationKey,
  unsignedReservationsWarning,
  useSourceRetries,
} from '../../../src/service/sources/bullmq.js'

describe('useSourceRetries', () => {
  it("gives a job without retries of its own the source's attempts and backoff, through BullMQ's job options", () => {
    for (const opts of [{}, { attempts: 0 }, { attempts: 1 }]) {
      const job = { opts: { ...opts } }
      expect(useSourceRetries(job, 3)).toBe(3)
      expect(job.opts).toEqual({ attempts: 3, backoff: { type: BACKOFF_TYPE } })
    }
  })

  it("leaves a producer's own retries alone", () => {
    const job = { opts: { attempts: 5, backoff: { type: 'fixed', delay: 10 } } }
    expect(useSourceRetries(job, 3)).toBe(5)
    expect(job.opts).toEqual({ attempts: 5, backoff: { type: 'fixed', delay: 10 } })
  })
})

describe('backoffStrategy', () => {
  it('waits backoffMs after each failed attempt: within [half, whole] of 1 s doubling', () => {
    for (const attemptsMade of [1, 2, 3, 10]) {
      const whole = backoffMs(attemptsMade, { jitter: 0 })
      const delay = backoffStrategy(attemptsMade, BACKOFF_TYPE)
      expect(delay).toBeGreaterThanOrEqual(whole / 2)
      expect(delay).toBeLessThanOrEqual(whole)
    }
  })

  it('refuses a backoff type it does not know, as BullMQ does without a strategy', () => {
    expect(() => backoffStrategy(1, 'linear')).toThrow(
      "expected type 'merchant-throttle' or a built-in one, got 'linear'",
    )
  })
})

describe('resolveReservationKey', () => {
  it('reads the key from its secret reference', () => {
    const key = 'a-reservation-key-of-32-bytes!!!'
    expect(
      resolveReservationKey({ reservationKey: 'env:MT_KEY' }, 'sources[0].reservationKey', { MT_KEY: key }),
    ).toBe(key)
    expect(
      resolveReservationKey({ reservationKey: undefined }, 'sources[0].reservationKey', {}),
    ).toBeUndefined()
  })

  it('refuses a key shorter than 16 bytes, naming the field and the length, never the key', () => {
    let error: unknown
    try {
      resolveReservationKey({ reservationKey: 'short-secret' }, 'sources[0].reservationKey', {})
    } catch (caught) {
      error = caught
    }
    expect(error).toBeInstanceOf(ConfigError)
    expect(String(error)).toContain(
      "config field 'sources[0].reservationKey': expected at least 16 bytes, got 12",
    )
    expect(String(error)).not.toContain('short-secret')
  })
})

describe('bullmqBacklog', () => {
  it("gives each merchant's waiting jobs and the source's totals from throttleStats", () => {
    const stats = {
      ...Object.fromEntries(Object.keys(new ThrottleCounters(undefined).snapshot()).map((k) => [k, 0])),
      late: 3,
      waiting: {
        hot: {
          jobs: 1_205,
          delayed: 5,
          parked: 1_200,
          oldestAgeMs: 42_000,
          limitKeys: ['psp:acme', 'psp:acme:hot'],
        },
        warm: { jobs: 2, delayed: 2, parked: 0, oldestAgeMs: 300 },
      },
    } as unknown as Parameters<typeof bullmqBacklog>[0]
    expect(bullmqBacklog(stats)).toEqual({
      merchants: [
        // the limit keys of its latest job, for the status page's explain
        {
          merchantKey: 'hot',
          jobs: 1_205,
          parked: 1_200,
          oldestAgeMs: 42_000,
          limitKeys: ['psp:acme', 'psp:acme:hot'],
        },
        { merchantKey: 'warm', jobs: 2, parked: 0, oldestAgeMs: 300 },
      ],
      totals: {
        parked: 1_200,
        buffered: 7,
        bufferedBytes: 0,
        parkedMerchants: 1,
        parkTransactions: 0,
        parkFailures: 0,
        lateGrants: 3,
      },
    })
  })
})

describe('unsignedReservationsWarning', () => {
  it('warns a production worker without a reservationKey, and no other', () => {
    expect(unsignedReservationsWarning(undefined, { NODE_ENV: 'production' })).toContain(
      'sources[].reservationKey is not set',
    )
    expect(
      unsignedReservationsWarning('a-reservation-key-of-32-bytes!!!', { NODE_ENV: 'production' }),
    ).toBeUndefined()
    expect(unsignedReservationsWarning(undefined, {})).toBeUndefined()
  })
})
