import { describe, expect, it } from 'vitest'
import { CircuitBreakers, FakeClock, InFlightTable, KeyedLimiter } from '../../src/limiter/index.js'
import { ActivityTracker } from '../../src/service/activity.js'
import { buildStatus, roundForPeople, type StatusParts } from '../../src/service/status.js'
import { NO_BACKLOG } from '../support/backlog.js'

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
      table: {
        default: undefined,
        overrides: [],
        weights: [],
        snapshotVersion: undefined,
        lastChangeAtMs: undefined,
      },
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
      weights: [],
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
      sources: [{ kind: 'bullmq', name: 'webhooks', concurrency: 50, backlog: () => NO_BACKLOG }],
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
      sources: [{ kind: 'bullmq', name: 'webhooks', concurrency: 50, backlog: NO_BACKLOG.totals }],
      slow: { defaultMaxInFlight: null, breakersOpen: 1, breakers: [{ merchantKey: 'down', state: 'open' }] },
    })
  })
})

describe('buildStatus: waiting jobs', () => {
  it("gives a merchant's waiting as a count of jobs over the sources, with its parked ones and the oldest's age", () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '10/s', clock })
    // 15 tokens reserved ahead: the debt is reported apart, not as jobs waiting
    for (let i = 0; i < 25; i++) limiter.reserve('hot')
    const activity = new ActivityTracker(clock)
    for (const key of ['hot', 'warm', 'idle']) activity.seen(key)
    const bullmq = {
      merchants: [
        { merchantKey: 'hot', jobs: 1_205, parked: 1_200, oldestAgeMs: 42_000.4 },
        { merchantKey: 'warm', jobs: 2, parked: 0, oldestAgeMs: 300 },
      ],
      totals: { ...NO_BACKLOG.totals, parked: 1_200, buffered: 7, parkedMerchants: 1, lateGrants: 3 },
    }
    const kafka = {
      merchants: [{ merchantKey: 'hot', jobs: 10_000, parked: 9_900, oldestAgeMs: 61_000 }],
      totals: {
        ...NO_BACKLOG.totals,
        parked: 9_900,
        buffered: 100,
        bufferedBytes: 51_200,
        parkedMerchants: 1,
      },
    }
    const status = buildStatus(
      partsOf({
        limiter,
        activity: activity.snapshot(),
        sources: [
          { kind: 'bullmq', name: 'webhooks', concurrency: 50, backlog: () => bullmq },
          { kind: 'kafka', name: 'jobs', concurrency: 50, backlog: () => kafka },
        ],
      }),
    )
    const rows = Object.fromEntries(
      status.merchants.map((m) => [
        m.merchantKey,
        { waiting: m.waiting, parked: m.parked, oldest: m.oldestWaitingAgeMs, ahead: m.reservedAhead },
      ]),
    )
    expect(rows).toEqual({
      hot: { waiting: 11_205, parked: 11_100, oldest: 61_000, ahead: 15 },
      warm: { waiting: 2, parked: 0, oldest: 300, ahead: 0 },
      idle: { waiting: 0, parked: 0, oldest: null, ahead: 0 },
    })
    expect(status.sources).toEqual([
      { kind: 'bullmq', name: 'webhooks', concurrency: 50, backlog: bullmq.totals },
      { kind: 'kafka', name: 'jobs', concurrency: 50, backlog: kafka.totals },
    ])
  })

  it('reads each source once per snapshot and changes nothing it reads', () => {
    const limiter = new KeyedLimiter({ rate: '10/s', clock: new FakeClock(0) })
    let reads = 0
    const backlog = {
      merchants: [{ merchantKey: 'm', jobs: 1, parked: 1, oldestAgeMs: 5 }],
      totals: NO_BACKLOG.totals,
    }
    const parts = partsOf({
      limiter,
      sources: [
        {
          kind: 'bullmq',
          name: 'q',
          concurrency: 1,
          backlog: () => {
            reads++
            return backlog
          },
        },
      ],
    })
    const first = buildStatus(parts)
    expect(buildStatus(parts)).toEqual(first)
    expect(reads).toBe(2)
    expect(backlog.merchants).toEqual([{ merchantKey: 'm', jobs: 1, parked: 1, oldestAgeMs: 5 }])
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
