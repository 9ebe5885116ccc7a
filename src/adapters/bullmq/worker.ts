import { type Processor, Queue, Worker, type WorkerOptions } from 'bullmq'
import { pino } from 'pino'
import type { KeyedLimiter } from '../../limiter/index.js'
import { queueOf } from './moves.js'
import { createThrottledProcessor, type ThrottledProcessor, type ThrottleOptions } from './processor.js'
import { InstanceShare, type Instances, type ShareSource } from './share.js'
import type { ThrottleStats } from './stats.js'
import type { MerchantWaiting } from './waiting.js'

/** WorkerLimiter is the part of KeyedLimiter a throttled worker uses. */
export type WorkerLimiter = Pick<KeyedLimiter, 'reserve' | 'penalize' | 'setShare'>

/** DEFAULT_INSTANCES_REFRESH_MS is how often `instances: 'auto'` counts the workers. */
export const DEFAULT_INSTANCES_REFRESH_MS = 10_000

/**
 * ThrottledWorkerOptions are BullMQ's WorkerOptions (without its queue-wide `limiter`)
 * and the throttle's options.
 */
export interface ThrottledWorkerOptions<D = unknown, R = unknown, N extends string = string>
  extends Omit<WorkerOptions, 'limiter'>,
    Omit<ThrottleOptions<D, R, N>, 'limiter' | 'concurrency'> {
  /** limiter is this process's KeyedLimiter. Its share is set from `instances`. */
  limiter: WorkerLimiter
  /**
   * instances is the number of worker instances (processes) that share each merchant's
   * limit; this worker's limiter enforces 1/instances of every rate. `auto` counts the
   * Worker instances on the queue every `instancesRefreshMs`. Default 1.
   */
  instances?: Instances
  /** instancesFallback is used with `auto` until the first count and when counting fails. Default 1. */
  instancesFallback?: number
  /** instancesRefreshMs is how often `auto` counts, in ms. Default 10 000. */
  instancesRefreshMs?: number
}

/**
 * ThrottledWorker is a BullMQ Worker whose processor throttles each merchant (see
 * createThrottledProcessor) and whose limiter enforces this instance's share.
 *
 * Guarantees, with N instances sharing a limit: each process enforces rate/N and
 * burst/N, so when the count is right the merchant's aggregate never exceeds its limit
 * (times 1 + the clocks' relative skew, for jobs run on reservations made on another
 * host). Not guaranteed: the aggregate reaching the limit. Jobs spread unevenly over the
 * processes leave some shares unused; a process that dies leaves its share unused until
 * `auto` counts again (or for good with a fixed number); with `auto`, a process that
 * starts is not counted by the others until their next refresh, so for up to
 * `instancesRefreshMs` the aggregate can reach (N+1)/N of the limit. `auto` counts
 * Worker instances on the queue, throttled or not, several per process included.
 * The share applies to the whole limiter: give each queue with its own count its own limiter.
 */
export class ThrottledWorker<D = unknown, R = unknown, N extends string = string> extends Worker<D, R, N> {
  private readonly throttled: ThrottledProcessor<D, R, N>
  private readonly share: InstanceShare
  private readonly countingQueue: Queue | undefined

  constructor(queueName: string, handler: Processor<D, R, N>, options: ThrottledWorkerOptions<D, R, N>) {
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`createThrottledWorker: expected an options object, got ${String(options)}`)
    }
    const {
      limiter,
      keyOf,
      limitKeys,
      cost,
      leadMs,
      clockSkewToleranceMs,
      wallClock,
      logger,
      onEvent,
      inFlight,
      parkMs,
      horizonMs,
      lateToleranceMs,
      safetyNetMs,
      reservationKey,
      timers,
      breakers,
      isEndpointFailure,
      instances,
      instancesFallback,
      instancesRefreshMs,
      ...workerOptions
    } = options
    const log = (logger ?? pino({ level: 'silent' })).child({ queue: queueName })
    const throttled = createThrottledProcessor(handler, {
      limiter,
      keyOf,
      limitKeys,
      cost,
      leadMs,
      clockSkewToleranceMs,
      wallClock,
      logger: log,
      onEvent,
      inFlight,
      parkMs,
      horizonMs,
      lateToleranceMs,
      safetyNetMs,
      reservationKey,
      timers,
      breakers,
      isEndpointFailure,
      concurrency: workerOptions.concurrency ?? 1,
      // Called per job, after the share below is made.
      sharedOrder: () => share.instances > 1,
    })
    if (typeof limiter.setShare !== 'function') {
      throw new TypeError(
        `createThrottledWorker: expected limiter to be a KeyedLimiter, got ${String(limiter)}`,
      )
    }
    const countingQueue =
      instances === 'auto'
        ? new Queue(queueName, { connection: workerOptions.connection, prefix: workerOptions.prefix })
        : undefined
    countingQueue?.on('error', (error) => log.warn({ err: error }, 'worker-counting connection error'))
    const share = new InstanceShare({
      instances: instances ?? 1,
      fallbackInstances: instancesFallback ?? 1,
      refreshMs: instancesRefreshMs ?? DEFAULT_INSTANCES_REFRESH_MS,
      countWorkers: () => countWorkers(countingQueue!),
      setShare: (n) => limiter.setShare(n),
      logger: log,
    })
    // The share is in force before the worker fetches: run() awaits the connection first.
    super(queueName, throttled, workerOptions)
    this.throttled = throttled
    this.share = share
    this.countingQueue = countingQueue
    share.start()
    // Backlogs left in Redis by processes that are gone are promoted from once connected.
    this.waitUntilReady()
      .then(() => throttled.attach(queueOf(this)))
      .catch((error) => log.warn({ err: error }, 'cannot read the backlogs left in Redis'))
  }

  /**
   * throttleStats counts the throttle's outcomes since the worker was created, and gives
   * each merchant's jobs waiting (delayed on a reservation by this process + parked in
   * its backlog, a count of jobs) with the age of the oldest.
   */
  throttleStats(): ThrottleStats & { waiting: Record<string, MerchantWaiting> } {
    return { ...this.throttled.stats(), waiting: this.throttled.waiting() }
  }

  /**
   * ratesChanged tells the worker that rates changed (every rate, or those of
   * `merchantKeys`), so that merchants with parked jobs are promoted from at the new rate
   * at once. Call it after each change applied to the limiter (a control message).
   */
  ratesChanged(merchantKeys?: Iterable<string>): void {
    this.throttled.ratesChanged(merchantKeys)
  }

  /** instanceShare is the number of instances whose share this worker's limiter enforces, and its source. */
  instanceShare(): { instances: number; source: ShareSource } {
    return { instances: this.share.instances, source: this.share.source }
  }

  /**
   * close stops counting workers, then closes as a BullMQ Worker does: it takes no new
   * job and waits for the jobs in flight, including those waiting in the process for
   * their reserved time (at most leadMs + clockSkewToleranceMs), unless `force`.
   */
  override async close(force = false): Promise<void> {
    this.share.stop()
    this.throttled.close()
    await super.close(force)
    await this.countingQueue?.close()
  }
}

/**
 * createThrottledWorker starts a BullMQ Worker on `queueName` that runs `handler` at each
 * merchant's rate. See ThrottledWorker for what several instances guarantee.
 */
export function createThrottledWorker<D = unknown, R = unknown, N extends string = string>(
  queueName: string,
  handler: Processor<D, R, N>,
  options: ThrottledWorkerOptions<D, R, N>,
): ThrottledWorker<D, R, N> {
  return new ThrottledWorker(queueName, handler, options)
}

/** countWorkers counts the Worker instances on `queue`'s queue, and rejects when Redis will not list its clients. */
async function countWorkers(queue: Queue): Promise<number> {
  const workers = await queue.getWorkers()
  // Where CLIENT is an unknown command, BullMQ answers with one made-up entry (no
  // rawname) instead of failing, which would read as one worker.
  if (workers.some((worker) => worker.rawname === undefined)) {
    throw new Error('CLIENT LIST is not available on this Redis')
  }
  return workers.length
}
