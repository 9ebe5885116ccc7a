import { type ControlLimits, messageKeyOf, parseControlMessage } from './schema.js'
import { type ControlHeaders, type SignatureVerifier, tombstoneSignedBytes } from './signing.js'
import type { ControlOrigin, ControlOutcome, ControlState } from './state.js'

/** ControlRecord is a control message as read from the topic: key, raw value (null for a tombstone), headers. */
export interface ControlRecord {
  readonly key: Buffer | string | null
  readonly value: Buffer | null
  readonly headers?: ControlHeaders
}

/** RecordHandling is what handleControlRecord needs besides the state. */
export interface RecordHandling {
  readonly limits: ControlLimits
  readonly verify: SignatureVerifier
}

/**
 * handleControlRecord takes one record through every check, in order: a message key,
 * size, signature (over the raw value, before it is parsed; a tombstone's over its key),
 * a tombstone (forget that key), schema, and a message key that matches what the
 * message changes (so that compaction keeps the right record). Each refusal is reported
 * to `state` with its reason; nothing here throws on bad input.
 */
export function handleControlRecord(
  state: ControlState,
  record: ControlRecord,
  handling: RecordHandling,
  origin: ControlOrigin,
): ControlOutcome {
  const key = record.key === null ? undefined : record.key.toString()
  if (key === undefined || key.length === 0) return state.reject('missing-key', 'message has no key', origin)
  if (record.value === null) {
    const signature = handling.verify(tombstoneSignedBytes(key), record.headers)
    if (!signature.ok) return state.reject(signature.reason, `tombstone: ${signature.error}`, origin)
    return state.forget(key, origin)
  }
  if (record.value.byteLength > handling.limits.maxMessageBytes) {
    return state.reject(
      'too-large',
      `message: ${record.value.byteLength} bytes, above the ${handling.limits.maxMessageBytes} allowed`,
      origin,
    )
  }
  const signature = handling.verify(record.value, record.headers)
  if (!signature.ok) return state.reject(signature.reason, signature.error, origin)
  const parsed = parseControlMessage(record.value, handling.limits)
  if (!parsed.ok) return state.reject(parsed.reason, parsed.error, origin)
  const expectedKey = messageKeyOf(parsed.change)
  if (key !== expectedKey) {
    return state.reject(
      'key-mismatch',
      `message key ${JSON.stringify(key.slice(0, 64))} does not match the change, which belongs under ${JSON.stringify(expectedKey)}`,
      origin,
    )
  }
  return state.accept(parsed.change, origin)
}
