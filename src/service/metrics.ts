import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import {
  type BreakerChange,
  type CircuitBreakers,
  type InFlightTable,
  type KeyedLimiter,
  ratePerSec,
} from '../limiter/index.js'
import type { BacklogTotals, BindingReason } from './status.js'

/** SlowMerchantGuards are the in-flight table and breakers whose state the metrics read at each scrape. */
export interface SlowMerchantGuards {
  inFlight: Pick<InFlightTable, 'size' | 'count'>
  breakers: Pick<CircuitBreakers, 'stats' | 'view'>
}

/** BREAKER_STATE_VALUES are the values of `mt_breaker_state`. */
export const BREAKER_STATE_VALUES = { closed: 0, 'half-open': 1, open: 2 } as const

/** OTHER_MERCHANTS is the label every merchant outside `merchantLabels` is counted under. */
export const OTHER_MERCHANTS = 'other'

/** MAX_PARENT_LABELS bounds the parent keys that get their own labels; the rest are counted in `mt_parents` only. */
export const MAX_PARENT_LABELS = 100

/** BINDING_REASONS are the values of `mt_waiting_merchants`'s `binds` label. */
export const BINDING_REASONS: readonly BindingReason[] = [
  'own',
  'parent',
  'window',
  'retry-after',
  'parent-share',
]

/** LayerReadings are what the layered-key metrics read at each scrape. */
export interface LayerReadings {
  limiter: Pick<KeyedLimiter, 'parents' | 'childrenOf' | 'rateOf' | 'rates'>
  /** bindings counts the waiting merchants by the limit that holds them (see bindingOf). */
  bindings(): Partial<Record<BindingReason, number>>
}

/** BacklogReader reads one source's standing-backlog totals, at each scrape. */
export interface BacklogReader {
  source: string
  read: () => BacklogTotals
}

/** BACKLOG_GAUGES are the backlog totals exported as gauges, by metric name. */
const BACKLOG_GAUGES = {
  mt_parked: [
    'parked',
    'Jobs in merchant backlogs (BullMQ) or parked messages not yet handled, read back ones included (Kafka, every merchant).',
  ],
  mt_buffered: [
    'buffered',
    'Jobs delayed on a reservation by this worker (BullMQ) or messages held (Kafka, read back parked ones included).',
  ],
  mt_buffered_bytes: [
    'bufferedBytes',
    'Bytes of the messages held, as counted against maxBufferedBytes (Kafka).',
  ],
  mt_parked_merchants: ['parkedMerchants', 'Merchants with jobs or messages parked now.'],
} as const satisfies Record<string, readonly [keyof BacklogTotals, string]>

/** BACKLOG_COUNTERS are the backlog totals exported as counters, by metric name. */
const BACKLOG_COUNTERS = {
  mt_park_transactions_total: ['parkTransactions', 'Parking moves committed (Kafka transactions).'],
  mt_park_failures_total: ['parkFailures', 'Parking moves that failed and were tried again (Kafka).'],
  mt_late_grants_total: [
    'lateGrants',
    'Grants that came later than the late tolerance and were charged again.',
  ],
} as const satisfies Record<string, readonly [keyof BacklogTotals, string]>

/** DepthReading is one queue's job counts or one partition's lag, read when scraped. */
export type DepthReader = () => Promise<Array<{ source: string; state: string; value: number }>>

/**
 * ServiceMetrics are the worker's Prometheus metrics, in a registry of their own, with
 * prom-client's process metrics (CPU, memory, event loop lag, GC; `process_` and
 * `nodejs_`). Merchant labels are given only to the configured `merchantLabels`; every
 * other merchant is counted as `other`, so cardinality stays bounded whatever the traffic.
 */
export class ServiceMetrics {
  readonly registry = new Registry()
  private readonly labelled: ReadonlySet<string>
  private readonly decisions: Counter<'source' | 'outcome' | 'merchant'>
  private readonly delaySeconds: Histogram<'source'>
  private readonly handlerOutcomes: Counter<'source' | 'outcome' | 'merchant'>
  private readonly controlMessages: Counter<'result' | 'reason'>
  private readonly breakerTransitions: Counter<'from' | 'to' | 'merchant'>
  private readonly depthReaders: DepthReader[] = []
  private readonly backlogReaders: BacklogReader[] = []

  constructor(limiter: KeyedLimiter, merchantLabels: readonly string[]) {
    this.labelled = new Set(merchantLabels)
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry })
    this.decisions = new Counter({
      name: 'mt_decisions_total',
      help: 'Throttle decisions on jobs (BullMQ outcomes): granted now, delayed to a reservation, run on a carried reservation, deferred, backlogged, promoted from a backlog, late and charged again, parked.',
      labelNames: ['source', 'outcome', 'merchant'],
      registers,
    })
    this.delaySeconds = new Histogram({
      name: 'mt_delay_seconds',
      help: 'Delay the limiter imposed on a job, seconds.',
      labelNames: ['source'],
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300],
      registers,
    })
    this.handlerOutcomes = new Counter({
      name: 'mt_handler_outcomes_total',
      help: 'Handler outcomes by class: delivered, retry-later, retryable, permanent, dead-lettered.',
      labelNames: ['source', 'outcome', 'merchant'],
      registers,
    })
    this.controlMessages = new Counter({
      name: 'mt_control_messages_total',
      help: 'Control messages by result (applied, stale, rejected) and rejection reason.',
      labelNames: ['result', 'reason'],
      registers,
    })
    new Gauge({
      name: 'mt_keys_held',
      help: 'Merchant keys held by the limiter.',
      registers,
      collect() {
        this.set(limiter.stats().keys)
      },
    })
    mirroredCounter(
      this.registry,
      'mt_evictions_total',
      'Full buckets evicted to make room.',
      () => limiter.stats().evictions,
    )
    mirroredCounter(
      this.registry,
      'mt_table_full_total',
      'New keys deferred because the key table was full.',
      () => limiter.stats().tableFull,
    )
    mirroredCounter(
      this.registry,
      'mt_penalties_total',
      'Rate penalties after 429 or 503 from the far side.',
      () => limiter.stats().penalties,
    )
    mirroredCounter(
      this.registry,
      'mt_clock_skew_tolerated_total',
      'Backward clock steps absorbed silently.',
      () => limiter.stats().skewTolerated,
    )
    mirroredCounter(
      this.registry,
      'mt_clock_skew_rebased_total',
      'Backward clock steps beyond the tolerance, rebased.',
      () => limiter.stats().skewRebased,
    )
    mirroredCounter(
      this.registry,
      'mt_clock_skew_corrected_total',
      'Forward jumps after a rebase taken as the clock correcting itself: no time counted for them.',
      () => limiter.stats().skewCorrected,
    )
    mirroredCounter(
      this.registry,
      'mt_penalties_dropped_total',
      'Penalties for keys the table could hold no slot for: rate decrease dropped, Retry-After kept.',
      () => limiter.stats().penaltiesDropped,
    )
    const labelled = this.labelled
    new Gauge({
      name: 'mt_rate_limit_per_second',
      help: 'Rate in force, per second: the default and each labelled merchant.',
      labelNames: ['merchant'],
      registers,
      collect() {
        this.reset()
        this.set({ merchant: '*' }, ratePerSec(limiter.rates().default))
        for (const merchant of labelled) this.set({ merchant }, ratePerSec(limiter.rateOf(merchant)))
      },
    })
    this.breakerTransitions = new Counter({
      name: 'mt_breaker_transitions_total',
      help: 'Circuit breaker state changes (closed, open, half-open) by merchant label.',
      labelNames: ['from', 'to', 'merchant'],
      registers,
    })
    const readers = this.depthReaders
    new Gauge({
      name: 'mt_backlog',
      help: 'Queue depth by job state (BullMQ) or consumer lag in messages (Kafka).',
      labelNames: ['source', 'state'],
      registers,
      async collect() {
        this.reset()
        for (const read of readers) {
          for (const { source, state, value } of await read()) this.set({ source, state }, value)
        }
      },
    })
    this.watchBacklogs()
  }

  /**
   * watchBacklogs exports the sources' standing-backlog totals (addBacklogReader), read at
   * each scrape, one series per source.
   */
  private watchBacklogs(): void {
    const readers = this.backlogReaders
    const registers = [this.registry]
    const readAll = () => readers.map(({ source, read }) => ({ source, totals: read() }))
    for (const [name, [field, help]] of Object.entries(BACKLOG_GAUGES)) {
      new Gauge({
        name,
        help,
        labelNames: ['source'],
        registers,
        collect() {
          this.reset()
          for (const { source, totals } of readAll()) this.set({ source }, totals[field])
        },
      })
    }
    for (const [name, [field, help]] of Object.entries(BACKLOG_COUNTERS)) {
      new Counter({
        name,
        help,
        labelNames: ['source'],
        registers,
        collect() {
          this.reset()
          for (const { source, totals } of readAll()) this.inc({ source }, totals[field])
        },
      })
    }
  }

  /**
   * watchSlowMerchants exports the in-flight counts and the circuit breakers' states, read
   * at each scrape. Apart from the constructor because the breakers report their changes
   * to breakerChange, so they are made after the metrics.
   */
  watchSlowMerchants(guards: SlowMerchantGuards): void {
    const { inFlight, breakers } = guards
    const labelled = this.labelled
    new Gauge({
      name: 'mt_in_flight',
      help: 'Jobs in flight: in total (merchant "*") and for each labelled merchant.',
      labelNames: ['merchant'],
      registers: [this.registry],
      collect() {
        this.reset()
        this.set({ merchant: '*' }, inFlight.size)
        for (const merchant of labelled) this.set({ merchant }, inFlight.count(merchant))
      },
    })
    new Gauge({
      name: 'mt_breaker_state',
      help: 'Circuit breaker state of each labelled merchant: 0 closed, 1 half-open, 2 open.',
      labelNames: ['merchant'],
      registers: [this.registry],
      collect() {
        this.reset()
        for (const merchant of labelled)
          this.set({ merchant }, BREAKER_STATE_VALUES[breakers.view(merchant).state])
      },
    })
    new Gauge({
      name: 'mt_breakers',
      help: 'Merchants whose circuit breaker is open or half-open, by state.',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        const stats = breakers.stats()
        this.set({ state: 'open' }, stats.open)
        this.set({ state: 'half-open' }, stats.halfOpen)
      },
    })
    mirroredCounter(
      this.registry,
      'mt_breaker_refused_total',
      "Jobs delayed without an attempt because their merchant's breaker was open.",
      () => breakers.stats().refused,
    )
  }

  /**
   * watchLayers exports the parent keys (at most MAX_PARENT_LABELS, labelled by key): each
   * one's own rate, its grants per second and its children backlogged or not; each child's
   * grants and weight, labelled only when the child key is in `merchantLabels` (the rest
   * summed under `other`); and the waiting merchants by the limit that binds them.
   */
  watchLayers(readings: LayerReadings): void {
    const labelled = this.labelled
    const registers = [this.registry]
    const parentsOf = () => readings.limiter.parents()
    new Gauge({
      name: 'mt_parents',
      help: 'Parent keys the limiter tracks (layered keys), labelled or not.',
      registers,
      collect() {
        this.set(parentsOf().length)
      },
    })
    new Gauge({
      name: 'mt_parent_rate_limit_per_second',
      help: "A parent key's own rate in force, per second (parents without one do not limit and are left out).",
      labelNames: ['parent'],
      registers,
      collect() {
        this.reset()
        // a parent without a rate of its own does not limit: its rateOf would be the default's
        const own = readings.limiter.rates().overrides
        for (const parent of parentsOf().slice(0, MAX_PARENT_LABELS)) {
          if (Object.hasOwn(own, parent)) this.set({ parent }, ratePerSec(readings.limiter.rateOf(parent)))
        }
      },
    })
    new Gauge({
      name: 'mt_parent_children',
      help: "A parent's children the limiter tracks, by state: backlogged or idle.",
      labelNames: ['parent', 'state'],
      registers,
      collect() {
        this.reset()
        for (const parent of parentsOf().slice(0, MAX_PARENT_LABELS)) {
          const children = readings.limiter.childrenOf(parent)
          const backlogged = children.filter((child) => child.backlogged).length
          this.set({ parent, state: 'backlogged' }, backlogged)
          this.set({ parent, state: 'idle' }, children.length - backlogged)
        }
      },
    })
    new Gauge({
      name: 'mt_child_granted_per_second',
      help: 'Grants per second of a parent\'s children over the limiter\'s share window: each labelled child, the rest as child "other".',
      labelNames: ['parent', 'child'],
      registers,
      collect() {
        this.reset()
        for (const parent of parentsOf().slice(0, MAX_PARENT_LABELS)) {
          let other = 0
          for (const child of readings.limiter.childrenOf(parent)) {
            if (labelled.has(child.key)) this.set({ parent, child: child.key }, child.grantedPerSec)
            else other += child.grantedPerSec
          }
          this.set({ parent, child: OTHER_MERCHANTS }, other)
        }
      },
    })
    new Gauge({
      name: 'mt_child_weight',
      help: 'Weight of each labelled child within its parent (its share beside its backlogged siblings).',
      labelNames: ['parent', 'child'],
      registers,
      collect() {
        this.reset()
        for (const parent of parentsOf().slice(0, MAX_PARENT_LABELS)) {
          for (const child of readings.limiter.childrenOf(parent)) {
            if (labelled.has(child.key)) this.set({ parent, child: child.key }, child.weight)
          }
        }
      },
    })
    new Gauge({
      name: 'mt_waiting_merchants',
      help: 'Merchants with jobs waiting, by the limit that holds them: own rate, parent, window (a longer one), retry-after, parent-share.',
      labelNames: ['binds'],
      registers,
      collect() {
        const counts = readings.bindings()
        for (const binds of BINDING_REASONS) this.set({ binds }, counts[binds] ?? 0)
      },
    })
  }

  /** merchantLabel is `merchantKey` when it is configured for labels, else `other`. */
  merchantLabel(merchantKey: string): string {
    return this.labelled.has(merchantKey) ? merchantKey : OTHER_MERCHANTS
  }

  decision(source: string, outcome: string, merchantKey: string, delayMs = 0): void {
    this.decisions.inc({ source, outcome, merchant: this.merchantLabel(merchantKey) })
    if (delayMs > 0) this.delaySeconds.observe({ source }, delayMs / 1_000)
  }

  handlerOutcome(source: string, outcome: string, merchantKey: string): void {
    this.handlerOutcomes.inc({ source, outcome, merchant: this.merchantLabel(merchantKey) })
  }

  /** breakerChange counts one circuit breaker state change. */
  breakerChange(change: BreakerChange): void {
    this.breakerTransitions.inc({
      from: change.from,
      to: change.to,
      merchant: this.merchantLabel(change.key),
    })
  }

  /** controlMessage counts one control message; only a rejection has a `reason` label. */
  controlMessage(result: 'applied' | 'stale' | 'rejected', reason?: string): void {
    this.controlMessages.inc(reason === undefined ? { result } : { result, reason })
  }

  /** addBacklogReader registers a source's backlog totals, read at each scrape. */
  addBacklogReader(source: string, read: () => BacklogTotals): void {
    this.backlogReaders.push({ source, read })
  }

  /** addDepthReader registers a function read at each scrape for queue depth or lag. */
  addDepthReader(read: DepthReader): void {
    this.depthReaders.push(read)
  }
}

/** mirroredCounter exports a counter the limiter keeps itself, read at each scrape. */
function mirroredCounter(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset()
      this.inc(read())
    },
  })
}
