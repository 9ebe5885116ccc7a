import { describe, expect, it } from 'vitest'
import {
  readCarried,
  readParked,
  signCarried,
  THROTTLE_FIELD,
  verifyCarried,
  withCarried,
} from '../../../src/adapters/bullmq/carried.js'

const carried = { reservedAtWallMs: 1_700_000_000_500, attemptsMade: 2, attemptsStarted: 5, cost: 1 }

describe('carried reservation', () => {
  it('round-trips through job data as JSON, keeping the rest of the data', () => {
    const data = withCarried({ merchantId: 'm1', amount: 10 }, carried)
    const stored = JSON.parse(JSON.stringify(data))
    expect(stored.merchantId).toBe('m1')
    expect(stored.amount).toBe(10)
    expect(readCarried(stored)).toEqual(carried)
  })

  it('overwrites an earlier reservation instead of nesting it', () => {
    const first = withCarried({ merchantId: 'm1' }, carried)
    const second = withCarried(first, { ...carried, attemptsStarted: 6 })
    expect(readCarried(second)?.attemptsStarted).toBe(6)
    expect(Object.keys(second!)).toEqual(['merchantId', THROTTLE_FIELD])
  })

  it.each([
    ['no field', { merchantId: 'm1' }],
    ['a string field', { [THROTTLE_FIELD]: 'soon' }],
    ['a missing reservedAtWallMs', { [THROTTLE_FIELD]: { ...carried, reservedAtWallMs: undefined } }],
    ['a fractional attemptsMade', { [THROTTLE_FIELD]: { ...carried, attemptsMade: 0.5 } }],
    ['data that is not an object', 'just a string'],
    ['null data', null],
  ])('reads nothing from data with %s', (_name, data) => {
    expect(readCarried(data)).toBeUndefined()
  })

  it.each([
    ['a string', 'payload'],
    ['an array', [1, 2]],
    ['null', null],
  ])('cannot be carried by data that is %s', (_name, data) => {
    expect(withCarried(data, carried)).toBeUndefined()
  })
})

describe('signed reservations (issue 15, item 9)', () => {
  const key = Buffer.from('a secret the workers share, 32 bytes')

  it('verify accepts what sign made, for the same job', () => {
    expect(verifyCarried(key, 'job-1', signCarried(key, 'job-1', carried))).toBe(true)
  })

  it.each([
    ['another job id', 'job-2', {}],
    ['a moved reserved time', 'job-1', { reservedAtWallMs: carried.reservedAtWallMs - 1 }],
    ['another attempt', 'job-1', { attemptsStarted: 6 }],
    ['a lower cost', 'job-1', { cost: 0.5 }],
    ['held added', 'job-1', { held: true }],
  ])('verify refuses a signed reservation with %s', (_name, jobId, change) => {
    const signed = { ...signCarried(key, 'job-1', carried), ...change }
    expect(verifyCarried(key, jobId, signed)).toBe(false)
  })

  it('verify refuses one without a mac, or signed with another key', () => {
    expect(verifyCarried(key, 'job-1', carried)).toBe(false)
    const other = signCarried(Buffer.from('another secret of at least 16 bytes'), 'job-1', carried)
    expect(verifyCarried(key, 'job-1', other)).toBe(false)
  })

  it('the parked mark is written last, so the promotion script can replace it at the end of the JSON', () => {
    const data = withCarried(
      { [THROTTLE_FIELD]: carried, merchantId: 'm1', nested: { a: [1] } },
      { parkedAtWallMs: 5 },
    )
    expect(JSON.stringify(data).endsWith(`"${THROTTLE_FIELD}":{"parkedAtWallMs":5}}`)).toBe(true)
    expect(readParked(data)).toEqual({ parkedAtWallMs: 5 })
    expect(readCarried(data)).toBeUndefined()
  })
})
