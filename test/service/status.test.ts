import { describe, expect, it } from 'vitest'
import { CircuitBreakers, FakeClock, InFlightTable, KeyedLimiter } from '../../src/limiter/index.js'
import { ActivityTracker } from '../../src/service/activity.js'
import { buildStatus, roundForPeople, type StatusParts } from '../../src/service/status.js'

const T0 = Date.parse('2026-12-04T01:00:00.000Z')

/** partsOf is a worker's readings with nothing happened yet, `overrides` applied over them. */
function partsOf(overrides: Partial<StatusParts> & { limiter: StatusParts['limiter'] }): StatusParts {
  return {
    nowMs: T0 + 90_000,
    startedAtMs: T0,
    readiness: { ready: true, checks: { control: true } },
    inFlight: new InFlightTable(Number.POSITIVE_INFINITY),
    breakers: new CircuitBreakers(),
    activity: [],
    control: {
      source: 'file',
      caughtUp: true,
      stats: { applied: 0, stale: 0, rejected: 0 },
      table: { default: undefined, overrides: [], snapshotVersion: undefined, lastChangeAtMs: undefined },
      recentChanges: [],
      recentRejections: [],
    },
    sources: [],
    ...overrides,
  }
}

describe('buildStatus', () => {
  it('rounds rates and tokens for people: no 1.5000000000000002 in /status.json', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '3/2s', clock })
    limiter.setRate('thirds', '7/3s')
    limiter.tryAcquire('m')
    const activity = new ActivityTracker(clock)
    activity.delivered('m')
    activity.seen('thirds')
    const status = buildStatus(partsOf({ limiter, activity: activity.snapshot() }))
    expect(
      status.merchants.map(({ merchantKey, limitPerSec, tokens }) => ({ merchantKey, limitPerSec, tokens })),
    ).toEqual([
      // 3 per 2 s is 1.5000000000000002 per second in floating point; 3 - 1 tokens is 2.0000000000000004
      { merchantKey: 'm', limitPerSec: 1.5, tokens: 2 },
      { merchantKey: 'thirds', limitPerSec: 2.333, tokens: null },
    ])
    expect(JSON.stringify(status)).not.toMatch(/\d\.\d{7,}/)
  })

  it("lists a merchant's failures and dead letters beside its rate, in force and since when", () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '10/s', clock })
    limiter.setRate('gone', '2/s')
    const activity = new ActivityTracker(clock)
    activity.failed('gone', 'client-error (HTTP 410)', true)
    const table = {
      default: undefined,
      overrides: [{ merchant: 'gone', rate: limiter.rateOf('gone'), version: 3, changedAtMs: T0 }],
      snapshotVersion: 3,
      lastChangeAtMs: T0,
    }
    const parts = partsOf({ limiter, activity: activity.snapshot() })
    const status = buildStatus({ ...parts, control: { ...parts.control, table } })
    expect(status.merchants).toEqual([
      expect.objectContaining({
        merchantKey: 'gone',
        rate: '2/s',
        deliveredLastMinute: 0,
        failedLastMinute: 1,
        failures: { count: 1, lastReason: 'client-error (HTTP 410)' },
        deadLetters: { count: 1, lastReason: 'client-error (HTTP 410)' },
        maxInFlight: null,
        lastChange: { description: '2/s', version: 3, atIso: '2026-12-04T01:00:00.000Z', scope: 'merchant' },
      }),
    ])
  })

  it('gives uptime, the control counters, recent events newest first, and the open breakers', () => {
    const limiter = new KeyedLimiter({ rate: '10/s', clock: new FakeClock(0) })
    const breakers = new CircuitBreakers({ failureThreshold: 1 })
    breakers.failure('down')
    const parts = partsOf({ limiter, breakers })
    const status = buildStatus({
      ...parts,
      control: {
        ...parts.control,
        stats: { applied: 2, stale: 1, rejected: 1 },
        recentChanges: [
          { atIso: '2026-12-04T01:00:01.000Z', description: 'first' },
          { atIso: '2026-12-04T01:00:02.000Z', description: 'second' },
        ],
        recentRejections: [{ atIso: '2026-12-04T01:00:03.000Z', reason: 'invalid-json', error: 'bad' }],
      },
      sources: [{ kind: 'bullmq', name: 'webhooks', concurrency: 50 }],
    })
    expect(status).toMatchObject({
      generatedAt: '2026-12-04T01:01:30.000Z',
      uptimeS: 90,
      limiter: { defaultRate: '10/s', keys: 0 },
      control: {
        source: 'file',
        applied: 2,
        stale: 1,
        rejected: 1,
        recentChanges: [{ description: 'second' }, { description: 'first' }],
        recentRejections: [{ reason: 'invalid-json' }],
      },
      sources: [{ kind: 'bullmq', name: 'webhooks', concurrency: 50 }],
      slow: { defaultMaxInFlight: null, breakersOpen: 1, breakers: [{ merchantKey: 'down', state: 'open' }] },
    })
  })
})

describe('roundForPeople', () => {
  it.each([
    [1.5000000000000002, 1.5],
    [2.0000000000000004, 2],
    [1000 / 60, 16.667],
    [1 / 60, 0.0167],
    [1 / 3_600, 0.000278],
    [-0.5000000000000001, -0.5],
    [0, 0],
    [123_456, 123_456],
    [Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY],
  ])('%d reads as %d', (value, expected) => {
    expect(roundForPeople(value)).toBe(expected)
  })
})
