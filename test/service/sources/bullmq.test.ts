import { describe, expect, it } from 'vitest'
import { backoffMs } from '../../../src/limiter/index.js'
import { BACKOFF_TYPE, backoffStrategy, useSourceRetries } from '../../../src/service/sources/bullmq.js'

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
