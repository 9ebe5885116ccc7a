import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { ActivityTracker, MAX_REASON_LENGTH } from '../../src/service/activity.js'

describe('ActivityTracker', () => {
  it('counts deliveries per second over the last minute, busiest first', () => {
    const clock = new FakeClock(0)
    const activity = new ActivityTracker(clock)
    for (let i = 0; i < 3; i++) activity.delivered('hot')
    activity.delivered('quiet')
    clock.advance(1_000)
    activity.delivered('hot')
    const [hot, quiet] = activity.snapshot()
    expect(hot).toMatchObject({ merchantKey: 'hot', deliveredLastMinute: 4 })
    expect(hot!.deliveredPerSec.slice(-2)).toEqual([3, 1])
    expect(quiet).toMatchObject({ merchantKey: 'quiet', deliveredLastMinute: 1 })
  })

  it('forgets deliveries older than a minute', () => {
    const clock = new FakeClock(0)
    const activity = new ActivityTracker(clock)
    activity.delivered('m1')
    clock.advance(30_000)
    activity.delivered('m1')
    clock.advance(30_500)
    expect(activity.snapshot()[0]).toMatchObject({ deliveredLastMinute: 1 })
    clock.advance(120_000)
    expect(activity.snapshot()[0]).toMatchObject({ deliveredLastMinute: 0 })
  })

  it('lists a merchant that was only seen waiting', () => {
    const activity = new ActivityTracker(new FakeClock(0))
    activity.seen('throttled')
    expect(activity.snapshot()).toEqual([
      expect.objectContaining({ merchantKey: 'throttled', deliveredLastMinute: 0 }),
    ])
  })

  it('holds at most maxMerchants, dropping the least recently seen', () => {
    const clock = new FakeClock(0)
    const activity = new ActivityTracker(clock, 3)
    for (const key of ['a', 'b', 'c']) activity.delivered(key)
    activity.delivered('a')
    activity.delivered('d')
    expect(
      activity
        .snapshot()
        .map((row) => row.merchantKey)
        .sort(),
    ).toEqual(['a', 'c', 'd'])
  })

  it('counts failures and dead letters per merchant with the last reason, failures over the last minute', () => {
    const clock = new FakeClock(0)
    const activity = new ActivityTracker(clock)
    activity.failed('gone', 'client-error (HTTP 410)', true)
    activity.failed('broken', 'server-error (HTTP 500)', false)
    activity.failed('broken', 'timeout', true)
    expect(activity.snapshot().find((row) => row.merchantKey === 'broken')).toMatchObject({
      deliveredLastMinute: 0,
      failedLastMinute: 2,
      failures: { count: 2, lastReason: 'timeout' },
      deadLetters: { count: 1, lastReason: 'timeout' },
    })
    clock.advance(61_000)
    // the minute's failures roll off; the totals and reasons stay
    expect(activity.snapshot().find((row) => row.merchantKey === 'gone')).toMatchObject({
      failedLastMinute: 0,
      failures: { count: 1, lastReason: 'client-error (HTTP 410)' },
      deadLetters: { count: 1, lastReason: 'client-error (HTTP 410)' },
    })
  })

  it('bounds a kept reason to MAX_REASON_LENGTH characters', () => {
    const activity = new ActivityTracker(new FakeClock(0))
    activity.failed('m', 'x'.repeat(1_000), false)
    expect(activity.snapshot()[0]!.failures.lastReason).toHaveLength(MAX_REASON_LENGTH)
  })
})
