import { describe, expect, it } from 'vitest'
import {
  checkLimitKeys,
  innermostKey,
  keyList,
  limitKeysOf,
  sameKeys,
} from '../../src/adapters/limit-keys.js'
import { MAX_LIMIT_KEYS } from '../../src/limiter/index.js'

describe('checkLimitKeys', () => {
  it.each([
    // [what limitKeys gave, what the limiter is asked with]
    ['m_42', 'm_42'],
    [['m_42'], 'm_42'], // one element: the key itself, no array on the hot path
    [
      ['psp:adyen', 'psp:adyen:m_42'],
      ['psp:adyen', 'psp:adyen:m_42'],
    ],
    [
      ['a', 'b', 'c', 'd'],
      ['a', 'b', 'c', 'd'],
    ],
  ])('accepts %j as %j', (given, keys) => {
    expect(checkLimitKeys(given)).toEqual({ ok: true, keys })
  })

  it.each([
    // [what limitKeys gave, the reason, which names what is wrong]
    [[], 'expected 1 to 4 limit keys, got none'],
    [['a', 'b', 'c', 'd', 'e'], `expected 1 to ${MAX_LIMIT_KEYS} limit keys, got 5`],
    [['psp', 'm', 'psp'], 'limit key 2 repeats key 0 (psp)'],
    [['psp', 42], 'limit key 1 expected a string, got number'],
    [['psp', ''], 'limit key 1 empty'],
    [['psp', 'has space'], 'limit key 1 contains characters outside [A-Za-z0-9-_.:@/+=]'],
    [['*'], "limit key 0 '*' is reserved for the default rate"],
    [undefined, 'limit key missing'],
    [{ keys: ['a'] }, 'limit key expected a string, got object'],
  ])('refuses %j: %s', (given, reason) => {
    expect(checkLimitKeys(given)).toEqual({ ok: false, reason })
  })

  it('holds each key to the key length bound given', () => {
    expect(checkLimitKeys(['psp', 'x'.repeat(9)], 8)).toEqual({
      ok: false,
      reason: 'limit key 1 longer than 8 characters (9)',
    })
  })
})

describe('limitKeysOf', () => {
  it('passes the merchant key and the value to the function and checks its answer', () => {
    const keys = (merchantKey: string, data: { psp: string }) => [
      `psp:${data.psp}`,
      `psp:${data.psp}:${merchantKey}`,
    ]
    expect(limitKeysOf(keys, 'm_42', { psp: 'adyen' })).toEqual({
      ok: true,
      keys: ['psp:adyen', 'psp:adyen:m_42'],
    })
  })

  it('turns a throw into a refusal that says so, with the error message', () => {
    const keys = () => {
      throw new Error("template 'psp:{psp}': job data has no field 'psp'")
    }
    expect(limitKeysOf(keys, 'm_42', {})).toEqual({
      ok: false,
      reason: "limitKeys threw: template 'psp:{psp}': job data has no field 'psp'",
    })
  })
})

describe('innermostKey, keyList, sameKeys', () => {
  it('innermostKey is the last key, where penalties go', () => {
    expect(innermostKey('m')).toBe('m')
    expect(innermostKey(['psp', 'psp:m'])).toBe('psp:m')
  })

  it('keyList is always a list', () => {
    expect(keyList('m')).toEqual(['m'])
    expect(keyList(['psp', 'psp:m'])).toEqual(['psp', 'psp:m'])
  })

  it('sameKeys compares lists by their keys', () => {
    expect(sameKeys(['psp', 'm'], ['psp', 'm'])).toBe(true)
    expect(sameKeys(['psp', 'm'], ['psp', 'n'])).toBe(false)
    expect(sameKeys(['psp', 'm'], ['psp'])).toBe(false)
    expect(sameKeys(undefined, ['psp'])).toBe(false)
    expect(sameKeys('m', 'm')).toBe(true)
    expect(sameKeys('m', ['m'])).toBe(false)
  })
})
