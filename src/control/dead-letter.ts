import type { Kafka, KafkaMessage, Producer } from 'kafkajs'
import type { Logger } from 'pino'
import type { ControlEvent } from './state.js'

/** REJECT_REASON_HEADER and REJECT_ERROR_HEADER say why a record was copied to the dead-letter topic. */
export const REJECT_REASON_HEADER = 'mt-reject-reason'
export const REJECT_ERROR_HEADER = 'mt-reject-error'

/** DeadLetterStats: records copied to the dead-letter topic, and copies that failed. */
export interface DeadLetterStats {
  deadLettered: number
  deadLetterFailures: number
}

/**
 * DeadLetterForwarder copies rejected control records whole (value and headers, with the
 * reason added) to a dead-letter topic, keyed `topic:partition:offset`. Without a
 * dead-letter topic it does nothing. A copy that fails is logged and counted; it never
 * stops the source.
 */
export class DeadLetterForwarder {
  readonly #kafka: Kafka
  readonly #sourceTopic: string
  readonly #deadLetterTopic: string | undefined
  readonly #logger: Logger
  readonly #pending = new Set<Promise<void>>()
  readonly #stats: DeadLetterStats = { deadLettered: 0, deadLetterFailures: 0 }
  #producer: Producer | undefined
  /** current is the record being handled, so that a rejection of it can be copied whole. */
  #current: { partition: number; message: KafkaMessage } | undefined

  constructor(kafka: Kafka, sourceTopic: string, deadLetterTopic: string | undefined, logger: Logger) {
    this.#kafka = kafka
    this.#sourceTopic = sourceTopic
    this.#deadLetterTopic = deadLetterTopic
    this.#logger = logger
  }

  /** start connects the producer, when there is a dead-letter topic. */
  async start(): Promise<void> {
    if (this.#deadLetterTopic === undefined) return
    this.#producer = this.#kafka.producer({ allowAutoTopicCreation: false })
    await this.#producer.connect()
  }

  /** handling runs `handle` (which reports rejections synchronously) with the record it handles remembered. */
  handling(partition: number, message: KafkaMessage, handle: () => void): void {
    this.#current = { partition, message }
    try {
      handle()
    } finally {
      this.#current = undefined
    }
  }

  /** forward copies the record being handled, which `event` rejected; outside `handling` it does nothing. */
  forward(event: Extract<ControlEvent, { kind: 'rejected' }>): void {
    const producer = this.#producer
    if (producer === undefined || this.#deadLetterTopic === undefined || this.#current === undefined) return
    const { partition, message } = this.#current
    const offset = message.offset
    const sent = producer
      .send({
        topic: this.#deadLetterTopic,
        messages: [
          {
            key: `${this.#sourceTopic}:${partition}:${offset}`,
            value: message.value,
            headers: {
              ...message.headers,
              'mt-source-key': message.key ?? '',
              [REJECT_REASON_HEADER]: event.reason,
              [REJECT_ERROR_HEADER]: event.error.slice(0, 1_000),
            },
          },
        ],
      })
      .then(
        () => {
          this.#stats.deadLettered++
        },
        (error: unknown) => {
          this.#stats.deadLetterFailures++
          this.#logger.error(
            { err: error, partition, offset },
            'copying a rejected control record to the dead-letter topic failed',
          )
        },
      )
      .finally(() => this.#pending.delete(sent))
    this.#pending.add(sent)
  }

  /** stop waits for the copies under way, then disconnects the producer. */
  async stop(): Promise<void> {
    await Promise.all(this.#pending)
    await this.#producer?.disconnect()
    this.#producer = undefined
  }

  stats(): DeadLetterStats {
    return { ...this.#stats }
  }
}
