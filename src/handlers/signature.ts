import { createHmac } from 'node:crypto'

/** MIN_SECRET_BYTES is the shortest signing key accepted, in decoded bytes (128 bits). */
export const MIN_SECRET_BYTES = 16

/**
 * SigningSecrets are a merchant's webhook secrets: one secret, or during a rotation the
 * current one and the previous one with the wall time (ms) its grace period ends. While the
 * previous secret is valid both sign, so a merchant verifying with either accepts.
 * Secrets are Standard Webhooks strings: `whsec_` and base64 (the prefix is optional).
 */
export type SigningSecrets =
  | string
  | {
      readonly current: string
      readonly previous?: { readonly secret: string; readonly expiresAtWallMs: number }
    }

/** SecretCheck is parseWebhookSecret's answer: the key bytes, or why the secret is refused. */
export type SecretCheck = { ok: true; key: Buffer } | { ok: false; reason: string }

/**
 * parseWebhookSecret decodes a Standard Webhooks secret: an optional `whsec_` prefix, then
 * strict base64 of at least MIN_SECRET_BYTES bytes. The reason never contains the secret.
 * Use it to check configured secrets at start-up.
 */
export function parseWebhookSecret(secret: unknown): SecretCheck {
  if (typeof secret !== 'string') return { ok: false, reason: `expected a string, got ${typeof secret}` }
  const encoded = secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : secret
  if (encoded.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(encoded)) {
    return { ok: false, reason: 'expected whsec_ followed by base64' }
  }
  const key = Buffer.from(encoded, 'base64')
  if (key.length < MIN_SECRET_BYTES) {
    return { ok: false, reason: `expected at least ${MIN_SECRET_BYTES} bytes of key, got ${key.length}` }
  }
  return { ok: true, key }
}

/**
 * secretsInForce lists the secrets to sign with at `nowWallMs`: the current one, then the
 * previous one while its grace period lasts (until `expiresAtWallMs`, exclusive).
 */
export function secretsInForce(secrets: SigningSecrets, nowWallMs: number): string[] {
  if (typeof secrets === 'string') return [secrets]
  const { current, previous } = secrets
  return previous !== undefined && nowWallMs < previous.expiresAtWallMs
    ? [current, previous.secret]
    : [current]
}

/**
 * signatureHeader is the Standard Webhooks `webhook-signature` value: for each key,
 * `v1,` and the base64 HMAC-SHA256 of `${id}.${timestampS}.${body}`, space-separated.
 */
export function signatureHeader(
  keys: readonly Buffer[],
  id: string,
  timestampS: number,
  body: string,
): string {
  const signed = `${id}.${timestampS}.${body}`
  return keys.map((key) => `v1,${createHmac('sha256', key).update(signed).digest('base64')}`).join(' ')
}
