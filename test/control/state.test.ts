import fc from 'fast-check'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { logControlEvents } from '../../src/control/log.js'
import { type ControlChange, parseControlMessage } from '../../src/control/schema.js'
import { type ControlEvent, ControlState } from '../../src/control/state.js'
import { FakeClock, KeyedLimiter, parseRate, type Rate } from '../../src/limiter/index.js'

const r = (text: string): Rate => parseRate(text)
const set = (merchant: string, rate: string, version: number): ControlChange => ({
  type: 'set',
  merchant,
  rate: r(rate),
  version,
})
const clear = (merchant: string, version: number): ControlChange => ({ type: 'clear', merchant, version })
const snapshot = (
  version: number,
  defaultRate: string,
  overrides: Record<string, string> = {},
): ControlChange => ({
  type: 'snapshot',
  version,
  default: r(defaultRate),
  overrides: new Map(Object.entries(overrides).map(([k, v]) => [k, r(v)])),
})

function setup() {
  const limiter = new KeyedLimiter({ rate: '100/min', clock: new FakeClock(0) })
  let wallMs = 1_000
  const state = new ControlState({ target: limiter, wallNow: () => wallMs++ })
  const events: ControlEvent[] = []
  state.subscribe((event) => events.push(event))
  return { limiter, state, events }
}

/** overridesOf lists the limiter's own overrides as formatted text, sorted, to compare tables. */
function limiterTable(limiter: KeyedLimiter): { default: string; overrides: Record<string, string> } {
  const rates = limiter.rates()
  const overrides = Object.fromEntries(
    Object.entries(rates.overrides)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => [k, `${v.limit}/${v.intervalMs}ms`]),
  )
  return { default: `${rates.default.limit}/${rates.default.intervalMs}ms`, overrides }
}

function stateTable(state: ControlState): Record<string, string> {
  return Object.fromEntries(
    state.table().overrides.map((o) => [o.merchant, `${o.rate.limit}/${o.rate.intervalMs}ms`]),
  )
}

describe('ControlState ordering', () => {
  // Each row: the changes in arrival order, the outcome of each, and the overrides in force after.
  it.each<[string, ControlChange[], string[], Record<string, string>]>([
    ['a set applies', [set('m1', '5000/min', 42)], ['applied'], { m1: '5000/60000ms' }],
    [
      'a newer set replaces it',
      [set('m1', '5000/min', 42), set('m1', '10/s', 43)],
      ['applied', 'applied'],
      { m1: '10/1000ms' },
    ],
    [
      'a duplicate is stale',
      [set('m1', '5000/min', 42), set('m1', '5000/min', 42)],
      ['applied', 'stale'],
      { m1: '5000/60000ms' },
    ],
    [
      'an older set arriving late is stale',
      [set('m1', '10/s', 43), set('m1', '5000/min', 42)],
      ['applied', 'stale'],
      { m1: '10/1000ms' },
    ],
    [
      'versions are per merchant',
      [set('m1', '10/s', 50), set('m2', '20/s', 3)],
      ['applied', 'applied'],
      { m1: '10/1000ms', m2: '20/1000ms' },
    ],
    ['a clear removes the override', [set('m1', '10/s', 1), clear('m1', 2)], ['applied', 'applied'], {}],
    [
      'an older set after a clear stays cleared',
      [clear('m1', 5), set('m1', '10/s', 4)],
      ['applied', 'stale'],
      {},
    ],
    [
      'a clear at the same version as the set is stale',
      [set('m1', '10/s', 5), clear('m1', 5)],
      ['applied', 'stale'],
      { m1: '10/1000ms' },
    ],
    [
      'a snapshot replaces every override',
      [set('m1', '10/s', 1), set('m2', '20/s', 2), snapshot(10, '1/s', { m3: '30/s' })],
      ['applied', 'applied', 'applied'],
      { m3: '30/1000ms' },
    ],
    [
      'sets older than a snapshot are stale after it',
      [snapshot(10, '1/s', { m1: '30/s' }), set('m1', '10/s', 9), set('m2', '10/s', 10), clear('m1', 3)],
      ['applied', 'stale', 'stale', 'stale'],
      { m1: '30/1000ms' },
    ],
    [
      'sets newer than a snapshot apply after it',
      [snapshot(10, '1/s', { m1: '30/s' }), set('m1', '10/s', 11), set('m2', '20/s', 12)],
      ['applied', 'applied', 'applied'],
      { m1: '10/1000ms', m2: '20/1000ms' },
    ],
    [
      'a snapshot arriving after newer sets keeps them (any arrival order ends the same)',
      [
        set('m1', '10/s', 11),
        clear('m2', 12),
        set('m4', '40/s', 5),
        snapshot(10, '1/s', { m1: '30/s', m2: '30/s', m3: '30/s' }),
      ],
      ['applied', 'applied', 'applied', 'applied'],
      { m1: '10/1000ms', m3: '30/1000ms' },
    ],
    [
      'an older snapshot is stale',
      [snapshot(10, '1/s', { m1: '30/s' }), snapshot(9, '2/s', { m2: '2/s' }), snapshot(10, '2/s')],
      ['applied', 'stale', 'stale'],
      { m1: '30/1000ms' },
    ],
  ])('%s', (_name, changes, outcomes, overrides) => {
    const { limiter, state } = setup()
    expect(changes.map((change) => state.accept(change))).toEqual(outcomes)
    expect(stateTable(state)).toEqual(overrides)
    expect(limiterTable(limiter).overrides).toEqual(overrides)
  })

  it('orders the default rate on its own version; a snapshot sets it when newer', () => {
    const { limiter, state } = setup()
    expect(state.accept(set('*', '10/s', 5))).toBe('applied')
    expect(limiter.rates().default).toEqual(r('10/s'))
    expect(state.accept(set('*', '20/s', 4))).toBe('stale')
    expect(state.accept(snapshot(3, '30/s'))).toBe('applied') // newer floor, older default: default kept
    expect(limiter.rates().default).toEqual(r('10/s'))
    expect(state.accept(snapshot(6, '40/s'))).toBe('applied')
    expect(limiter.rates().default).toEqual(r('40/s'))
    expect(state.accept(set('*', '50/s', 6))).toBe('stale') // ties go to the snapshot
    expect(state.table().default).toMatchObject({ rate: r('40/s'), version: 6 })
  })

  it('ends at the same table for every arrival order of the same changes', () => {
    const changes = [
      set('m1', '10/s', 3),
      set('m1', '11/s', 8),
      clear('m2', 9),
      set('m2', '20/s', 4),
      snapshot(5, '1/s', { m1: '50/s', m2: '50/s', m3: '50/s' }),
      set('*', '2/s', 6),
      set('m3', '30/s', 2),
      snapshot(2, '3/s', { m4: '4/s' }),
    ]
    const tables = new Set<string>()
    for (let seed = 0; seed < 40; seed++) {
      const order = [...changes]
      let x = seed + 1
      for (let i = order.length - 1; i > 0; i--) {
        x = (x * 1103515245 + 12345) % 2 ** 31
        const j = x % (i + 1)
        ;[order[i], order[j]] = [order[j]!, order[i]!]
      }
      const { limiter, state } = setup()
      for (const change of order) state.accept(change)
      tables.add(JSON.stringify(limiterTable(limiter)))
    }
    expect([...tables]).toEqual([
      JSON.stringify({ default: '2/1000ms', overrides: { m1: '11/1000ms', m3: '50/1000ms' } }),
    ])
  })

  it('makes exactly one limiter.apply call per applied change, never with a version', () => {
    const calls: unknown[] = []
    const state = new ControlState({
      target: {
        apply: (change) => {
          calls.push(change)
          return { applied: true }
        },
      },
    })
    state.accept(set('m1', '10/s', 1))
    state.accept(set('m1', '10/s', 1))
    state.accept(snapshot(2, '1/s', { m2: '2/s' }))
    expect(calls).toHaveLength(2)
    expect(calls).toEqual([
      {
        overrides: { m1: r('10/s') },
        weights: { m1: null },
        inheritance: undefined,
        maxInFlight: { overrides: { m1: null } },
      },
      {
        default: r('1/s'),
        overrides: { m2: r('2/s') },
        weights: {},
        replace: true,
        inheritance: undefined,
        maxInFlight: { default: null, overrides: {}, replace: true },
      },
    ])
  })

  it('applies in-flight caps with the rates, in the same call, and keeps them in the table', () => {
    const calls: Array<{ maxInFlight?: unknown }> = []
    const state = new ControlState({
      target: {
        apply: (change) => {
          calls.push(change)
          return { applied: true }
        },
      },
    })
    state.accept({ type: 'set', merchant: 'm1', rate: r('10/s'), maxInFlight: 5, version: 1 })
    state.accept({ type: 'set', merchant: '*', rate: r('1/s'), maxInFlight: 2, version: 2 })
    state.accept({
      type: 'snapshot',
      version: 3,
      default: r('1/s'),
      maxInFlight: 4,
      overrides: new Map([['m2', r('2/s')]]),
      caps: new Map([['m2', 7]]),
    })
    state.accept({ type: 'clear', merchant: 'm2', version: 4 })
    expect(calls.map((call) => call.maxInFlight)).toEqual([
      { overrides: { m1: 5 } },
      { default: 2 },
      { default: 4, overrides: { m2: 7 }, replace: true },
      { overrides: { m2: null } },
    ])
    state.forget('m2')
    expect(calls.at(-1)?.maxInFlight).toEqual({ overrides: { m2: 7 } })
    expect(state.table().overrides).toEqual([expect.objectContaining({ merchant: 'm2', maxInFlight: 7 })])
    expect(state.table().default).toMatchObject({ maxInFlight: 4 })
  })

  it('passes inheritance through to the limiter', () => {
    const calls: unknown[] = []
    const state = new ControlState({
      target: {
        apply: (change) => {
          calls.push(change)
          return { applied: true }
        },
      },
    })
    state.accept({ type: 'set', merchant: 'm1', rate: r('1/s'), version: 1, inheritance: 'reset' })
    expect(calls).toEqual([
      {
        overrides: { m1: r('1/s') },
        weights: { m1: null },
        inheritance: 'reset',
        maxInFlight: { overrides: { m1: null } },
      },
    ])
  })

  it('a change the limiter refuses is rejected, with nothing recorded', () => {
    const limiter = new KeyedLimiter({ rate: '1/s', maxKeyLength: 4 })
    const state = new ControlState({ target: limiter })
    const events: ControlEvent[] = []
    state.subscribe((event) => events.push(event))
    expect(state.accept(set('toolong', '5/s', 1))).toBe('rejected')
    expect(events).toEqual([
      {
        kind: 'rejected',
        reason: 'limiter-refused',
        error: expect.stringMatching(/^limiter: apply: expected override keys/),
        origin: { source: 'direct' },
      },
    ])
    expect(state.versionOf('toolong')).toBeUndefined()
    expect(state.accept(set('toolong', '5/s', 1))).toBe('rejected') // not stale: the first never counted
  })

  it("a flood of sets beyond the limiter's maxOverrides is rejected and counted one by one, and logged, with every rate in force kept", () => {
    const limiter = new KeyedLimiter({ rate: '1/s', maxOverrides: 3, clock: new FakeClock(0) })
    const lines: string[] = []
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) })
    const state = new ControlState({ target: limiter })
    logControlEvents(state, logger)
    const outcomes = Array.from({ length: 1_000 }, (_, i) => state.accept(set(`m${i}`, '5/s', i + 1)))
    expect(outcomes.filter((outcome) => outcome === 'applied')).toHaveLength(3)
    expect(state.stats().rejectedBy['limiter-refused']).toBe(997)
    expect(lines).toHaveLength(997)
    expect(JSON.parse(lines[0]!).msg).toBe(
      'control message rejected (limiter-refused): limiter: apply: 4 rate overrides would exceed maxOverrides (3); nothing was changed',
    )
    expect(Object.keys(limiter.rates().overrides)).toEqual(['m0', 'm1', 'm2'])
    expect(stateTable(state)).toEqual({ m0: '5/1000ms', m1: '5/1000ms', m2: '5/1000ms' })
    // the default still changes, and a merchant in force still can
    expect(state.accept(set('*', '2/s', 2_000))).toBe('applied')
    expect(state.accept(set('m1', '7/s', 2_001))).toBe('applied')
    expect(limiter.rateOf('m1').limit).toBe(7)
    expect(limiter.rateOf('m999').limit).toBe(2)
  })

  it('clearing the default is misuse', () => {
    const { state } = setup()
    expect(() => state.accept({ type: 'clear', merchant: '*', version: 1 })).toThrow(TypeError)
  })
})

describe('ControlState tombstones (forget)', () => {
  it('without a snapshot, a merchant tombstone removes its override and its version', () => {
    const { limiter, state } = setup()
    state.accept(set('m1', '10/s', 9))
    expect(state.forget('m1')).toBe('forgotten')
    expect(limiterTable(limiter).overrides).toEqual({})
    expect(state.versionOf('m1')).toBeUndefined()
    expect(state.accept(set('m1', '20/s', 3))).toBe('applied') // what a replay of the compacted topic would do
  })

  it('with a snapshot, a merchant falls back to the snapshot rate and version', () => {
    const { limiter, state } = setup()
    state.accept(snapshot(10, '1/s', { m1: '30/s' }))
    state.accept(set('m1', '10/s', 11))
    state.accept(set('m2', '20/s', 12))
    state.forget('m1')
    state.forget('m2')
    expect(limiterTable(limiter).overrides).toEqual({ m1: '30/1000ms' })
    expect(state.versionOf('m1')).toBe(10)
  })

  it('a tombstone with nothing to undo changes nothing', () => {
    const { state, events } = setup()
    state.accept(snapshot(10, '1/s', { m1: '30/s' }))
    state.forget('m1')
    state.forget('nobody')
    state.forget('*snapshot')
    state.forget('*')
    expect(events.slice(1).map((e) => e.kind === 'forgotten' && e.changed)).toEqual([
      false,
      false,
      false,
      false,
    ])
  })

  it('a default tombstone falls back to the snapshot default', () => {
    const { limiter, state } = setup()
    state.accept(snapshot(10, '1/s'))
    state.accept(set('*', '5/s', 11))
    state.forget('*')
    expect(limiter.rates().default).toEqual(r('1/s'))
  })
})

describe('ControlState table, events and stats', () => {
  it('table lists default, overrides in key order, the snapshot version and change times', () => {
    const { state } = setup()
    state.accept(snapshot(10, '1/s', { zeta: '1/s' }))
    state.accept(set('alpha', '2/s', 11))
    state.accept(set('*', '3/s', 12))
    expect(state.table()).toEqual({
      default: { rate: r('3/s'), version: 12, changedAtMs: 1_002 },
      overrides: [
        { merchant: 'alpha', rate: r('2/s'), version: 11, changedAtMs: 1_001 },
        { merchant: 'zeta', rate: r('1/s'), version: 10, changedAtMs: 1_000 },
      ],
      weights: [],
      snapshotVersion: 10,
      lastChangeAtMs: 1_002,
    })
    expect(state.maxVersion()).toBe(12)
  })

  it('emits applied, stale and rejected events and counts them', () => {
    const { state, events } = setup()
    state.accept(set('m1', '1/s', 2))
    state.accept(set('m1', '1/s', 1))
    state.reject('invalid-json', 'message: not JSON', { source: 'kafka', partition: 0, offset: '7' })
    expect(events.map((e) => e.kind)).toEqual(['applied', 'stale', 'rejected'])
    expect(events[1]).toMatchObject({ kind: 'stale', inForceVersion: 2 })
    expect(events[2]).toEqual({
      kind: 'rejected',
      reason: 'invalid-json',
      error: 'message: not JSON',
      origin: { source: 'kafka', partition: 0, offset: '7' },
    })
    expect(state.stats()).toEqual({
      applied: 1,
      stale: 1,
      rejected: 1,
      forgotten: 0,
      rejectedBy: { 'invalid-json': 1 },
    })
  })

  it('a listener that throws does not undo the change nor stop other listeners', () => {
    const { limiter, state } = setup()
    const seen: string[] = []
    state.subscribe(() => {
      throw new Error('metrics down')
    })
    state.subscribe((event) => seen.push(event.kind))
    expect(state.accept(set('m1', '7/s', 1))).toBe('applied')
    expect(limiter.rates().overrides.m1).toEqual(r('7/s'))
    expect(seen).toContain('applied')
  })

  it('works without a limiter, keeping only the table (throttlectl get)', () => {
    const state = new ControlState()
    expect(state.accept(set('m1', '7/s', 1))).toBe('applied')
    expect(state.table().overrides).toHaveLength(1)
  })
})

describe('ControlState and compaction', () => {
  // Compaction keeps the latest record of each message key. When versions rise with the
  // offsets under each key (throttlectl publishes above the topic's highest version), the
  // compacted log builds the same table as the full log, in any order of the partitions.
  it('replaying the compacted log ends at the same table as the full log', () => {
    const merchant = fc.constantFrom('m1', 'm2', 'm3', '*')
    const step = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), merchant, limit: fc.integer({ min: 1, max: 50 }) }),
      fc.record({ kind: fc.constant('clear' as const), merchant: fc.constantFrom('m1', 'm2', 'm3') }),
      fc.record({
        kind: fc.constant('snapshot' as const),
        limit: fc.integer({ min: 1, max: 50 }),
        overrides: fc.subarray(['m1', 'm2', 'm3']),
      }),
      fc.record({ kind: fc.constant('tombstone' as const), merchant: fc.constantFrom('m1', 'm2', 'm3') }),
    )
    fc.assert(
      fc.property(
        fc.array(step, { maxLength: 30 }),
        fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 30 }),
        (steps, gaps) => {
          // Build the log: versions rise (with gaps) in publish order, so they rise under every key.
          let version = 0
          const log = steps.map((s, i) => {
            version += gaps[i] ?? 1
            const key = s.kind === 'snapshot' ? '*snapshot' : s.merchant
            const change: ControlChange | null =
              s.kind === 'set'
                ? set(s.merchant, `${s.limit}/s`, version)
                : s.kind === 'clear'
                  ? clear(s.merchant, version)
                  : s.kind === 'snapshot'
                    ? snapshot(
                        version,
                        `${s.limit}/s`,
                        Object.fromEntries(s.overrides.map((m) => [m, `${s.limit + 1}/s`])),
                      )
                    : null
            return { key, change }
          })
          // A tombstone removes every record of its key, itself included, once compacted.
          const compacted = log.filter((record, i) => {
            const later = log.slice(i + 1)
            return record.change !== null && !later.some((l) => l.key === record.key)
          })
          const replay = (records: typeof log) => {
            const { limiter, state } = setup()
            for (const record of records) {
              if (record.change === null) state.forget(record.key)
              else state.accept(record.change)
            }
            return limiterTable(limiter)
          }
          expect(replay(compacted)).toEqual(replay(log))
        },
      ),
      { numRuns: 500 },
    )
  })
})

describe('ControlState weights', () => {
  /** recording is a state whose target keeps every apply call, for the weights they carry. */
  function recording() {
    const calls: Array<{ weights?: Readonly<Record<string, number | null>>; overrides?: unknown }> = []
    let wallMs = 1_000
    const state = new ControlState({
      target: {
        apply: (change) => {
          calls.push(change)
          return { applied: true }
        },
      },
      wallNow: () => wallMs++,
    })
    return { calls, state }
  }
  const weighted = (merchant: string, rate: string, weight: number, version: number): ControlChange => ({
    type: 'set',
    merchant,
    rate: r(rate),
    weight,
    version,
  })
  const weightsOf = (state: ControlState) =>
    Object.fromEntries(state.table().weights.map((entry) => [entry.merchant, entry.weight]))

  it("hands a set's weight to the limiter in the same call as its rate, and a set without one back to 1", () => {
    const { calls, state } = recording()
    state.accept(weighted('psp:adyen:m1', '20/s', 2, 1))
    state.accept(set('psp:adyen:m1', '20/s', 2))
    expect(calls).toEqual([
      expect.objectContaining({ overrides: { 'psp:adyen:m1': r('20/s') }, weights: { 'psp:adyen:m1': 2 } }),
      expect.objectContaining({
        overrides: { 'psp:adyen:m1': r('20/s') },
        weights: { 'psp:adyen:m1': null },
      }),
    ])
    expect(weightsOf(state)).toEqual({})
  })

  it('a clear takes the weight with the rate', () => {
    const { calls, state } = recording()
    state.accept(weighted('m1', '20/s', 3, 1))
    state.accept(clear('m1', 2))
    expect(calls[1]).toEqual(expect.objectContaining({ overrides: { m1: null }, weights: { m1: null } }))
    expect(state.table().weights).toEqual([])
  })

  it('orders weights by version as rates are: an older set with a weight is stale', () => {
    const { calls, state } = recording()
    state.accept(weighted('m1', '20/s', 3, 5))
    expect(state.accept(weighted('m1', '20/s', 9, 4))).toBe('stale')
    expect(calls).toHaveLength(1)
    expect(state.table().weights).toEqual([{ merchant: 'm1', weight: 3, version: 5, changedAtMs: 1_000 }])
  })

  it('a snapshot sets its weights, keys without a rate included, and drops each weight it does not list', () => {
    const { calls, state } = recording()
    state.accept(weighted('old', '20/s', 4, 1))
    state.accept({
      type: 'snapshot',
      version: 2,
      default: r('10/s'),
      overrides: new Map([['psp:adyen', r('200/s')]]),
      weights: new Map([
        ['psp:adyen:m1', 2],
        ['psp:adyen:m2', 0.5],
      ]),
    })
    expect(calls[1]).toEqual(
      expect.objectContaining({
        overrides: { 'psp:adyen': r('200/s') },
        weights: { old: null, 'psp:adyen:m1': 2, 'psp:adyen:m2': 0.5 },
        replace: true,
      }),
    )
    expect(weightsOf(state)).toEqual({ 'psp:adyen:m1': 2, 'psp:adyen:m2': 0.5 })
    // a key with only a weight has no rate of its own
    expect(state.table().overrides.map((entry) => entry.merchant)).toEqual(['psp:adyen'])
  })

  it('a snapshot keeps the weight of a newer set, whatever the arrival order', () => {
    const { state } = recording()
    state.accept(weighted('m1', '20/s', 5, 9))
    state.accept({
      type: 'snapshot',
      version: 3,
      default: r('10/s'),
      overrides: new Map(),
      weights: new Map([['m1', 2]]),
    })
    expect(weightsOf(state)).toEqual({ m1: 5 })
  })

  it("a tombstone gives a key back the snapshot's weight for it, or none", () => {
    const { calls, state } = recording()
    state.accept({
      type: 'snapshot',
      version: 3,
      default: r('10/s'),
      overrides: new Map(),
      weights: new Map([['m1', 2]]),
    })
    state.accept(weighted('m1', '20/s', 5, 4))
    state.accept(weighted('m2', '20/s', 7, 5))
    state.forget('m1')
    state.forget('m2')
    expect(calls.slice(-2)).toEqual([
      expect.objectContaining({ overrides: { m1: null }, weights: { m1: 2 } }),
      expect.objectContaining({ overrides: { m2: null }, weights: { m2: null } }),
    ])
    expect(weightsOf(state)).toEqual({ m1: 2 })
  })

  it('a weight the limiter refuses is rejected with the rates, nothing recorded', () => {
    let wallMs = 0
    const state = new ControlState({
      target: {
        apply: (change) => {
          if (change.weights?.m1 === 3) throw new TypeError('setWeight: expected a weight, got 3')
          return { applied: true }
        },
      },
      wallNow: () => wallMs++,
    })
    expect(state.accept(weighted('m1', '20/s', 3, 1))).toBe('rejected')
    expect(state.table()).toMatchObject({ overrides: [], weights: [] })
    expect(state.stats().rejectedBy).toEqual({ 'limiter-refused': 1 })
  })
})

describe('ControlState parent keys', () => {
  it("sets a parent's rate as any key's: a set and a snapshot override of 'psp:adyen' reach the limiter", () => {
    const { limiter, state } = setup()
    const parsed = parseControlMessage(
      JSON.stringify({ type: 'set', merchant: 'psp:adyen', rate: '200/s', version: 1 }),
    )
    if (!parsed.ok) throw new Error(parsed.error)
    expect(state.accept(parsed.change)).toBe('applied')
    expect(limiter.rateOf('psp:adyen')).toEqual(r('200/s'))
    state.accept(snapshot(2, '20/s', { 'psp:adyen': '50/s', 'psp:adyen:m_42': '5/s' }))
    expect(limiterTable(limiter).overrides).toEqual({
      'psp:adyen': '50/1000ms',
      'psp:adyen:m_42': '5/1000ms',
    })
  })
})
