import type { Admin, Producer } from 'kafkajs'
import type { Rate } from '../limiter/index.js'
import { type ControlChange, messageKeyOf } from './schema.js'
import { type SigningKey, signControlValue } from './signing.js'

/** DEFAULT_CONTROL_TOPIC is the control topic's name unless configured otherwise. */
export const DEFAULT_CONTROL_TOPIC = 'merchant-throttle.control'

/** ControlTopicOptions describe the control topic to create. */
export interface ControlTopicOptions {
  topic?: string
  /** numPartitions: 1 by default. Versions make any count correct; one keeps a single order. */
  numPartitions?: number
  replicationFactor?: number
}

/**
 * ensureControlTopic creates the control topic, compacted (`cleanup.policy=compact`) so
 * that the latest record of every key stays forever, and waits for its leaders. Returns
 * true when it created the topic, false when it already existed (its config untouched).
 */
export async function ensureControlTopic(
  admin: Pick<Admin, 'createTopics'>,
  options: ControlTopicOptions = {},
): Promise<boolean> {
  return admin.createTopics({
    waitForLeaders: true,
    topics: [
      {
        topic: options.topic ?? DEFAULT_CONTROL_TOPIC,
        numPartitions: options.numPartitions ?? 1,
        replicationFactor: options.replicationFactor ?? 1,
        configEntries: [{ name: 'cleanup.policy', value: 'compact' }],
      },
    ],
  })
}

/**
 * encodeControlMessage writes a change as the JSON that parseControlMessage reads back to
 * the same change: rates as `{ limit, intervalMs, burst }`, overrides as an object.
 */
export function encodeControlMessage(change: ControlChange): string {
  const inheritance = change.inheritance === undefined ? {} : { inheritance: change.inheritance }
  switch (change.type) {
    case 'set':
      return JSON.stringify({
        type: 'set',
        merchant: change.merchant,
        rate: rateJson(change.rate),
        version: change.version,
        ...inheritance,
      })
    case 'clear':
      return JSON.stringify({
        type: 'clear',
        merchant: change.merchant,
        version: change.version,
        ...inheritance,
      })
    case 'snapshot': {
      const overrides = Object.fromEntries(
        [...change.overrides].map(([merchant, rate]) => [merchant, rateJson(rate)]),
      )
      return JSON.stringify({
        type: 'snapshot',
        version: change.version,
        default: rateJson(change.default),
        overrides,
        ...inheritance,
      })
    }
  }
}

/**
 * publishControlChange sends one change to the control topic under its message key
 * (the merchant, `*`, or the snapshot key), signed when `signingKey` is given, and
 * waits for the broker's acknowledgement from all in-sync replicas.
 */
export async function publishControlChange(
  producer: Pick<Producer, 'send'>,
  change: ControlChange,
  options: { topic?: string; signingKey?: SigningKey } = {},
): Promise<void> {
  const value = Buffer.from(encodeControlMessage(change), 'utf8')
  const headers = options.signingKey === undefined ? undefined : signControlValue(value, options.signingKey)
  await producer.send({
    topic: options.topic ?? DEFAULT_CONTROL_TOPIC,
    acks: -1,
    messages: [{ key: messageKeyOf(change), value, headers }],
  })
}

function rateJson(rate: Rate): { limit: number; intervalMs: number; burst: number } {
  return { limit: rate.limit, intervalMs: rate.intervalMs, burst: rate.burst }
}
