import type { Admin, Producer } from 'kafkajs'
import { type Rate, type RateWindow, windowsOf } from '../limiter/index.js'
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
 * that the latest record of every key stays forever, and waits until each partition has a
 * leader (up to `timeoutMs`, 30 s by default). Returns true when it created the topic,
 * false when it already existed (its config untouched).
 */
export async function ensureControlTopic(
  admin: Pick<Admin, 'createTopics' | 'fetchTopicMetadata' | 'listTopics'>,
  options: ControlTopicOptions & { timeoutMs?: number } = {},
): Promise<boolean> {
  const topic = options.topic ?? DEFAULT_CONTROL_TOPIC
  // createTopics on an existing topic makes kafkajs log an ERROR on every worker start
  const exists = (await admin.listTopics()).includes(topic)
  const created =
    !exists &&
    (await admin.createTopics({
      // kafkajs's own wait gives up when a KRaft broker still answers UNKNOWN_TOPIC_OR_PARTITION
      // for the new topic, which a loaded broker does for a while: the wait is done below.
      waitForLeaders: false,
      topics: [
        {
          topic,
          numPartitions: options.numPartitions ?? 1,
          replicationFactor: options.replicationFactor ?? 1,
          configEntries: [{ name: 'cleanup.policy', value: 'compact' }],
        },
      ],
    }))
  const deadline = performance.now() + (options.timeoutMs ?? 30_000)
  let last: unknown = 'no answer yet'
  while (performance.now() < deadline) {
    try {
      const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
      if (topics.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0)))
        return created
      last = 'partitions without a leader'
    } catch (error) {
      last = error
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(
    `control topic ${topic}: no leader for every partition within ${options.timeoutMs ?? 30_000} ms (${String(last)})`,
  )
}

/**
 * encodeControlMessage writes a change as the JSON that parseControlMessage reads back to
 * the same change: rates as `{ limit, intervalMs, burst }`, overrides as an object (an
 * override with an in-flight cap as `{ rate, maxInFlight }`), weights as an object.
 */
export function encodeControlMessage(change: ControlChange): string {
  const inheritance = change.inheritance === undefined ? {} : { inheritance: change.inheritance }
  switch (change.type) {
    case 'set':
      return JSON.stringify({
        type: 'set',
        merchant: change.merchant,
        rate: rateJson(change.rate),
        ...(change.maxInFlight === undefined ? {} : { maxInFlight: change.maxInFlight }),
        ...(change.weight === undefined ? {} : { weight: change.weight }),
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
        [...change.overrides].map(([merchant, rate]) => {
          const cap = change.caps?.get(merchant)
          return [merchant, cap === undefined ? rateJson(rate) : { rate: rateJson(rate), maxInFlight: cap }]
        }),
      )
      return JSON.stringify({
        type: 'snapshot',
        version: change.version,
        default: rateJson(change.default),
        ...(change.maxInFlight === undefined ? {} : { maxInFlight: change.maxInFlight }),
        overrides,
        ...(change.weights === undefined ? {} : { weights: Object.fromEntries(change.weights) }),
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

/** rateJson is a rate as a control message's object form: one object, or one per window. */
function rateJson(rate: Rate): RateWindow | RateWindow[] {
  const windows = windowsOf(rate).map(({ limit, intervalMs, burst }) => ({ limit, intervalMs, burst }))
  return windows.length === 1 ? windows[0]! : windows
}
