import type { MerchantBacklog } from './backlog.js'
import type { DeadLetterReason } from './dead-letter.js'
import type { DispatcherStats } from './dispatcher.js'
import type { ParkerStats } from './parking.js'
import type { PartitionGauges } from './partition-table.js'

/** ThrottledConsumerStats are gauges and counters for the service's metrics. */
export interface ThrottledConsumerStats extends DispatcherStats, ParkerStats, PartitionGauges {
  /** parkedHandled: messages read back from a parking topic and finished. */
  parkedHandled: number
  /** parkedSkipped: source messages skipped because a committed move had parked them already (after a restart or rebalance). */
  parkedSkipped: number
  /** backlog: the merchants with the most messages waiting (at most BACKLOG_MERCHANTS), most first. */
  backlog: MerchantBacklog[]
  /** refetchedSkipped: messages fetched again after a rejoin and skipped (already held or done). */
  refetchedSkipped: number
  /** commits: offset commits the broker accepted. */
  commits: number
  commitFailures: number
  /** rebalances: assignments received (the first join included). */
  rebalances: number
  /** restarts: times the consumer ran kafkajs again after a crash kafkajs would not restart from. */
  restarts: number
}

/** DeadLetterEvent tells of a message written to the dead-letter topic. */
export interface DeadLetterEvent {
  topic: string
  partition: number
  offset: string
  reason: DeadLetterReason
  error: string
  attempts: number
}

/** AssignmentEvent tells of a new assignment: what is now this consumer's, what was taken away. */
export interface AssignmentEvent {
  assigned: string[]
  revoked: string[]
}

/** ThrottledConsumerEvents are the events a ThrottledConsumer emits. */
export interface ThrottledConsumerEvents {
  'dead-letter': [DeadLetterEvent]
  commit: [{ offsets: { topic: string; partition: number; offset: number }[] }]
  assignment: [AssignmentEvent]
  /**
   * crash: kafkajs crashed; `restart` says whether consuming will resume (kafkajs restarts
   * by itself, or the consumer runs it again) or not (the consumer is stopping).
   */
  crash: [{ error: Error; restart: boolean }]
}

/** ThrottledConsumer is a running (or ready to run) throttled Kafka consumer. */
export interface ThrottledConsumer {
  /**
   * run connects, joins the group and starts consuming; it resolves once consuming. When it
   * cannot connect it rejects, and may be called again.
   */
  run(): Promise<void>
  /**
   * stop stops fetching, lets in-flight handlers finish within stopTimeoutMs (the rest is
   * given up and delivered again later), commits the watermarks and disconnects.
   */
  stop(): Promise<void>
  stats(): ThrottledConsumerStats
  on<E extends keyof ThrottledConsumerEvents>(
    event: E,
    listener: (...args: ThrottledConsumerEvents[E]) => void,
  ): ThrottledConsumer
}
