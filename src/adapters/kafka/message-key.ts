import type { IHeaders, KafkaMessage } from 'kafkajs'
import { checkMerchantKey } from '../../limiter/index.js'

/**
 * MerchantKeySource says where a message's merchant key is:
 * - `'message-key'` (the default): the Kafka message key, read as UTF-8. Producers key by
 *   merchant, so a merchant's messages share a partition and one consumer owns its limit.
 * - `{ header: name }`: the first value of that header, as UTF-8.
 * - `{ field: name }`: that property of the decoded value (JSON when no decoder is given).
 * - a function of the message and its decoded value.
 */
export type MerchantKeySource<T> =
  | 'message-key'
  | { header: string }
  | { field: string }
  | ((message: KafkaMessage, value: T) => unknown)

/** Decoded is a message's value after the decoder, or why it could not be decoded. */
export type Decoded<T> = { ok: true; value: T } | { ok: false; error: unknown }

/** KeyRefusal says why a message has no usable merchant key. */
export interface KeyRefusal {
  reason: string
}

/**
 * readKey finds the merchant key of `message` from `source` and checks it with
 * checkMerchantKey: it returns the key, or a KeyRefusal saying why there is none usable.
 * It never throws: a key function that throws is a refusal.
 */
export function readKey<T>(
  source: MerchantKeySource<T>,
  message: KafkaMessage,
  value: T,
  maxKeyLength?: number,
): string | KeyRefusal {
  let raw: unknown
  if (source === 'message-key') {
    raw = message.key?.toString('utf8')
  } else if (typeof source === 'function') {
    try {
      raw = source(message, value)
    } catch (error) {
      return { reason: `key function threw: ${errorMessage(error)}` }
    }
  } else if ('header' in source) {
    raw = headerText(message.headers, source.header)
  } else {
    raw =
      typeof value === 'object' && value !== null
        ? (value as Record<string, unknown>)[source.field]
        : undefined
  }
  const check = checkMerchantKey(raw, maxKeyLength)
  return check.ok ? check.key : { reason: check.reason }
}

/**
 * decodeValue runs `decode` on the message's value; without a decoder the value is the raw
 * Buffer (or null). A decoder that throws makes the message undecodable.
 */
export function decodeValue<T>(
  decode: ((value: Buffer | null, message: KafkaMessage) => T) | undefined,
  message: KafkaMessage,
): Decoded<T> {
  if (decode === undefined) return { ok: true, value: message.value as T }
  try {
    return { ok: true, value: decode(message.value, message) }
  } catch (error) {
    return { ok: false, error }
  }
}

/** jsonDecoder parses a UTF-8 JSON value; a null value (tombstone) is refused. */
export function jsonDecoder(value: Buffer | null): unknown {
  if (value === null) throw new TypeError('expected a JSON value, got null')
  return JSON.parse(value.toString('utf8'))
}

/** headerText is the first value of header `name` as UTF-8, or undefined when absent. */
export function headerText(headers: IHeaders | undefined, name: string): string | undefined {
  const value = headers?.[name]
  const first = Array.isArray(value) ? value[0] : value
  if (first === undefined) return undefined
  return typeof first === 'string' ? first : first.toString('utf8')
}

/** errorMessage is an error's message, or its string form when it is not an Error. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
