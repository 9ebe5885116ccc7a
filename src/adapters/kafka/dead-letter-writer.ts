import type { Logger } from 'pino'
import type { DeadLetter, DeadLetterReason } from './dead-letter.js'
import type { LaneItem } from './dispatcher.js'
import type { LaneGroup } from './lanes.js'
import type { WakeQueue } from './wake-queue.js'

/** DeadLetterWriterOptions wire a DeadLetterWriter to its sink and its retry clock. */
export interface DeadLetterWriterOptions<I extends LaneItem> {
  /** write writes `item` to the dead-letter topic; a rejection is retried after a delay. */
  write: (item: I, failure: DeadLetter) => Promise<void>
  /** retryDelayMs gives the wait after failed write number `failures` (1-based), in ms. */
  retryDelayMs: (failures: number) => number
  wakes: WakeQueue
  /** written is told of each item written, unless its group was dropped meanwhile. */
  written: (item: I, group: LaneGroup<I>) => void
  /** settled is told after each write ends, written or failed (slots and idle waiters). */
  settled: () => void
  logger: Logger
}

/**
 * DeadLetterWriter writes items to the dead-letter topic, retrying a failed write after a
 * growing delay until it succeeds, its group is dropped or the writer is closed: a message
 * is only done once its dead letter is written, so none is lost to a broker hiccup.
 */
export class DeadLetterWriter<I extends LaneItem> {
  /** running counts writes in progress. */
  running = 0
  /** writeFailures counts failed writes (each retried). */
  writeFailures = 0
  readonly written: Record<DeadLetterReason, number> = {
    'invalid-key': 0,
    undecodable: 0,
    'handler-failed': 0,
    'permanent-failure': 0,
  }
  private closed = false

  constructor(private readonly options: DeadLetterWriterOptions<I>) {}

  /** close stops retries and new writes; writes in progress finish. */
  close(): void {
    this.closed = true
  }

  /** write writes `item` of `group`, then calls `then` (not when the group was dropped first). */
  write(group: LaneGroup<I>, item: I, failure: DeadLetter, then: () => void, failures = 0): void {
    if (group.dropped || this.closed) return
    this.running++
    let result: Promise<void>
    try {
      result = this.options.write(item, failure)
    } catch (error) {
      result = Promise.reject(error)
    }
    result.then(
      () => {
        this.running--
        if (!group.dropped) {
          this.written[failure.reason]++
          this.options.written(item, group)
          then()
        }
        this.options.settled()
      },
      (error: unknown) => {
        this.running--
        this.writeFailures++
        this.options.logger.warn({ err: error, reason: failure.reason }, 'dead-letter write failed')
        this.options.wakes.after(this.options.retryDelayMs(failures + 1), () =>
          this.write(group, item, failure, then, failures + 1),
        )
        this.options.settled()
      },
    )
  }
}
