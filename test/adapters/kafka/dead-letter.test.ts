import type { KafkaMessage } from 'kafkajs'
import { describe, expect, it } from 'vitest'
import { DEAD_LETTER_HEADERS, deadLetterMessage } from '../../../src/adapters/kafka/dead-letter.js'
import { PermanentFailureError } from '../../../src/errors.js'

describe('deadLetterMessage', () => {
  const original = {
    key: Buffer.from('m-1'),
    value: Buffer.from('payload'),
    timestamp: '1700000000000',
    attributes: 0,
    offset: '42',
    headers: { trace: 'abc' },
  } as KafkaMessage

  it('keeps key, value and headers and says why and where from', () => {
    const record = deadLetterMessage({ topic: 'payments', partition: 3 }, original, {
      reason: 'handler-failed',
      error: new Error('HTTP 500'),
      attempts: 5,
    })
    expect(record.key).toEqual(original.key)
    expect(record.value).toEqual(original.value)
    expect(record.headers).toEqual({
      trace: 'abc',
      [DEAD_LETTER_HEADERS.reason]: 'handler-failed',
      [DEAD_LETTER_HEADERS.error]: 'HTTP 500',
      [DEAD_LETTER_HEADERS.attempts]: '5',
      [DEAD_LETTER_HEADERS.topic]: 'payments',
      [DEAD_LETTER_HEADERS.partition]: '3',
      [DEAD_LETTER_HEADERS.offset]: '42',
    })
  })

  it('bounds the error text and takes non-Error reasons as text', () => {
    const long = deadLetterMessage({ topic: 't', partition: 0 }, original, {
      reason: 'undecodable',
      error: new Error('x'.repeat(5_000)),
      attempts: 0,
    })
    expect((long.headers![DEAD_LETTER_HEADERS.error] as string).length).toBe(1_000)
    const text = deadLetterMessage({ topic: 't', partition: 0 }, original, {
      reason: 'invalid-key',
      error: 'invalid merchant key: missing',
      attempts: 0,
    })
    expect(text.headers![DEAD_LETTER_HEADERS.error]).toBe('invalid merchant key: missing')
  })

  it('leads the error text with the reason of a PermanentFailureError', () => {
    const record = deadLetterMessage({ topic: 't', partition: 0 }, original, {
      reason: 'permanent-failure',
      error: new PermanentFailureError('client-error', 'HTTP 400 from the PSP'),
      attempts: 1,
    })
    expect(record.headers![DEAD_LETTER_HEADERS.error]).toBe('client-error: HTTP 400 from the PSP')
  })
})
