import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { handleControlRecord, type RecordHandling } from '../../src/control/record.js'
import { DEFAULT_CONTROL_LIMITS, parseControlMessage } from '../../src/control/schema.js'
import {
  createSignatureVerifier,
  KEY_ID_HEADER,
  SIGNATURE_HEADER,
  signControlValue,
  tombstoneSignedBytes,
} from '../../src/control/signing.js'
import { type ControlEvent, ControlState } from '../../src/control/state.js'
import { encodeControlMessage } from '../../src/control/topic.js'
import { FakeClock, KeyedLimiter } from '../../src/limiter/index.js'

const key = { id: 'ops-1', secret: 'a-secret-of-enough-bytes' }
const unsignedHandling: RecordHandling = {
  limits: DEFAULT_CONTROL_LIMITS,
  verify: createSignatureVerifier([]),
}
const signedHandling: RecordHandling = {
  limits: DEFAULT_CONTROL_LIMITS,
  verify: createSignatureVerifier([key]),
}
const origin = { source: 'kafka', partition: 0, offset: '0' } as const

function setup() {
  const limiter = new KeyedLimiter({ rate: '100/min', clock: new FakeClock(0) })
  const state = new ControlState({ target: limiter })
  const events: ControlEvent[] = []
  state.subscribe((event) => events.push(event))
  // A table in force before the bad records arrive: they must leave it exactly as it is.
  state.accept({
    type: 'snapshot',
    version: 10,
    default: { limit: 50, intervalMs: 1000, burst: 50 },
    overrides: new Map([['m1', { limit: 5, intervalMs: 1000, burst: 5 }]]),
  })
  events.length = 0
  return { limiter, state, events }
}

const json = (value: unknown) => Buffer.from(JSON.stringify(value))

describe('handleControlRecord', () => {
  it('applies a valid record under its own key', () => {
    const { limiter, state } = setup()
    const outcome = handleControlRecord(
      state,
      { key: 'm2', value: json({ type: 'set', merchant: 'm2', rate: '7/s', version: 11 }) },
      unsignedHandling,
      origin,
    )
    expect(outcome).toBe('applied')
    expect(limiter.rates().overrides.m2).toEqual({ limit: 7, intervalMs: 1000, burst: 7 })
  })

  it.each([
    // compaction keeps the latest record per key: a set for m2 under key m1 would be lost or would shadow m1
    [
      'a key that is not the merchant',
      'm1',
      { type: 'set', merchant: 'm2', rate: '7/s', version: 11 },
      'key-mismatch',
    ],
    [
      'a default under a merchant key',
      'm1',
      { type: 'set', merchant: '*', rate: '7/s', version: 11 },
      'key-mismatch',
    ],
    [
      'a snapshot under a merchant key',
      'm1',
      { type: 'snapshot', version: 11, default: '1/s' },
      'key-mismatch',
    ],
    ['no key', null, { type: 'set', merchant: 'm2', rate: '7/s', version: 11 }, 'missing-key'],
    ['an empty key', '', { type: 'set', merchant: 'm2', rate: '7/s', version: 11 }, 'missing-key'],
  ])('rejects %s', (_name, recordKey, message, reason) => {
    const { limiter, state, events } = setup()
    const before = JSON.stringify(limiter.rates())
    expect(
      handleControlRecord(state, { key: recordKey, value: json(message) }, unsignedHandling, origin),
    ).toBe('rejected')
    expect(events).toMatchObject([{ kind: 'rejected', reason }])
    expect(JSON.stringify(limiter.rates())).toBe(before)
  })

  it('accepts snapshots under the snapshot key and the default under *', () => {
    const { state } = setup()
    expect(
      handleControlRecord(
        state,
        { key: '*snapshot', value: json({ type: 'snapshot', version: 11, default: '1/s' }) },
        unsignedHandling,
        origin,
      ),
    ).toBe('applied')
    expect(
      handleControlRecord(
        state,
        { key: '*', value: json({ type: 'set', merchant: '*', rate: '2/s', version: 12 }) },
        unsignedHandling,
        origin,
      ),
    ).toBe('applied')
  })

  it('checks the size before the signature, and the signature before the JSON', () => {
    const { state, events } = setup()
    const small = {
      limits: { ...DEFAULT_CONTROL_LIMITS, maxMessageBytes: 10 },
      verify: signedHandling.verify,
    }
    handleControlRecord(state, { key: 'm1', value: Buffer.from('x'.repeat(11)) }, small, origin)
    handleControlRecord(state, { key: 'm1', value: Buffer.from('not json') }, signedHandling, origin)
    expect(events.map((e) => e.kind === 'rejected' && e.reason)).toEqual(['too-large', 'unsigned'])
  })

  describe('with signing on', () => {
    const value = json({ type: 'set', merchant: 'm2', rate: '7/s', version: 11 })

    it('applies a signed record', () => {
      const { state } = setup()
      expect(
        handleControlRecord(
          state,
          { key: 'm2', value, headers: signControlValue(value, key) },
          signedHandling,
          origin,
        ),
      ).toBe('applied')
    })

    it.each([
      ['unsigned', undefined, 'unsigned'],
      ['forged', { [SIGNATURE_HEADER]: `v1=${'0'.repeat(64)}`, [KEY_ID_HEADER]: key.id }, 'bad-signature'],
      [
        'signed by an unknown key',
        signControlValue(value, { id: 'other', secret: 'another-secret-of-enough' }),
        'unknown-key-id',
      ],
    ])('rejects a record %s, rates unchanged', (_name, headers, reason) => {
      const { limiter, state, events } = setup()
      const before = JSON.stringify(limiter.rates())
      expect(handleControlRecord(state, { key: 'm2', value, headers }, signedHandling, origin)).toBe(
        'rejected',
      )
      expect(events).toMatchObject([{ kind: 'rejected', reason }])
      expect(JSON.stringify(limiter.rates())).toBe(before)
    })

    it('requires a tombstone to be signed over its key', () => {
      const { limiter, state } = setup()
      state.accept({
        type: 'set',
        merchant: 'm2',
        rate: { limit: 1, intervalMs: 1000, burst: 1 },
        version: 11,
      })
      expect(handleControlRecord(state, { key: 'm2', value: null }, signedHandling, origin)).toBe('rejected')
      expect(
        handleControlRecord(
          state,
          { key: 'm2', value: null, headers: signControlValue(tombstoneSignedBytes('m1'), key) },
          signedHandling,
          origin,
        ),
      ).toBe('rejected')
      expect(limiter.rates().overrides.m2).toBeDefined()
      expect(
        handleControlRecord(
          state,
          { key: 'm2', value: null, headers: signControlValue(tombstoneSignedBytes('m2'), key) },
          signedHandling,
          origin,
        ),
      ).toBe('forgotten')
      expect(limiter.rates().overrides.m2).toBeUndefined()
    })
  })
})

// ---- fuzzing: whatever arrives, nothing throws, nothing changes, and each record says why it was refused

/** NAN and INFINITY stand for numbers JSON.stringify cannot write; toJsonText writes them as raw tokens. */
const NAN = '\u0000NaN'
const INFINITY = '\u0000Infinity'
const NEG_INFINITY = '\u0000-Infinity'

function toJsonText(value: unknown): string {
  return JSON.stringify(value)
    .replaceAll(JSON.stringify(NAN), 'NaN')
    .replaceAll(JSON.stringify(INFINITY), '1e999')
    .replaceAll(JSON.stringify(NEG_INFINITY), '-1e999')
}

const wrongType = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.constantFrom(NAN, INFINITY, NEG_INFINITY, -0, -1, 1e308, -1e308, 0.5),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 3 }),
)
const badMerchant = fc.oneof(
  wrongType,
  fc.integer(),
  fc.constant(''),
  fc.string({ minLength: 129, maxLength: 300, unit: fc.constantFrom('a', 'b', '1') }),
  fc.string({ minLength: 1, maxLength: 20 }).filter((s) => !/^[A-Za-z0-9\-_.:@/+=]+$/.test(s) && s !== '*'),
)
const badNumber = (valid: (n: number) => boolean) =>
  fc.oneof(
    fc.constantFrom(NAN, INFINITY, NEG_INFINITY),
    fc.double({ noNaN: true }).filter((n) => !valid(n)),
    fc.integer().filter((n) => !valid(n)),
    fc.string({ maxLength: 6 }),
    fc.constant(null),
  )
const validLimit = (n: number) => Number.isFinite(n) && n > 0 && n <= DEFAULT_CONTROL_LIMITS.maxLimit
const validInterval = (n: number) => Number.isFinite(n) && n >= 1 && n <= DEFAULT_CONTROL_LIMITS.maxIntervalMs
const validBurst = (n: number) => Number.isFinite(n) && n >= 1 && n <= DEFAULT_CONTROL_LIMITS.maxBurst
const badRate = fc.oneof(
  wrongType,
  fc.integer(),
  fc.string({ maxLength: 20 }).filter((s) => !/^\s*\d/.test(s)),
  fc.constantFrom(
    '0/min',
    '-5/s',
    '1000001/s',
    '1/25h',
    '5/fortnight',
    '1/s burst 0',
    '1/s burst 2000000',
    '1e3/s',
  ),
  badNumber(validLimit).map((limit) => ({ limit, intervalMs: 1000 })),
  badNumber(validInterval).map((intervalMs) => ({ limit: 1, intervalMs })),
  badNumber(validBurst).map((burst) => ({ limit: 1, intervalMs: 1000, burst })),
  fc.constant({ limit: 1, intervalMs: 1000, burst: 1, extra: true }),
  fc.constant({ intervalMs: 1000 }),
)
const badVersion = fc.oneof(
  badNumber((n) => Number.isSafeInteger(n) && n >= 0),
  fc.constant(2 ** 53),
)
const unknownField = fc
  .string({ minLength: 1, maxLength: 12 })
  .filter(
    (name) =>
      !['type', 'merchant', 'rate', 'version', 'inheritance', 'default', 'overrides', 'maxInFlight'].includes(
        name,
      ),
  )
const validCap = (n: number) => Number.isInteger(n) && n >= 1 && n <= DEFAULT_CONTROL_LIMITS.maxInFlight
const badCap = fc.oneof(badNumber(validCap), fc.constantFrom(0, -1, 1.5, 1_000_001), wrongType)

const validSet = { type: 'set', merchant: 'm2', rate: '7/s', version: 11 }
const validSnapshot = { type: 'snapshot', version: 11, default: '1/s', overrides: { m2: '7/s' } }

/** nearValid is a valid message with exactly one thing wrong. */
const nearValid: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  badMerchant.map((merchant) => ({ ...validSet, merchant })),
  badRate.map((rate) => ({ ...validSet, rate })),
  badVersion.map((version) => ({ ...validSet, version })),
  fc
    .oneof(
      wrongType,
      fc.string().filter((s) => !['set', 'clear', 'snapshot'].includes(s)),
    )
    .map((type) => ({ ...validSet, type })),
  fc
    .oneof(
      wrongType,
      fc.string().filter((s) => !['proportional', 'as-is', 'reset'].includes(s)),
    )
    .map((inheritance) => ({
      ...validSet,
      inheritance,
    })),
  fc.tuple(unknownField, fc.jsonValue()).map(([name, value]) => ({ ...validSet, [name]: value })),
  fc.tuple(unknownField, fc.jsonValue()).map(([name, value]) => ({ ...validSnapshot, [name]: value })),
  badRate.map((rate) => ({ ...validSnapshot, overrides: { m2: '7/s', m3: rate } })),
  badRate.map((rate) => ({ ...validSnapshot, default: rate })),
  badCap.map((maxInFlight) => ({ ...validSet, maxInFlight })),
  badCap.map((maxInFlight) => ({ ...validSnapshot, maxInFlight })),
  badCap.map((maxInFlight) => ({
    ...validSnapshot,
    overrides: { m2: '7/s', m3: { rate: '1/s', maxInFlight } },
  })),
  badRate.map((rate) => ({ ...validSnapshot, overrides: { m3: { rate, maxInFlight: 5 } } })),
  fc
    .tuple(unknownField, fc.jsonValue())
    .map(([name, value]) => ({ ...validSnapshot, overrides: { m3: { rate: '1/s', [name]: value } } })),
  badMerchant
    .filter((m): m is string => typeof m === 'string')
    .map((merchant) => ({ ...validSnapshot, overrides: { m2: '7/s', [merchant]: '1/s' } })),
  fc.constantFrom(
    { type: 'clear', merchant: '*', version: 11 },
    { type: 'clear', merchant: 'm2', rate: '1/s', version: 11 },
    { ...validSnapshot, overrides: ['m2'] },
  ),
)

/** fuzzRecord feeds one record and checks the fuzzing invariants. */
function expectRejectedAndUnchanged(value: Buffer, recordKey = 'm2'): void {
  const { limiter, state, events } = setup()
  const before = JSON.stringify(limiter.rates())
  const table = JSON.stringify(state.table())
  const outcome = handleControlRecord(state, { key: recordKey, value }, unsignedHandling, origin)
  expect(outcome).toBe('rejected')
  expect(events).toHaveLength(1)
  const event = events[0]!
  expect(event.kind === 'rejected' && event.reason.length > 0 && event.error.length > 0).toBe(true)
  expect(JSON.stringify(limiter.rates())).toBe(before)
  expect(JSON.stringify(state.table())).toBe(table)
}

describe('fuzzing', () => {
  it('arbitrary bytes: rejected with a reason, rates unchanged', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        expectRejectedAndUnchanged(Buffer.from(bytes))
      }),
      { numRuns: 500 },
    )
  })

  it('arbitrary JSON: rejected with a reason, rates unchanged', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expectRejectedAndUnchanged(Buffer.from(JSON.stringify(value) ?? 'null'))
      }),
      { numRuns: 500 },
    )
  })

  it('arbitrary objects with the right field names: rejected with a reason, rates unchanged', () => {
    const field = fc.oneof(fc.jsonValue(), wrongType)
    const shaped = fc.record(
      {
        type: fc.constantFrom('set', 'clear', 'snapshot'),
        merchant: field,
        rate: field,
        version: field,
        default: field,
        overrides: field,
      },
      { requiredKeys: ['type'] },
    )
    fc.assert(
      fc.property(shaped, (message) => {
        const parsed = parseControlMessage(toJsonText(message))
        // The odd generated message may be valid (a clear of a good key, say): only refusals are checked here.
        fc.pre(!parsed.ok)
        expectRejectedAndUnchanged(Buffer.from(toJsonText(message)))
      }),
      { numRuns: 500 },
    )
  })

  it('near-valid messages (one field wrong): rejected naming the field, rates unchanged', () => {
    fc.assert(
      fc.property(nearValid, (message) => {
        const text = toJsonText(message)
        const parsed = parseControlMessage(text)
        expect(parsed.ok).toBe(false)
        if (!parsed.ok && parsed.reason === 'invalid-message')
          // a field, a quoted key, or the index of a rate's window in an array
          expect(parsed.error).toMatch(/^(?:message|[A-Za-z_]\w*|\[".*?"\])(?:\.\w+|\[".*?"\]|\[\d+\])*: \S/)
        expectRejectedAndUnchanged(Buffer.from(text), message.type === 'snapshot' ? '*snapshot' : 'm2')
      }),
      { numRuns: 2_000 },
    )
  })

  it('random headers never pass for a signature when signing is on', () => {
    const header = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc
        .string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 64, maxLength: 64 })
        .map((h) => `v1=${h}`),
    )
    fc.assert(
      fc.property(header, fc.option(fc.constantFrom(key.id, 'other', '')), (signature, keyId) => {
        const value = json(validSet)
        const headers = {
          [SIGNATURE_HEADER]: signature,
          ...(keyId === null ? {} : { [KEY_ID_HEADER]: keyId }),
        }
        expect(signedHandling.verify(value, headers).ok).toBe(false)
      }),
      { numRuns: 500 },
    )
  })

  it('valid messages survive encodeControlMessage unchanged', () => {
    const window = fc.record({
      limit: fc.double({ min: 0.001, max: 1_000_000, noNaN: true }),
      intervalMs: fc.integer({ min: 1, max: 86_400_000 }),
      burst: fc.double({ min: 1, max: 1_000_000, noNaN: true }),
    })
    // a rate of several windows goes out as an array of objects and comes back the same
    const rate = fc.oneof(
      window,
      fc
        .uniqueArray(window, { minLength: 2, maxLength: 4, selector: (w) => w.intervalMs })
        .map(([first, ...extraWindows]) => ({ ...first!, extraWindows })),
    )
    const merchant = fc.stringMatching(/^[A-Za-z0-9\-_.:@/+=]{1,128}$/)
    const version = fc.maxSafeNat()
    const cap = fc.integer({ min: 1, max: 1_000_000 })
    const weight = fc.double({ min: 0.001, max: 1_000, noNaN: true })
    const change = fc.oneof(
      // a weight beside a set's rate, and a snapshot's weights (for keys with or without a rate)
      fc.record({ type: fc.constant('set' as const), merchant, rate, weight, version }),
      fc.record({
        type: fc.constant('snapshot' as const),
        version,
        default: rate,
        overrides: fc.dictionary(merchant, rate, { maxKeys: 3 }).map((o) => new Map(Object.entries(o))),
        weights: fc
          .dictionary(merchant, weight, { minKeys: 1, maxKeys: 5 })
          .map((o) => new Map(Object.entries(o))),
      }),
      fc.record({ type: fc.constant('set' as const), merchant, rate, version }),
      fc.record({ type: fc.constant('clear' as const), merchant, version }),
      fc.record({
        type: fc.constant('snapshot' as const),
        version,
        default: rate,
        overrides: fc.dictionary(merchant, rate, { maxKeys: 5 }).map((o) => new Map(Object.entries(o))),
      }),
      fc.record({ type: fc.constant('set' as const), merchant, rate, maxInFlight: cap, version }),
      fc
        .record({
          type: fc.constant('snapshot' as const),
          version,
          default: rate,
          maxInFlight: cap,
          overrides: fc.dictionary(merchant, fc.tuple(rate, cap), { minKeys: 1, maxKeys: 5 }),
        })
        .map(({ overrides, ...rest }) => ({
          ...rest,
          overrides: new Map(Object.entries(overrides).map(([m, [r]]) => [m, r])),
          caps: new Map(Object.entries(overrides).map(([m, [, c]]) => [m, c])),
        })),
    )
    fc.assert(
      fc.property(change, (c) => {
        expect(parseControlMessage(encodeControlMessage(c))).toEqual({ ok: true, change: c })
      }),
      { numRuns: 300 },
    )
  })
})
