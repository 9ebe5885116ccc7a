import type { IHeaders, KafkaMessage, Message } from 'kafkajs'
import { PermanentFailureError } from '../../errors.js'
import { errorMessage } from './message-key.js'

/**
 * DeadLetterReason says why a message went to the dead-letter topic: no usable merchant
 * key, a value the decoder refused, a handler that kept failing for maxAttempts, or a
 * handler that threw PermanentFailureError (dead-lettered at once).
 */
export type DeadLetterReason = 'invalid-key' | 'undecodable' | 'handler-failed' | 'permanent-failure'

/** DeadLetter is a message's failure: why, the error or check that refused it, attempts spent. */
export interface DeadLetter {
  reason: DeadLetterReason
  /** error is the handler's last error, the decoder's error, or the key check's reason. */
  error: unknown
  /** attempts is the number of handler calls made (0 when the handler never ran). */
  attempts: number
}

/**
 * DEAD_LETTER_HEADERS name the headers a dead-lettered message carries, besides its own:
 * why it was dead-lettered, where it came from, how many handler calls were made and the
 * last error (or the key check's refusal).
 */
export const DEAD_LETTER_HEADERS = {
  reason: 'mt-dead-letter-reason',
  error: 'mt-dead-letter-error',
  attempts: 'mt-dead-letter-attempts',
  topic: 'mt-original-topic',
  partition: 'mt-original-partition',
  offset: 'mt-original-offset',
} as const

/** MAX_ERROR_HEADER_LENGTH bounds the error text copied into a header, in characters. */
export const MAX_ERROR_HEADER_LENGTH = 1000

/**
 * deadLetterMessage is the record written to the dead-letter topic for `message`: the
 * original key, value and headers, plus the DEAD_LETTER_HEADERS. Its timestamp is the time
 * of writing, so the topic's retention counts from the dead-lettering.
 */
export function deadLetterMessage(
  origin: { topic: string; partition: number },
  message: KafkaMessage,
  failure: DeadLetter,
): Message {
  const headers: IHeaders = {
    ...message.headers,
    [DEAD_LETTER_HEADERS.reason]: failure.reason,
    [DEAD_LETTER_HEADERS.error]: errorText(failure.error).slice(0, MAX_ERROR_HEADER_LENGTH),
    [DEAD_LETTER_HEADERS.attempts]: String(failure.attempts),
    [DEAD_LETTER_HEADERS.topic]: origin.topic,
    [DEAD_LETTER_HEADERS.partition]: String(origin.partition),
    [DEAD_LETTER_HEADERS.offset]: message.offset,
  }
  return { key: message.key, value: message.value, headers }
}

/** errorText is the error's message, led by its reason when it is a PermanentFailureError. */
function errorText(error: unknown): string {
  if (error instanceof PermanentFailureError) return `${error.reason}: ${error.message}`
  return errorMessage(error)
}
