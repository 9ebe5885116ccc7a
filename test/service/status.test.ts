import { describe, expect, it } from 'vitest'
import { CircuitBreakers, FakeClock, InFlightTable, KeyedLimiter } from '../../src/limiter/index.js'
import { ActivityTracker } from '../../src/service/activity.js'
import {
  BINDING_LIMIT,
  bindingCounts,
  bindingOf,
  buildStatus,
  CHILD_LIST_LIMIT,
  roundForPeople,
  type SourceBacklog,
  type StatusParts,
} from '../../src/service/status.js'
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

describe('buildStatus with layered keys', () => {
  const ACME = 'psp:acme'
  const keysOf = (merchant: string) => [ACME, `${ACME}:${merchant}`]

  /** layered is a limiter where psp:acme (2/s burst 1) binds m1 (weight 3) and m2, both backlogged. */
  function layered() {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '100/s', clock })
    limiter.setRate(ACME, '2/s burst 1')
    limiter.setWeight(`${ACME}:m1`, 3)
    // m1 first: it takes the parent's tokens, so m2 has taken its share when it asks
    for (const merchant of ['m1', 'm2']) for (let i = 0; i < 3; i++) limiter.reserve(keysOf(merchant))
    const activity = new ActivityTracker(clock)
    for (const merchant of ['m1', 'm2', 'quiet']) activity.seen(merchant)
    const backlog: SourceBacklog = {
      merchants: [
        { merchantKey: 'm1', jobs: 40, parked: 0, oldestAgeMs: 10, limitKeys: keysOf('m1') },
        { merchantKey: 'm2', jobs: 4, parked: 0, oldestAgeMs: 10, limitKeys: keysOf('m2') },
      ],
      totals: NO_BACKLOG.totals,
    }
    const table = {
      default: undefined,
      overrides: [{ merchant: ACME, rate: limiter.rateOf(ACME), version: 1, changedAtMs: T0 }],
      weights: [{ merchant: `${ACME}:m1`, weight: 3, version: 1, changedAtMs: T0 }],
      snapshotVersion: undefined,
      lastChangeAtMs: T0,
    }
    const parts = partsOf({
      limiter,
      activity: activity.snapshot(),
      sources: [{ kind: 'bullmq', name: 'calls', concurrency: 5, backlog: () => backlog }],
    })
    return { clock, limiter, parts: { ...parts, control: { ...parts.control, table } } }
  }

  it('lists the parent with its rate in force and each child: weight, backlogged, granted per second', () => {
    const { parts } = layered()
    expect(buildStatus(parts).parents).toEqual([
      {
        key: ACME,
        rate: '2/s burst 1',
        limitPerSec: 2,
        grantedPerSec: 2,
        childCount: 2,
        backloggedChildren: 2,
        children: [
          { key: `${ACME}:m1`, weight: 3, backlogged: true, grantedPerSec: 1 },
          { key: `${ACME}:m2`, weight: 1, backlogged: true, grantedPerSec: 1 },
        ],
      },
    ])
  })

  it('says of each waiting merchant which limit holds it, and reads its rate from its innermost key', () => {
    const { parts } = layered()
    const rows = Object.fromEntries(buildStatus(parts).merchants.map((m) => [m.merchantKey, m]))
    // both reserved ahead of the parent beside a sibling: each has taken its share of it
    expect(rows.m1).toMatchObject({
      limitKeys: keysOf('m1'),
      rate: '100/s',
      binding: { binds: 'parent-share', key: ACME },
    })
    expect(rows.m2).toMatchObject({ limitKeys: keysOf('m2'), binding: { binds: 'parent-share', key: ACME } })
    expect(rows.m2!.binding!.waitMs).toBeGreaterThan(0)
    // a merchant with nothing waiting is held by nothing
    expect(rows.quiet).toMatchObject({ limitKeys: null, binding: null, waiting: 0 })
  })

  it('shows a parent without a rate of its own as not limiting', () => {
    const { parts } = layered()
    const status = buildStatus({
      ...parts,
      control: { ...parts.control, table: { ...parts.control.table, overrides: [] } },
    })
    expect(status.parents[0]).toMatchObject({ key: ACME, rate: null, limitPerSec: null })
  })

  it('bounds the children listed under a parent, backlogged ones first, and counts them all', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '100/s', clock })
    limiter.setRate(ACME, '1/s burst 1')
    const children = CHILD_LIST_LIMIT + 5
    for (let i = 0; i < children; i++) for (let j = 0; j < 2; j++) limiter.reserve(keysOf(`m${i}`))
    const [parent] = buildStatus(partsOf({ limiter })).parents
    expect(parent!.childCount).toBe(children)
    expect(parent!.children).toHaveLength(CHILD_LIST_LIMIT)
    const backlogged = parent!.children.map((child) => child.backlogged)
    expect(backlogged).toEqual([...backlogged].sort((a, b) => Number(b) - Number(a)))
  })
})

describe('bindingOf', () => {
  it("names the parent when the parent's own rate holds the merchant", () => {
    const limiter = new KeyedLimiter({ rate: '100/s', clock: new FakeClock(0) })
    limiter.setRate('psp:acme', '2/s burst 1')
    expect(limiter.tryAcquire(['psp:acme', 'psp:acme:m1'])).toBe(true)
    expect(bindingOf(limiter, ['psp:acme', 'psp:acme:m1'])).toEqual({
      binds: 'parent',
      key: 'psp:acme',
      waitMs: 500,
    })
    // a merchant the parent has not seen yet is held by it all the same
    expect(bindingOf(limiter, ['psp:acme', 'psp:acme:m9'])).toEqual({
      binds: 'parent',
      key: 'psp:acme',
      waitMs: 500,
    })
  })

  it('names a longer window, and a Retry-After, on the key that has it', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '100/s', clock })
    limiter.setRate('psp:acme:m1', '50/s, 2/day')
    limiter.tryAcquire(['psp:acme', 'psp:acme:m1'])
    limiter.tryAcquire(['psp:acme', 'psp:acme:m1'])
    expect(bindingOf(limiter, ['psp:acme', 'psp:acme:m1'])).toMatchObject({
      binds: 'window',
      key: 'psp:acme:m1',
      window: '2/day',
    })
    limiter.penalize('m2', 3_000)
    expect(bindingOf(limiter, ['m2'])).toEqual({ binds: 'retry-after', key: 'm2', waitMs: 3_000 })
    expect(bindingOf(limiter, ['m3'])).toBeNull()
  })

  it('gives its own rate for a merchant held by its own key, and nothing for keys the limiter refuses', () => {
    const limiter = new KeyedLimiter({ rate: '1/s', clock: new FakeClock(0) })
    limiter.reserve('m1')
    limiter.reserve('m1')
    expect(bindingOf(limiter, ['m1'])).toMatchObject({ binds: 'own', key: 'm1' })
    expect(bindingOf(limiter, ['m1', 'm1'])).toBeNull()
  })
})

describe('bindingCounts', () => {
  it('counts the waiting merchants over every source by what holds them, asking about at most BINDING_LIMIT', () => {
    const limiter = new KeyedLimiter({ rate: '1/s', clock: new FakeClock(0) })
    const merchants = Array.from({ length: BINDING_LIMIT + 10 }, (_, i) => `m${i}`)
    for (const merchant of merchants) for (let j = 0; j < 2; j++) limiter.reserve(merchant)
    const backlog = (keys: string[]): SourceBacklog => ({
      merchants: keys.map((merchantKey) => ({ merchantKey, jobs: 1, parked: 0, oldestAgeMs: 0 })),
      totals: NO_BACKLOG.totals,
    })
    const sources = [
      { backlog: () => backlog(merchants.slice(0, 500)) },
      { backlog: () => backlog(merchants.slice(500)) },
    ]
    expect(bindingCounts(limiter, sources)).toEqual({ own: BINDING_LIMIT })
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
