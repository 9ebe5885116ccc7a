import { randomBytes } from 'node:crypto'
import { Webhook } from 'standardwebhooks'
import { describe, expect, it } from 'vitest'
import { parseWebhookSecret, secretsInForce, signatureHeader } from '../../src/handlers/index.js'

const secretOf = (bytes: number) => `whsec_${randomBytes(bytes).toString('base64')}`

describe('parseWebhookSecret', () => {
  it('decodes whsec_ base64 and bare base64 alike', () => {
    const key = randomBytes(32)
    expect(parseWebhookSecret(`whsec_${key.toString('base64')}`)).toEqual({ ok: true, key })
    expect(parseWebhookSecret(key.toString('base64'))).toEqual({ ok: true, key })
  })

  it.each([
    ['whsec_not base64!', 'expected whsec_ followed by base64'],
    ['whsec_abc', 'expected whsec_ followed by base64'], // not a multiple of 4
    [`whsec_${Buffer.alloc(8).toString('base64')}`, 'expected at least 16 bytes of key, got 8'],
    [42, 'expected a string, got number'],
  ])('refuses %j without repeating it', (secret, reason) => {
    const check = parseWebhookSecret(secret)
    expect(check).toEqual({ ok: false, reason })
  })
})

describe('secretsInForce', () => {
  const rotation = { current: 'whsec_new', previous: { secret: 'whsec_old', expiresAtWallMs: 10_000 } }
  it('signs with both secrets until the grace period ends, then with the current one', () => {
    expect(secretsInForce(rotation, 9_999)).toEqual(['whsec_new', 'whsec_old'])
    expect(secretsInForce(rotation, 10_000)).toEqual(['whsec_new'])
    expect(secretsInForce('whsec_only', 0)).toEqual(['whsec_only'])
  })
})

describe('signatureHeader', () => {
  it('gives signatures that standardwebhooks verifies, one per key, space-separated', () => {
    const current = secretOf(32)
    const previous = secretOf(24)
    const keys = [current, previous].map((secret) => {
      const check = parseWebhookSecret(secret)
      if (!check.ok) throw new Error(check.reason)
      return check.key
    })
    const body = JSON.stringify({ type: 'payment.succeeded', amount: 1200 })
    const timestampS = Math.floor(Date.now() / 1000)
    const header = signatureHeader(keys, 'evt_1', timestampS, body)
    expect(header.split(' ')).toHaveLength(2)
    const headers = {
      'webhook-id': 'evt_1',
      'webhook-timestamp': String(timestampS),
      'webhook-signature': header,
    }
    for (const secret of [current, previous]) {
      expect(new Webhook(secret).verify(body, headers)).toEqual({ type: 'payment.succeeded', amount: 1200 })
    }
    expect(() => new Webhook(secretOf(32)).verify(body, headers)).toThrow('No matching signature found')
  })
})
