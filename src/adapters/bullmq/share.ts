import type { Logger } from 'pino'

/**
 * Instances says how many worker instances share each merchant's limit: a fixed number,
 * or `auto` to count the workers on the queue (BullMQ's getWorkersCount, which counts
 * Worker instances through CLIENT LIST).
 */
export type Instances = number | 'auto'

/** ShareSource says where the instance count in force came from. */
export type ShareSource = 'configured' | 'counted' | 'fallback'

/** InstanceShareOptions configure an InstanceShare. */
export interface InstanceShareOptions {
  instances: Instances
  /** fallbackInstances is used with `auto` before the first count and whenever counting fails. */
  fallbackInstances: number
  /** refreshMs is how often `auto` counts again, in ms. */
  refreshMs: number
  /** countWorkers counts the workers on the queue; it rejects when it cannot. */
  countWorkers: () => Promise<number>
  /** setShare makes the limiter enforce 1/instances of every rate. */
  setShare: (instances: number) => void
  logger: Logger
}

/**
 * InstanceShare keeps the limiter's share in step with the number of workers that share
 * each merchant's limit. With a fixed number it sets the share once. With `auto` it sets
 * the fallback at once, then counts every `refreshMs`; a count that fails (CLIENT LIST
 * refused, Redis unreachable) puts the fallback back in force and is logged once per
 * change of state.
 */
export class InstanceShare {
  private current: number
  private currentSource: ShareSource
  private timer: NodeJS.Timeout | undefined
  private refreshing: Promise<number> | undefined
  private failing = false
  private readonly log: Logger

  constructor(private readonly options: InstanceShareOptions) {
    checkInstances(options.instances, 'instances')
    checkInstances(options.fallbackInstances, 'instancesFallback')
    if (!(Number.isFinite(options.refreshMs) && options.refreshMs > 0)) {
      throw new TypeError(`instancesRefreshMs: expected a finite number above 0, got ${options.refreshMs}`)
    }
    this.log = options.logger.child({ component: 'bullmq-instance-share' })
    const configured = options.instances === 'auto'
    this.current = configured ? options.fallbackInstances : (options.instances as number)
    this.currentSource = configured ? 'fallback' : 'configured'
  }

  /** instances is the number of instances whose share is in force. */
  get instances(): number {
    return this.current
  }

  /** source says where `instances` came from. */
  get source(): ShareSource {
    return this.currentSource
  }

  /** start puts the share in force now and, with `auto`, counts at once and every refreshMs. */
  start(): void {
    this.options.setShare(this.current)
    if (this.options.instances !== 'auto' || this.timer !== undefined) return
    void this.refresh()
    this.timer = setInterval(() => void this.refresh(), this.options.refreshMs)
    this.timer.unref()
  }

  /** stop ends the periodic count. The share stays as it is. */
  stop(): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** refresh counts the workers once (with `auto`) and puts the result, or the fallback, in force. */
  refresh(): Promise<number> {
    if (this.options.instances !== 'auto') return Promise.resolve(this.current)
    this.refreshing ??= this.count().finally(() => {
      this.refreshing = undefined
    })
    return this.refreshing
  }

  private async count(): Promise<number> {
    let counted: number
    try {
      counted = await this.options.countWorkers()
    } catch (error) {
      if (!this.failing) {
        this.log.warn(
          { err: error, fallbackInstances: this.options.fallbackInstances },
          'cannot count workers; enforcing the fallback share',
        )
      }
      this.failing = true
      this.put(this.options.fallbackInstances, 'fallback')
      return this.current
    }
    if (this.failing) this.log.info('counting workers again')
    this.failing = false
    // This worker may not be listed yet while its connection is being named.
    this.put(Math.max(1, Math.floor(counted)), 'counted')
    return this.current
  }

  private put(instances: number, source: ShareSource): void {
    if (instances !== this.current) {
      this.log.info({ instances, previous: this.current, source }, 'instance share changed')
      this.options.setShare(instances)
    }
    this.current = instances
    this.currentSource = source
  }
}

function checkInstances(value: unknown, what: string): void {
  if (value === 'auto' && what === 'instances') return
  if (!(Number.isInteger(value) && (value as number) >= 1)) {
    throw new TypeError(
      `${what}: expected a whole number >= 1${what === 'instances' ? " or 'auto'" : ''}, got ${String(value)}`,
    )
  }
}
