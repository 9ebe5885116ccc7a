import { createHmac } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  createSignatureVerifier,
  KEY_ID_HEADER,
  SIGNATURE_HEADER,
  signControlValue,
} from '../../src/control/signing.js'

const current = { id: 'k2', secret: 'current-secret-0123456789' }
const previous = { id: 'k1', secret: Buffer.from('previous-secret-0123456789') }
const value = Buffer.from('{"type":"clear","merchant":"m1","version":1}')

describe('signControlValue', () => {
  it('signs the raw value with HMAC-SHA256 as v1=<hex>, naming the key', () => {
    const expected = createHmac('sha256', current.secret).update(value).digest('hex')
    expect(signControlValue(value, current)).toEqual({
      [SIGNATURE_HEADER]: `v1=${expected}`,
      [KEY_ID_HEADER]: 'k2',
    })
  })
})

describe('createSignatureVerifier', () => {
  const verify = createSignatureVerifier([current, previous])

  it.each([
    // each accepted key verifies its own signature: a rotation keeps both for a while
    ['signed with the current key', signControlValue(value, current), value, { ok: true, keyId: 'k2' }],
    ['signed with the previous key', signControlValue(value, previous), value, { ok: true, keyId: 'k1' }],
    // without a key id, any accepted key may verify
    [
      'no key id',
      { [SIGNATURE_HEADER]: signControlValue(value, previous)[SIGNATURE_HEADER] },
      value,
      { ok: true, keyId: 'k1' },
    ],
    // headers arrive as Buffers from kafkajs
    [
      'headers as Buffers',
      {
        [SIGNATURE_HEADER]: Buffer.from(signControlValue(value, current)[SIGNATURE_HEADER]!),
        [KEY_ID_HEADER]: Buffer.from('k2'),
      },
      value,
      { ok: true, keyId: 'k2' },
    ],
    ['unsigned', {}, value, { ok: false, reason: 'unsigned' }],
    ['no headers at all', undefined, value, { ok: false, reason: 'unsigned' }],
    // the value changed after signing
    [
      'a tampered value',
      signControlValue(value, current),
      Buffer.from(`${value} `),
      { ok: false, reason: 'bad-signature' },
    ],
    // signed with a key that is not (or no longer) accepted
    [
      'a retired key',
      signControlValue(value, { id: 'k0', secret: 'retired-secret-0123456789' }),
      value,
      { ok: false, reason: 'unknown-key-id' },
    ],
    // a valid signature of the previous key, claimed to be the current key's
    [
      'a key id that does not match',
      { ...signControlValue(value, previous), [KEY_ID_HEADER]: 'k2' },
      value,
      { ok: false, reason: 'bad-signature' },
    ],
    [
      'a forged signature',
      { [SIGNATURE_HEADER]: `v1=${'ab'.repeat(32)}`, [KEY_ID_HEADER]: 'k2' },
      value,
      { ok: false, reason: 'bad-signature' },
    ],
    [
      'a malformed header',
      { [SIGNATURE_HEADER]: 'sha256=abc' },
      value,
      { ok: false, reason: 'bad-signature' },
    ],
    ['a short signature', { [SIGNATURE_HEADER]: 'v1=abcd' }, value, { ok: false, reason: 'bad-signature' }],
  ])('%s', (_name, headers, signedValue, expected) => {
    expect(verify(signedValue, headers)).toMatchObject(expected)
  })

  it('with no keys configured, accepts everything without looking', () => {
    expect(createSignatureVerifier([])(value, undefined)).toEqual({ ok: true, keyId: undefined })
  })

  it.each([
    [[{ id: '', secret: 'x'.repeat(16) }], /non-empty string id/],
    [[{ id: 'a', secret: 'short' }], /at least 16 bytes, got 5/],
    [[current, { ...current }], /unique ids/],
  ])('refuses bad keys with a TypeError: %j', (keys, message) => {
    expect(() => createSignatureVerifier(keys)).toThrow(TypeError)
    expect(() => createSignatureVerifier(keys)).toThrow(message)
  })
})
