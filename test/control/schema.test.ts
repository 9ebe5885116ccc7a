import { describe, expect, it } from 'vitest'
import { DEFAULT_CONTROL_LIMITS, parseControlMessage, resolveLimits } from '../../src/control/schema.js'

const MIN = 60_000

function parse(message: unknown, limits?: Parameters<typeof parseControlMessage>[1]) {
  return parseControlMessage(typeof message === 'string' ? message : JSON.stringify(message), limits)
}

describe('parseControlMessage accepts', () => {
  it.each([
    // a rate as a string; the burst defaults to the limit
    [
      { type: 'set', merchant: 'm_123', rate: '5000/min', version: 42 },
      { type: 'set', merchant: 'm_123', rate: { limit: 5000, intervalMs: MIN, burst: 5000 }, version: 42 },
    ],
    // a rate as an object, burst given, and an inheritance
    [
      {
        type: 'set',
        merchant: 'm1',
        rate: { limit: 10, intervalMs: 1000, burst: 3 },
        version: 0,
        inheritance: 'reset',
      },
      {
        type: 'set',
        merchant: 'm1',
        rate: { limit: 10, intervalMs: 1000, burst: 3 },
        version: 0,
        inheritance: 'reset',
      },
    ],
    // an object without burst: burst = limit
    [
      { type: 'set', merchant: 'm1', rate: { limit: 0.5, intervalMs: 1000 }, version: 1 },
      { type: 'set', merchant: 'm1', rate: { limit: 0.5, intervalMs: 1000, burst: 1 }, version: 1 },
    ],
    // several windows, as a string or an array of objects, every one kept
    [
      { type: 'set', merchant: 'm1', rate: '20/s burst 40, 50000/day', version: 2 },
      {
        type: 'set',
        merchant: 'm1',
        rate: {
          limit: 20,
          intervalMs: 1000,
          burst: 40,
          extraWindows: [{ limit: 50_000, intervalMs: 86_400_000, burst: 50_000 }],
        },
        version: 2,
      },
    ],
    [
      {
        type: 'set',
        merchant: 'm1',
        rate: [
          { limit: 2, intervalMs: 1000, burst: 2 },
          { limit: 5, intervalMs: 10_000 },
        ],
        version: 3,
      },
      {
        type: 'set',
        merchant: 'm1',
        rate: {
          limit: 2,
          intervalMs: 1000,
          burst: 2,
          extraWindows: [{ limit: 5, intervalMs: 10_000, burst: 5 }],
        },
        version: 3,
      },
    ],
    // `*` is the default rate
    [
      { type: 'set', merchant: '*', rate: '1000/min burst 50', version: 7 },
      { type: 'set', merchant: '*', rate: { limit: 1000, intervalMs: MIN, burst: 50 }, version: 7 },
    ],
    [
      { type: 'clear', merchant: 'm_123', version: 43, inheritance: 'as-is' },
      { type: 'clear', merchant: 'm_123', version: 43, inheritance: 'as-is' },
    ],
    // the largest version a JSON number holds exactly
    [
      { type: 'clear', merchant: 'm', version: Number.MAX_SAFE_INTEGER },
      { type: 'clear', merchant: 'm', version: Number.MAX_SAFE_INTEGER },
    ],
  ])('%j', (message, change) => {
    expect(parse(message)).toEqual({ ok: true, change })
  })

  it('a snapshot, its overrides as a Map', () => {
    const result = parse({
      type: 'snapshot',
      version: 44,
      default: '1000/min',
      overrides: { m1: '5000/min', m2: '1/s' },
    })
    expect(result.ok).toBe(true)
    if (!result.ok || result.change.type !== 'snapshot') return
    expect(result.change.default).toEqual({ limit: 1000, intervalMs: MIN, burst: 1000 })
    expect([...result.change.overrides]).toEqual([
      ['m1', { limit: 5000, intervalMs: MIN, burst: 5000 }],
      ['m2', { limit: 1, intervalMs: 1000, burst: 1 }],
    ])
  })

  it('a snapshot without overrides has none', () => {
    const result = parse({ type: 'snapshot', version: 1, default: '10/s' })
    expect(result.ok && result.change.type === 'snapshot' && result.change.overrides.size).toBe(0)
  })

  it('merchants named like Object.prototype members, which a plain record would lose', () => {
    const result = parse(
      '{"type":"snapshot","version":1,"default":"1/s","overrides":{"__proto__":"5/s","constructor":"1/h"}}',
    )
    expect(result.ok && result.change.type === 'snapshot' && [...result.change.overrides.keys()]).toEqual([
      '__proto__',
      'constructor',
    ])
  })

  it('a Buffer as well as a string', () => {
    expect(parseControlMessage(Buffer.from('{"type":"clear","merchant":"m","version":1}')).ok).toBe(true)
  })
})

describe('parseControlMessage rejects, naming the field and what was wrong', () => {
  const maxKey = 'k'.repeat(DEFAULT_CONTROL_LIMITS.maxMerchantKeyLength)
  it.each([
    // not JSON at all
    ['{"type":', 'invalid-json', /^message: not JSON/],
    ['', 'invalid-json', /^message: not JSON/],
    // JSON, but not an object
    ['5', 'invalid-message', 'message: expected object, got 5'],
    ['null', 'invalid-message', 'message: expected object, got null'],
    ['[]', 'invalid-message', 'message: expected object, got an array'],
    // type
    [{ merchant: 'm', version: 1 }, 'invalid-message', 'type: missing'],
    [
      { type: 'delete', merchant: 'm', version: 1 },
      'invalid-message',
      'type: expected one of "set", "clear", "snapshot", got "delete"',
    ],
    // unknown fields, at the top and inside a rate
    [{ type: 'clear', merchant: 'm', version: 1, reason: 'x' }, 'invalid-message', 'reason: unknown field'],
    [
      { type: 'set', merchant: 'm', rate: { limit: 1, intervalMs: 1, per: 's' }, version: 1 },
      'invalid-message',
      'rate.per: unknown field',
    ],
    // merchant key: type, empty, too long, characters, reserved
    [
      { type: 'set', merchant: 7, rate: '1/s', version: 1 },
      'invalid-message',
      'merchant: expected a string, got number',
    ],
    [{ type: 'set', rate: '1/s', version: 1 }, 'invalid-message', 'merchant: missing'],
    [{ type: 'set', merchant: '', rate: '1/s', version: 1 }, 'invalid-message', 'merchant: empty'],
    [
      { type: 'set', merchant: `${maxKey}k`, rate: '1/s', version: 1 },
      'invalid-message',
      'merchant: longer than 128 characters (129)',
    ],
    [
      { type: 'set', merchant: 'm 1', rate: '1/s', version: 1 },
      'invalid-message',
      /^merchant: contains characters outside/,
    ],
    [
      { type: 'set', merchant: 'mé', rate: '1/s', version: 1 },
      'invalid-message',
      /^merchant: contains characters outside/,
    ],
    [
      { type: 'clear', merchant: '*', version: 1 },
      'invalid-message',
      "merchant: '*' is reserved for the default rate",
    ],
    // rate: missing, wrong type, unreadable string
    [{ type: 'set', merchant: 'm', version: 1 }, 'invalid-message', 'rate: missing'],
    [
      { type: 'set', merchant: 'm', rate: 5, version: 1 },
      'invalid-message',
      /^rate: expected a rate like '1000\/min'/,
    ],
    [
      { type: 'set', merchant: 'm', rate: '5 per minute', version: 1 },
      'invalid-message',
      /^rate: expected a rate like '1000\/min'/,
    ],
    // several windows: the one out of bounds is named, by position in a string, by index in an array
    [
      { type: 'set', merchant: 'm', rate: '20/s burst 40, 5000000/day', version: 1 },
      'invalid-message',
      'rate.limit: window 2 of 2: expected a number > 0 and <= 1000000, got 5000000',
    ],
    [
      {
        type: 'set',
        merchant: 'm',
        rate: [
          { limit: 20, intervalMs: 1000 },
          { limit: 5, intervalMs: 0 },
        ],
        version: 1,
      },
      'invalid-message',
      'rate[1].intervalMs: expected a number of ms in [1, 86400000], got 0',
    ],
    [
      { type: 'set', merchant: 'm', rate: [{ limit: 20, intervalMs: 1000 }, '5/min'], version: 1 },
      'invalid-message',
      'rate[1]: expected a window { limit, intervalMs, burst }, got "5/min"',
    ],
    [
      { type: 'set', merchant: 'm', rate: [], version: 1 },
      'invalid-message',
      /^rate: expected a rate like .* \(or an array of 1 to 4 of them\), got/,
    ],
    [
      { type: 'set', merchant: 'm', rate: '1/s, 2/min, 3/h, 4/day, 5/10s', version: 1 },
      'invalid-message',
      /^rate: expected 1 to 4 windows, got 5/,
    ],
    [
      { type: 'set', merchant: 'm', rate: '10/s, 20/1000ms', version: 1 },
      'invalid-message',
      /^rate: window 2 of 2 repeats the 1000 ms interval of window 1/,
    ],
    [
      { type: 'set', merchant: 'm', rate: '0/min', version: 1 },
      'invalid-message',
      /^rate: expected a finite limit above 0/,
    ],
    // rates too slow to be finite or too long an interval are refused with the bound (issue 15, item 7)
    [
      { type: 'set', merchant: 'm', rate: { limit: 1e-305, intervalMs: 86_400_000 }, version: 1 },
      'invalid-message',
      /^rate: expected a rate from 0.001 per day to 1000000000 per second, got/,
    ],
    [
      { type: 'set', merchant: 'm', rate: { limit: 1, intervalMs: 1e308, burst: 2 }, version: 1 },
      'invalid-message',
      'rate.intervalMs: expected a number of ms in [1, 86400000], got 1e+308',
    ],
    // rate.limit: > 0, <= maxLimit, finite, a number
    [
      { type: 'set', merchant: 'm', rate: { limit: 0, intervalMs: 1000 }, version: 1 },
      'invalid-message',
      'rate.limit: expected a number > 0 and <= 1000000, got 0',
    ],
    [
      { type: 'set', merchant: 'm', rate: { limit: -5, intervalMs: 1000 }, version: 1 },
      'invalid-message',
      'rate.limit: expected a number > 0 and <= 1000000, got -5',
    ],
    [
      { type: 'set', merchant: 'm', rate: { limit: 1_000_001, intervalMs: 1000 }, version: 1 },
      'invalid-message',
      'rate.limit: expected a number > 0 and <= 1000000, got 1000001',
    ],
    [
      { type: 'set', merchant: 'm', rate: '1000001/s', version: 1 },
      'invalid-message',
      'rate.limit: expected a number > 0 and <= 1000000, got 1000001',
    ],
    [
      '{"type":"set","merchant":"m","rate":{"limit":1e999,"intervalMs":1000},"version":1}',
      'invalid-message',
      'rate.limit: expected a number > 0 and <= 1000000, got Infinity',
    ],
    [
      { type: 'set', merchant: 'm', rate: { limit: '5', intervalMs: 1000 }, version: 1 },
      'invalid-message',
      'rate.limit: expected a number, got "5"',
    ],
    [
      { type: 'set', merchant: 'm', rate: { intervalMs: 1000 }, version: 1 },
      'invalid-message',
      'rate.limit: missing',
    ],
    // rate.intervalMs: within [1 ms, 1 day]
    [
      { type: 'set', merchant: 'm', rate: { limit: 1 }, version: 1 },
      'invalid-message',
      'rate.intervalMs: missing',
    ],
    [
      { type: 'set', merchant: 'm', rate: { limit: 1, intervalMs: 0.5 }, version: 1 },
      'invalid-message',
      'rate.intervalMs: expected a number of ms in [1, 86400000], got 0.5',
    ],
    [
      { type: 'set', merchant: 'm', rate: { limit: 1, intervalMs: 86_400_001 }, version: 1 },
      'invalid-message',
      'rate.intervalMs: expected a number of ms in [1, 86400000], got 86400001',
    ],
    // days are a unit: two of them are read, then refused by the control's one-day bound
    [
      { type: 'set', merchant: 'm', rate: '1/2d', version: 1 },
      'invalid-message',
      'rate.intervalMs: expected a number of ms in [1, 86400000], got 172800000',
    ],
    [
      { type: 'set', merchant: 'm', rate: '1/2 fortnights', version: 1 },
      'invalid-message',
      /^rate: expected a rate like/,
    ],
    [
      { type: 'set', merchant: 'm', rate: '1/25h', version: 1 },
      'invalid-message',
      'rate.intervalMs: expected a number of ms in [1, 86400000], got 90000000',
    ],
    // rate.burst: >= 1, <= maxBurst
    [
      { type: 'set', merchant: 'm', rate: { limit: 1, intervalMs: 1000, burst: 0.5 }, version: 1 },
      'invalid-message',
      'rate.burst: expected a number >= 1 and <= 1000000, got 0.5',
    ],
    [
      { type: 'set', merchant: 'm', rate: { limit: 1, intervalMs: 1000, burst: 2_000_000 }, version: 1 },
      'invalid-message',
      'rate.burst: expected a number >= 1 and <= 1000000, got 2000000',
    ],
    // version: a whole number in [0, 2^53 - 1]
    [{ type: 'clear', merchant: 'm' }, 'invalid-message', 'version: missing'],
    [
      { type: 'clear', merchant: 'm', version: '1' },
      'invalid-message',
      'version: expected a whole number >= 0, got "1"',
    ],
    [
      { type: 'clear', merchant: 'm', version: 1.5 },
      'invalid-message',
      'version: expected a whole number >= 0, got 1.5',
    ],
    [
      { type: 'clear', merchant: 'm', version: -1 },
      'invalid-message',
      'version: expected a whole number in [0, 9007199254740991], got -1',
    ],
    [
      { type: 'clear', merchant: 'm', version: 2 ** 53 },
      'invalid-message',
      'version: expected a whole number in [0, 9007199254740991], got 9007199254740992',
    ],
    [
      '{"type":"clear","merchant":"m","version":1e999}',
      'invalid-message',
      'version: expected a whole number >= 0, got Infinity',
    ],
    // inheritance
    [
      { type: 'clear', merchant: 'm', version: 1, inheritance: 'keep' },
      'invalid-message',
      'inheritance: expected one of "proportional", "as-is", "reset", got "keep"',
    ],
    // snapshot: default required, overrides an object of valid keys and rates
    [{ type: 'snapshot', version: 1 }, 'invalid-message', 'default: missing'],
    [
      { type: 'snapshot', version: 1, default: '1/s', overrides: [] },
      'invalid-message',
      'overrides: expected an object of merchant: rate, got an array',
    ],
    [
      { type: 'snapshot', version: 1, default: '1/s', overrides: { 'a b': '1/s' } },
      'invalid-message',
      /^overrides\["a b"\]: merchant key "a b": contains characters/,
    ],
    [
      { type: 'snapshot', version: 1, default: '1/s', overrides: { '*': '1/s' } },
      'invalid-message',
      /^overrides\["\*"\]: merchant key "\*": '\*' is reserved/,
    ],
    [
      { type: 'snapshot', version: 1, default: '1/s', overrides: { m: null } },
      'invalid-message',
      /^overrides\.m: expected a rate like/,
    ],
    [
      { type: 'snapshot', version: 1, default: '1/s', overrides: { m: { limit: 1, intervalMs: 0 } } },
      'invalid-message',
      'overrides.m.intervalMs: expected a number of ms in [1, 86400000], got 0',
    ],
    // an override written with its cap: { rate, maxInFlight }, each checked at its own path
    [
      { type: 'snapshot', version: 1, default: '1/s', overrides: { m: { rate: '1/s', maxInFlight: 0 } } },
      'invalid-message',
      'overrides.m.maxInFlight: expected a whole number in [1, 1000000], got 0',
    ],
    [
      { type: 'snapshot', version: 1, default: '1/s', overrides: { m: { rate: '1/s', cap: 2 } } },
      'invalid-message',
      'overrides.m.cap: unknown field',
    ],
    [
      {
        type: 'snapshot',
        version: 1,
        default: '1/s',
        overrides: { m: { rate: { limit: -1, intervalMs: 1000 } } },
      },
      'invalid-message',
      'overrides.m.rate.limit: expected a number > 0 and <= 1000000, got -1',
    ],
    [
      { type: 'snapshot', version: 1, default: '1/s', overrides: { m: { rate: 'fast', maxInFlight: 2 } } },
      'invalid-message',
      /^overrides\.m\.rate: /,
    ],
  ])('%j -> %s: %s', (message, reason, error) => {
    const result = parse(message)
    expect(result.ok).toBe(false)
    if (result.ok) return
    expect(result.reason).toBe(reason)
    if (typeof error === 'string') expect(result.error).toBe(error)
    else expect(result.error).toMatch(error)
  })

  it('lists several problems at once, three at most', () => {
    const result = parse({ type: 'set', merchant: 1, rate: 5, version: 1.5, extra: 1 })
    expect(result.ok === false && result.error).toMatch(
      /^merchant: expected a string, got number; rate: expected a rate like .*; version: expected a whole number >= 0, got 1\.5 \(and 1 more\)$/,
    )
  })

  it('a message above maxMessageBytes, before reading it', () => {
    const big = JSON.stringify({ type: 'snapshot', version: 1, default: '1/s', overrides: {} }).padEnd(
      2_000,
      ' ',
    )
    expect(parseControlMessage(big, { maxMessageBytes: 1_000 })).toEqual({
      ok: false,
      reason: 'too-large',
      error: 'message: 2000 bytes, above the 1000 allowed',
    })
    expect(parseControlMessage(big, { maxMessageBytes: 2_000 }).ok).toBe(true)
  })

  it('counts bytes, not characters', () => {
    const message = `{"type":"clear","merchant":"m","version":1}${' '.repeat(10)}`
    expect(parseControlMessage(Buffer.from(message), { maxMessageBytes: message.length }).ok).toBe(true)
    expect(parseControlMessage(`${message}é`, { maxMessageBytes: message.length + 1 }).ok).toBe(false)
  })

  it('a snapshot with more overrides than maxOverrides', () => {
    const overrides = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`m${i}`, '1/s']))
    expect(parse({ type: 'snapshot', version: 1, default: '1/s', overrides }, { maxOverrides: 11 }).ok).toBe(
      true,
    )
    expect(parse({ type: 'snapshot', version: 1, default: '1/s', overrides }, { maxOverrides: 10 })).toEqual({
      ok: false,
      reason: 'invalid-message',
      error: 'overrides: 11 overrides, above the 10 allowed',
    })
  })

  it('applies configured bounds: limit, interval, burst, key length', () => {
    const limits = {
      maxLimit: 100,
      minIntervalMs: 1000,
      maxIntervalMs: 60_000,
      maxBurst: 10,
      maxMerchantKeyLength: 4,
    }
    const set = (merchant: string, rate: unknown) =>
      parse({ type: 'set', merchant, rate, version: 1 }, limits)
    expect(set('m', { limit: 100, intervalMs: 1000, burst: 10 }).ok).toBe(true)
    expect(set('m', { limit: 101, intervalMs: 1000, burst: 10 })).toMatchObject({
      error: 'rate.limit: expected a number > 0 and <= 100, got 101',
    })
    expect(set('m', { limit: 1, intervalMs: 999 })).toMatchObject({
      error: 'rate.intervalMs: expected a number of ms in [1000, 60000], got 999',
    })
    expect(set('m', { limit: 1, intervalMs: 60_001 })).toMatchObject({
      error: 'rate.intervalMs: expected a number of ms in [1000, 60000], got 60001',
    })
    expect(set('m', { limit: 50, intervalMs: 1000 })).toMatchObject({
      error: 'rate.burst: expected a number >= 1 and <= 10, got 50',
    })
    expect(set('m123', '1/s').ok).toBe(true)
    expect(set('m1234', '1/s')).toMatchObject({ error: 'merchant: longer than 4 characters (5)' })
  })
})

describe('resolveLimits', () => {
  it('fills bounds not given from the defaults', () => {
    expect(resolveLimits({ maxLimit: 5 })).toEqual({ ...DEFAULT_CONTROL_LIMITS, maxLimit: 5 })
    expect(resolveLimits()).toBe(DEFAULT_CONTROL_LIMITS)
  })

  it.each([0, -1, Number.NaN, Number.POSITIVE_INFINITY])(
    'refuses a bound of %s with a TypeError',
    (value) => {
      expect(() => resolveLimits({ maxBurst: value })).toThrow(TypeError)
      expect(() => resolveLimits({ maxBurst: value })).toThrow(/expected maxBurst to be a finite number > 0/)
    },
  )
})

describe('parseControlMessage weights', () => {
  it("takes a set's weight beside its rate, and a snapshot's weights, for keys with a rate or without", () => {
    expect(parse({ type: 'set', merchant: 'psp:adyen:m_42', rate: '20/s', weight: 2, version: 7 })).toEqual({
      ok: true,
      change: {
        type: 'set',
        merchant: 'psp:adyen:m_42',
        rate: { limit: 20, intervalMs: 1000, burst: 20 },
        weight: 2,
        version: 7,
      },
    })
    const result = parse({
      type: 'snapshot',
      version: 8,
      default: '10/s',
      overrides: { 'psp:adyen': '200/s' },
      weights: { 'psp:adyen:m_42': 2, 'psp:adyen:m_7': 0.5 },
    })
    expect(result).toMatchObject({
      ok: true,
      change: {
        overrides: new Map([['psp:adyen', { limit: 200, intervalMs: 1000, burst: 200 }]]),
        weights: new Map([
          ['psp:adyen:m_42', 2],
          ['psp:adyen:m_7', 0.5],
        ]),
      },
    })
  })

  it('leaves weights out of a snapshot whose weights object is empty', () => {
    const result = parse({ type: 'snapshot', version: 1, default: '1/s', weights: {} })
    expect(result.ok && 'weights' in result.change).toBe(false)
  })

  it.each<[unknown, string]>([
    [
      { type: 'set', merchant: 'm', rate: '1/s', weight: 0, version: 1 },
      'weight: expected a weight, a number in [0.001, 1000], got 0',
    ],
    [
      { type: 'set', merchant: 'm', rate: '1/s', weight: 1001, version: 1 },
      'weight: expected a weight, a number in [0.001, 1000], got 1001',
    ],
    [
      { type: 'set', merchant: 'm', rate: '1/s', weight: '2', version: 1 },
      'weight: expected a weight, a number in [0.001, 1000], got "2"',
    ],
    [
      { type: 'set', merchant: 'm', rate: '1/s', weight: null, version: 1 },
      'weight: expected a weight, a number in [0.001, 1000], got null',
    ],
    [
      { type: 'set', merchant: '*', rate: '1/s', weight: 2, version: 1 },
      "weight: a weight is a child key's share of its parent; the default rate ('*') takes none",
    ],
    [
      { type: 'snapshot', version: 1, default: '1/s', weights: [2] },
      'weights: expected an object of key: weight, got an array',
    ],
    [
      { type: 'snapshot', version: 1, default: '1/s', weights: { 'a b': 2 } },
      'weights["a b"]: key "a b": contains characters outside [A-Za-z0-9-_.:@/+=]',
    ],
    [
      { type: 'snapshot', version: 1, default: '1/s', weights: { '*': 2 } },
      `weights["*"]: key "*": '*' is reserved for the default rate`,
    ],
    [
      { type: 'snapshot', version: 1, default: '1/s', weights: { m: -1 } },
      'weights.m: expected a weight, a number in [0.001, 1000], got -1',
    ],
    [
      { type: 'snapshot', version: 1, default: '1/s', weights: { m: Number.MAX_VALUE * 10 } },
      'weights.m: expected a weight, a number in [0.001, 1000], got null',
    ],
    [{ type: 'clear', merchant: 'm', weight: 2, version: 1 }, 'weight: unknown field'],
  ])('rejects %j: %s', (message, error) => {
    expect(parse(message)).toEqual({ ok: false, reason: 'invalid-message', error })
  })

  it('bounds the number of weights by maxOverrides and the weights by minWeight and maxWeight', () => {
    const weights = Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`m${i}`, 1]))
    expect(parse({ type: 'snapshot', version: 1, default: '1/s', weights }, { maxOverrides: 3 })).toEqual({
      ok: false,
      reason: 'invalid-message',
      error: 'weights: 4 weights, above the 3 allowed',
    })
    expect(
      parse(
        { type: 'set', merchant: 'm', rate: '1/s', weight: 5, version: 1 },
        { minWeight: 1, maxWeight: 4 },
      ),
    ).toEqual({
      ok: false,
      reason: 'invalid-message',
      error: 'weight: expected a weight, a number in [1, 4], got 5',
    })
  })
})
