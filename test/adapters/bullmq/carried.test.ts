import { describe, expect, it } from 'vitest'
import { readCarried, THROTTLE_FIELD, withCarried } from '../../../src/adapters/bullmq/carried.js'

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
