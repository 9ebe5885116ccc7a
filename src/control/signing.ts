import { createHmac, timingSafeEqual } from 'node:crypto'

/** SIGNATURE_HEADER carries `v1=<hex HMAC-SHA256 of the raw message value>`. */
export const SIGNATURE_HEADER = 'mt-signature'
/** KEY_ID_HEADER names the signing key, so that several keys can be accepted while one is rotated out. */
export const KEY_ID_HEADER = 'mt-key-id'
/** MIN_SECRET_BYTES is the shortest accepted secret: an HMAC key below 128 bits is a guessable one. */
export const MIN_SECRET_BYTES = 16

/** SigningKey is one shared secret and the id that names it in KEY_ID_HEADER. */
export interface SigningKey {
  readonly id: string
  /** secret: a string is used as its UTF-8 bytes. */
  readonly secret: string | Buffer
}

/** ControlHeaders are message headers as kafkajs hands them over. */
export type ControlHeaders = Readonly<
  Record<string, Buffer | string | ReadonlyArray<Buffer | string> | undefined>
>

/** SignatureCheck is the outcome of a SignatureVerifier. */
export type SignatureCheck =
  | { ok: true; keyId: string | undefined }
  | { ok: false; reason: 'unsigned' | 'unknown-key-id' | 'bad-signature'; error: string }

/** SignatureVerifier checks a message value against its headers. */
export type SignatureVerifier = (value: Buffer, headers: ControlHeaders | undefined) => SignatureCheck

/**
 * signControlValue returns the headers that sign `value` with `key`: SIGNATURE_HEADER
 * over the exact bytes that are sent, and KEY_ID_HEADER. The message key is not signed:
 * a record whose key does not match its value is refused anyway.
 */
export function signControlValue(value: Buffer | string, key: SigningKey): Record<string, string> {
  const [checked] = checkKeys([key])
  return {
    [SIGNATURE_HEADER]: `v1=${hmac(checked!.secret, value).toString('hex')}`,
    [KEY_ID_HEADER]: checked!.id,
  }
}

/**
 * createSignatureVerifier accepts a message signed by any of `keys`. With KEY_ID_HEADER
 * the named key must verify it; without, any key may. With no keys at all, every
 * message passes and signatures are not looked at. Comparisons are constant-time.
 * Throws a TypeError for an empty id, a duplicate id or a secret under MIN_SECRET_BYTES.
 */
export function createSignatureVerifier(keys: readonly SigningKey[]): SignatureVerifier {
  const checked = checkKeys(keys)
  if (checked.length === 0) return () => ({ ok: true, keyId: undefined })
  const byId = new Map(checked.map((key) => [key.id, key]))
  return (value, headers) => {
    const signature = headerText(headers?.[SIGNATURE_HEADER])
    if (signature === undefined)
      return { ok: false, reason: 'unsigned', error: `no ${SIGNATURE_HEADER} header` }
    const match = /^v1=([0-9a-f]{64})$/.exec(signature.trim())
    if (match === null) {
      return { ok: false, reason: 'bad-signature', error: `${SIGNATURE_HEADER}: expected v1=<64 hex digits>` }
    }
    const given = Buffer.from(match[1]!, 'hex')
    const keyId = headerText(headers?.[KEY_ID_HEADER])
    let candidates = checked
    if (keyId !== undefined) {
      const key = byId.get(keyId)
      if (key === undefined) {
        return {
          ok: false,
          reason: 'unknown-key-id',
          error: `${KEY_ID_HEADER} ${JSON.stringify(keyId.slice(0, 64))} is not an accepted key`,
        }
      }
      candidates = [key]
    }
    for (const key of candidates) {
      if (timingSafeEqual(hmac(key.secret, value), given)) return { ok: true, keyId: key.id }
    }
    return { ok: false, reason: 'bad-signature', error: 'signature does not match the message' }
  }
}

/**
 * tombstoneSignedBytes is what a tombstone (a record with a null value) is signed over:
 * `tombstone:` and its message key. Without it, anyone able to write to the topic could
 * undo a merchant's override unsigned.
 */
export function tombstoneSignedBytes(messageKey: string): Buffer {
  return Buffer.from(`tombstone:${messageKey}`, 'utf8')
}

function hmac(secret: Buffer, value: Buffer | string): Buffer {
  return createHmac('sha256', secret).update(value).digest()
}

function checkKeys(keys: readonly SigningKey[]): Array<{ id: string; secret: Buffer }> {
  if (!Array.isArray(keys))
    throw new TypeError(`signing keys: expected an array of { id, secret }, got ${typeof keys}`)
  const seen = new Set<string>()
  return keys.map((key) => {
    if (typeof key?.id !== 'string' || key.id.length === 0) {
      throw new TypeError(`signing keys: expected a non-empty string id, got ${JSON.stringify(key?.id)}`)
    }
    if (seen.has(key.id))
      throw new TypeError(`signing keys: expected unique ids, got ${JSON.stringify(key.id)} twice`)
    seen.add(key.id)
    const secret = typeof key.secret === 'string' ? Buffer.from(key.secret, 'utf8') : key.secret
    if (!Buffer.isBuffer(secret) || secret.length < MIN_SECRET_BYTES) {
      throw new TypeError(
        `signing keys: expected key ${JSON.stringify(key.id)} to have a secret of at least ${MIN_SECRET_BYTES} bytes, got ${Buffer.isBuffer(secret) ? secret.length : typeof key.secret}`,
      )
    }
    return { id: key.id, secret }
  })
}

/** headerText reads a header as text; a repeated header counts as its first value. */
function headerText(value: ControlHeaders[string]): string | undefined {
  const first = Array.isArray(value) ? value[0] : value
  if (first === undefined) return undefined
  return typeof first === 'string' ? first : (first as Buffer).toString('utf8')
}
