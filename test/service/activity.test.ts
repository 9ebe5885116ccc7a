import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { ActivityTracker } from '../../src/service/activity.js'

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
})
