import type { KafkaMessage } from 'kafkajs'
import { describe, expect, it } from 'vitest'
import { decodeValue, headerText, jsonDecoder, readKey } from '../../../src/adapters/kafka/message-key.js'

function message(fields: Partial<KafkaMessage> = {}): KafkaMessage {
  return {
    key: null,
    value: null,
    timestamp: '0',
    attributes: 0,
    offset: '0',
    headers: {},
    ...fields,
  } as KafkaMessage
}

describe('readKey', () => {
  const rows: [
    name: string,
    source: Parameters<typeof readKey>[0],
    msg: KafkaMessage,
    value: unknown,
    expected: unknown,
  ][] = [
    ['message key as UTF-8', 'message-key', message({ key: Buffer.from('m-1') }), null, 'm-1'],
    ['no message key', 'message-key', message(), null, { reason: 'missing' }],
    ['empty message key', 'message-key', message({ key: Buffer.alloc(0) }), null, { reason: 'empty' }],
    [
      'key with a space',
      'message-key',
      message({ key: Buffer.from('m 1') }),
      null,
      { reason: expect.stringContaining('characters') },
    ],
    [
      'header, Buffer value',
      { header: 'merchant' },
      message({ headers: { merchant: Buffer.from('m-2') } }),
      null,
      'm-2',
    ],
    [
      'header, first of several',
      { header: 'merchant' },
      message({ headers: { merchant: ['m-3', 'm-4'] } }),
      null,
      'm-3',
    ],
    ['header absent', { header: 'merchant' }, message(), null, { reason: 'missing' }],
    ['field of the decoded value', { field: 'merchantId' }, message(), { merchantId: 'm-5' }, 'm-5'],
    [
      'field of a number',
      { field: 'merchantId' },
      message(),
      { merchantId: 5 },
      { reason: 'expected a string, got number' },
    ],
    ['field of a non-object', { field: 'merchantId' }, message(), 'text', { reason: 'missing' }],
    ['function', (m: KafkaMessage) => `x-${m.offset}`, message({ offset: '9' }), null, 'x-9'],
    [
      'function that throws',
      () => {
        throw new Error('boom')
      },
      message(),
      null,
      { reason: 'key function threw: boom' },
    ],
    [
      'reserved *',
      'message-key',
      message({ key: Buffer.from('*') }),
      null,
      { reason: expect.stringContaining('reserved') },
    ],
  ]
  it.each(rows)('%s', (_name, source, msg, value, expected) => {
    expect(readKey(source, msg, value)).toEqual(expected)
  })

  it('refuses a key longer than maxKeyLength', () => {
    expect(readKey('message-key', message({ key: Buffer.from('abcdef') }), null, 5)).toEqual({
      reason: 'longer than 5 characters (6)',
    })
  })
})

describe('decodeValue', () => {
  it('passes the raw value through without a decoder', () => {
    const value = Buffer.from('raw')
    expect(decodeValue(undefined, message({ value }))).toEqual({ ok: true, value })
  })

  it('turns a throwing decoder into an undecodable result', () => {
    const result = decodeValue(jsonDecoder, message({ value: Buffer.from('{not json') }))
    expect(result.ok).toBe(false)
    expect(!result.ok && result.error).toBeInstanceOf(SyntaxError)
  })

  it('jsonDecoder parses JSON and refuses a tombstone', () => {
    expect(jsonDecoder(Buffer.from('{"a":1}'))).toEqual({ a: 1 })
    expect(() => jsonDecoder(null)).toThrow('expected a JSON value, got null')
  })
})

describe('headerText', () => {
  it('reads strings and Buffers, and undefined when absent', () => {
    expect(headerText({ a: 'x', b: Buffer.from('y') }, 'a')).toBe('x')
    expect(headerText({ a: 'x', b: Buffer.from('y') }, 'b')).toBe('y')
    expect(headerText(undefined, 'a')).toBeUndefined()
  })
})
