import type { ControlStats, ControlTable } from '../control/index.js'
import {
  type BreakerState,
  type CircuitBreakers,
  formatRate,
  type InFlightTable,
  type KeyedLimiter,
  parseRate,
  ratePerSec,
  windowsOf,
} from '../limiter/index.js'
import type { MerchantActivity } from './activity.js'
import type { Readiness } from './http.js'

/** StatusSnapshot is what /status.json serves; the status page draws it. */
export interface StatusSnapshot {
  generatedAt: string
  uptimeS: number
  readiness: Readiness
  limiter: {
    defaultRate: string
    keys: number
    maxKeys: number
    evictions: number
    tableFull: number
    skewTolerated: number
    skewRebased: number
    skewCorrected: number
    penalties: number
    penaltiesDropped: number
  }
  merchants: MerchantStatus[]
  /** parents lists the parent keys (layered keys: a PSP account above its merchants) with their children. */
  parents: ParentStatus[]
  control: {
    source: 'kafka' | 'file'
    caughtUp: boolean
    applied: number
    stale: number
    rejected: number
    recentChanges: Array<{ atIso: string; description: string }>
    recentRejections: Array<{ atIso: string; reason: string; error: string }>
  }
  sources: SourceRow[]
  /** slow is the in-flight caps and circuit breakers over every merchant. */
  slow: {
    defaultMaxInFlight: number | null
    inFlight: number
    breakersOpen: number
    breakersHalfOpen: number
    /** breakers lists the merchants whose breaker is not closed. */
    breakers: Array<{ merchantKey: string; state: BreakerState; openings: number; retryInMs: number }>
  }
}

/**
 * ParentStatus is one parent key: its own rate in force (null: it has none, so it does not
 * limit), and its children with their weights and use of it, busiest first.
 */
export interface ParentStatus {
  key: string
  rate: string | null
  /** limitPerSec is the parent's rate per second, rounded for people; null without a rate of its own. */
  limitPerSec: number | null
  /** grantedPerSec is what its children were granted, summed, per second over the limiter's share window. */
  grantedPerSec: number
  /** childCount and backloggedChildren count every child the limiter tracks, listed or not. */
  childCount: number
  backloggedChildren: number
  /** children: backlogged ones first, then by grantedPerSec; at most CHILD_LIST_LIMIT. */
  children: ChildStatus[]
}

/** ChildStatus is one child of a parent: its weight, whether it is backlogged, and its grants per second. */
export interface ChildStatus {
  key: string
  weight: number
  backlogged: boolean
  grantedPerSec: number
}

/** BindingReason says which limit holds a waiting merchant's next job. */
export type BindingReason = 'own' | 'parent' | 'window' | 'retry-after' | 'parent-share'

/**
 * BindingStatus is the limit that binds for a waiting merchant (limiter.explain of its limit
 * keys): its own rate, a parent's, a longer window of either (the daily one), a Retry-After
 * from the far side, or its share of a parent its siblings also wait on.
 */
export interface BindingStatus {
  binds: BindingReason
  /** key is the limit key whose limit binds. */
  key: string
  /** waitMs is how long until one more job could be granted, ms. */
  waitMs: number
  /** window is the binding window, when a longer window binds (`50000/day`). */
  window?: string
}

/** MerchantStatus is one merchant's row: its recent work (failures included) and its limits. */
export type MerchantStatus = MerchantActivity & {
  /** limitKeys are the keys its jobs are limited by, outermost first; null: the merchant key alone. */
  limitKeys: readonly string[] | null
  /** binding is the limit that holds it, while it has jobs waiting; null otherwise or when none binds. */
  binding: BindingStatus | null
  rate: string
  /** limitPerSec is the rate in force per second, rounded for people (roundForPeople). */
  limitPerSec: number
  tokens: number | null
  /** waiting: the merchant's jobs or messages waiting in the sources, parked ones included (a count of jobs, not tokens). */
  waiting: number
  /** parked: those of them in a standing backlog (BullMQ backlog in Redis, Kafka parking topic). */
  parked: number
  /** oldestWaitingAgeMs: how long ago the oldest waiting one was added to its queue or topic, ms; null when none waits. */
  oldestWaitingAgeMs: number | null
  /** reservedAhead: tokens reserved ahead of time and not yet run (the bucket's debt). */
  reservedAhead: number
  capacity: number | null
  penaltyFactor: number
  /** maxInFlight is the merchant's in-flight cap; null: no cap. */
  maxInFlight: number | null
  /** inFlight is how many of the merchant's jobs this worker has in flight. */
  inFlight: number
  /** breaker is the merchant's circuit breaker: its state, failures in the window, openings, ms until a probe. */
  breaker: { state: BreakerState; recentFailures: number; openings: number; retryInMs: number }
  /** lastChange is the change that set the rate in force (of its innermost limit key): its own (`scope: 'merchant'`) or the default's. */
  lastChange: {
    description: string
    version: number
    atIso: string
    scope: 'merchant' | 'default'
  } | null
}

/** SourceRow is one source in a snapshot: its name and its standing-backlog totals. */
export type SourceRow = Omit<SourceStatus, 'backlog'> & { backlog: BacklogTotals }

/** SourceStatus names one source the worker consumes, and reads its waiting work. */
export interface SourceStatus {
  kind: 'bullmq' | 'kafka'
  name: string
  concurrency: number
  /** backlog reads what waits in the source now (see SourceBacklog). */
  backlog(): SourceBacklog
}

/** MerchantWaitingJobs is one merchant's jobs or messages waiting in one source. */
export interface MerchantWaitingJobs {
  merchantKey: string
  /** jobs: every job or message of the merchant waiting, parked ones included (a count, not tokens). */
  jobs: number
  /** parked: those in the merchant's backlog (BullMQ) or the parking topic (Kafka). */
  parked: number
  /** oldestAgeMs: how long ago the oldest of them was added to the queue or topic, ms. */
  oldestAgeMs: number
  /** limitKeys: the keys its latest job is limited by, outermost first (absent: the merchant key alone). */
  limitKeys?: readonly string[]
}

/**
 * SourceBacklog is a source's waiting work: per merchant (BullMQ: every merchant with
 * jobs delayed or parked; Kafka: the BACKLOG_MERCHANTS with most), and its totals.
 */
export interface SourceBacklog {
  merchants: readonly MerchantWaitingJobs[]
  totals: BacklogTotals
}

/** BacklogTotals are a source's standing-backlog figures, for /status.json and the metrics. */
export interface BacklogTotals {
  /** parked: jobs in the merchants' backlogs (BullMQ), parked messages not yet handled, read back ones included (Kafka, every merchant). */
  parked: number
  /** buffered: jobs delayed on a reservation by this process (BullMQ), messages held (Kafka: read back parked ones included, so not to add to parked). */
  buffered: number
  /** bufferedBytes: what the held messages count against maxBufferedBytes (Kafka; 0 on BullMQ). */
  bufferedBytes: number
  /** parkedMerchants: merchants with jobs or messages parked now. */
  parkedMerchants: number
  /** parkTransactions: parking moves committed (Kafka transactions; 0 on BullMQ), since start. */
  parkTransactions: number
  /** parkFailures: parking moves that failed and were tried again (Kafka), since start. */
  parkFailures: number
  /** lateGrants: grants that came too late and were charged again, since start. */
  lateGrants: number
}

/**
 * StatusParts are the readings a snapshot is made of. buildStatus reads only these, so
 * a test can hand it any state.
 */
export interface StatusParts {
  /** nowMs is the wall clock at the snapshot, ms since the epoch. */
  nowMs: number
  startedAtMs: number
  readiness: Readiness
  limiter: Pick<KeyedLimiter, 'stats' | 'inspect' | 'rateOf' | 'rates' | 'explain' | 'parents' | 'childrenOf'>
  inFlight: Pick<InFlightTable, 'capOf' | 'count' | 'size' | 'defaultCapValue'>
  breakers: Pick<CircuitBreakers, 'view' | 'stats' | 'notClosed'>
  /** activity is the tracked merchants, busiest first (ActivityTracker.snapshot). */
  activity: readonly MerchantActivity[]
  control: {
    source: 'kafka' | 'file'
    caughtUp: boolean
    stats: Pick<ControlStats, 'applied' | 'stale' | 'rejected'>
    table: ControlTable
    /** recentChanges and recentRejections are oldest first, as recorded. */
    recentChanges: readonly StatusSnapshot['control']['recentChanges'][number][]
    recentRejections: readonly StatusSnapshot['control']['recentRejections'][number][]
  }
  sources: readonly SourceStatus[]
}

/** STATUS_LIST_LIMIT bounds the merchants, parents and open breakers listed. */
export const STATUS_LIST_LIMIT = 100

/** CHILD_LIST_LIMIT bounds the children listed under one parent. */
export const CHILD_LIST_LIMIT = 20

/** buildStatus assembles /status.json from its parts; events are listed newest first. */
export function buildStatus(parts: StatusParts): StatusSnapshot {
  const stats = parts.limiter.stats()
  const backlogs = parts.sources.map((source) => source.backlog())
  const breakerStats = parts.breakers.stats()
  return {
    generatedAt: new Date(parts.nowMs).toISOString(),
    uptimeS: Math.round((parts.nowMs - parts.startedAtMs) / 1_000),
    readiness: parts.readiness,
    limiter: {
      defaultRate: formatRate(parts.limiter.rates().default),
      keys: stats.keys,
      maxKeys: stats.maxKeys,
      evictions: stats.evictions,
      tableFull: stats.tableFull,
      skewTolerated: stats.skewTolerated,
      skewRebased: stats.skewRebased,
      skewCorrected: stats.skewCorrected,
      penalties: stats.penalties,
      penaltiesDropped: stats.penaltiesDropped,
    },
    merchants: merchantRows(parts, waitingByMerchant(backlogs)),
    parents: parentRows(parts),
    control: {
      source: parts.control.source,
      caughtUp: parts.control.caughtUp,
      applied: parts.control.stats.applied,
      stale: parts.control.stats.stale,
      rejected: parts.control.stats.rejected,
      recentChanges: [...parts.control.recentChanges].reverse(),
      recentRejections: [...parts.control.recentRejections].reverse(),
    },
    sources: parts.sources.map(({ kind, name, concurrency }, i) => ({
      kind,
      name,
      concurrency,
      backlog: { ...backlogs[i]!.totals },
    })),
    slow: {
      defaultMaxInFlight: finiteOrNull(parts.inFlight.defaultCapValue),
      inFlight: parts.inFlight.size,
      breakersOpen: breakerStats.open,
      breakersHalfOpen: breakerStats.halfOpen,
      breakers: parts.breakers
        .notClosed()
        .slice(0, STATUS_LIST_LIMIT)
        .map((row) => ({
          merchantKey: row.key,
          state: row.state,
          openings: row.openings,
          retryInMs: row.retryInMs,
        })),
    },
  }
}

/** MerchantWaitingSum is one merchant's waiting jobs summed over the sources, with its latest limit keys. */
type MerchantWaitingSum = Pick<MerchantStatus, 'waiting' | 'parked'> & {
  oldestAgeMs: number
  limitKeys?: readonly string[]
}

/** waitingByMerchant sums each merchant's waiting jobs over the sources; the oldest is the oldest of any. */
export function waitingByMerchant(backlogs: readonly SourceBacklog[]): Map<string, MerchantWaitingSum> {
  const sums = new Map<string, MerchantWaitingSum>()
  for (const backlog of backlogs) {
    for (const row of backlog.merchants) {
      if (row.jobs <= 0) continue
      const sum = sums.get(row.merchantKey)
      if (sum === undefined) {
        sums.set(row.merchantKey, {
          waiting: row.jobs,
          parked: row.parked,
          oldestAgeMs: row.oldestAgeMs,
          ...(row.limitKeys === undefined ? {} : { limitKeys: row.limitKeys }),
        })
      } else {
        sum.waiting += row.jobs
        sum.parked += row.parked
        sum.oldestAgeMs = Math.max(sum.oldestAgeMs, row.oldestAgeMs)
        sum.limitKeys ??= row.limitKeys
      }
    }
  }
  return sums
}

function merchantRows(parts: StatusParts, waiting: Map<string, MerchantWaitingSum>): MerchantStatus[] {
  const table = parts.control.table
  const ownChange = new Map(table.overrides.map((override) => [override.merchant, override]))
  return parts.activity.slice(0, STATUS_LIST_LIMIT).map((row) => {
    const waits = waiting.get(row.merchantKey)
    // with key templates the merchant's own limit is its innermost key, not the merchant key
    const limitKey = waits?.limitKeys?.at(-1) ?? row.merchantKey
    return merchantStatus(row, parts, limitKey, ownChange.get(limitKey), waits)
  })
}

function merchantStatus(
  row: MerchantActivity,
  parts: StatusParts,
  limitKey: string,
  own: ControlTable['overrides'][number] | undefined,
  waiting: MerchantWaitingSum | undefined,
): MerchantStatus {
  const { limiter, inFlight, breakers } = parts
  const inspection = limiter.inspect(limitKey)
  const rate = inspection?.rate ?? limiter.rateOf(limitKey)
  const change = own ?? parts.control.table.default
  const limitKeys = waiting?.limitKeys ?? null
  return {
    ...row,
    limitKeys,
    binding: waiting === undefined ? null : bindingOf(limiter, limitKeys ?? [row.merchantKey]),
    rate: formatRate(rate),
    limitPerSec: roundForPeople(ratePerSec(rate)),
    tokens: inspection === undefined ? null : roundForPeople(inspection.tokens),
    waiting: waiting?.waiting ?? 0,
    parked: waiting?.parked ?? 0,
    oldestWaitingAgeMs: waiting === undefined ? null : Math.round(waiting.oldestAgeMs),
    reservedAhead: inspection === undefined ? 0 : Math.max(0, Math.ceil(-inspection.tokens - 1e-9)),
    capacity: inspection === undefined ? null : roundForPeople(inspection.capacity),
    penaltyFactor: roundForPeople(inspection?.penaltyFactor ?? 1),
    maxInFlight: finiteOrNull(inFlight.capOf(row.merchantKey)),
    inFlight: inFlight.count(row.merchantKey),
    breaker: breakers.view(row.merchantKey),
    lastChange:
      change === undefined
        ? null
        : {
            description: formatRate(change.rate),
            version: change.version,
            atIso: new Date(change.changedAtMs).toISOString(),
            scope: own === undefined ? 'default' : 'merchant',
          },
  }
}

/**
 * bindingOf asks the limiter which limit holds `limitKeys` (explain) and says it as a
 * reason a person reads: the merchant's own rate or a parent's, a longer window, a
 * Retry-After, or the parent share. Null when nothing binds.
 */
export function bindingOf(
  limiter: Pick<KeyedLimiter, 'explain' | 'rateOf'>,
  limitKeys: readonly string[],
): BindingStatus | null {
  let explanation: ReturnType<typeof limiter.explain>
  try {
    explanation = limiter.explain(limitKeys)
  } catch {
    // keys the limiter refuses (the adapters checked them first) bind nothing it can explain
    return null
  }
  if (explanation === undefined) return null
  const innermost = limitKeys[limitKeys.length - 1]
  const binds: BindingReason =
    explanation.reason === 'rate'
      ? explanation.bindingKey === innermost
        ? 'own'
        : 'parent'
      : explanation.reason
  const binding: BindingStatus = {
    binds,
    key: explanation.bindingKey,
    waitMs: Math.max(0, Math.round(explanation.waitMs)),
  }
  if (explanation.windowIntervalMs === undefined) return binding
  const window = windowsOf(limiter.rateOf(explanation.bindingKey)).find(
    (w) => w.intervalMs === explanation.windowIntervalMs,
  )
  return window === undefined ? binding : { ...binding, window: formatRate(parseRate(window)) }
}

/** BINDING_LIMIT bounds the waiting merchants bindingCounts asks the limiter about, per call. */
export const BINDING_LIMIT = 1_000

/**
 * bindingCounts counts the merchants waiting in the sources (at most BINDING_LIMIT of them)
 * by the limit that holds them, for the metrics.
 */
export function bindingCounts(
  limiter: Pick<KeyedLimiter, 'explain' | 'rateOf'>,
  sources: readonly Pick<SourceStatus, 'backlog'>[],
): Partial<Record<BindingReason, number>> {
  const counts: Partial<Record<BindingReason, number>> = {}
  let asked = 0
  for (const [merchantKey, waiting] of waitingByMerchant(sources.map((source) => source.backlog()))) {
    if (asked++ >= BINDING_LIMIT) break
    const binding = bindingOf(limiter, waiting.limitKeys ?? [merchantKey])
    if (binding !== null) counts[binding.binds] = (counts[binding.binds] ?? 0) + 1
  }
  return counts
}

/**
 * parentRows lists the limiter's parent keys (at most STATUS_LIST_LIMIT, in its order) with
 * their own rates and their children (at most CHILD_LIST_LIMIT each, backlogged first, then
 * busiest, then by key).
 */
function parentRows(parts: StatusParts): ParentStatus[] {
  const own = new Set(parts.control.table.overrides.map((override) => override.merchant))
  return parts.limiter
    .parents()
    .slice(0, STATUS_LIST_LIMIT)
    .map((key) => {
      const children = parts.limiter.childrenOf(key)
      const rate = own.has(key) ? parts.limiter.rateOf(key) : undefined
      let grantedPerSec = 0
      let backloggedChildren = 0
      for (const child of children) {
        grantedPerSec += child.grantedPerSec
        if (child.backlogged) backloggedChildren++
      }
      return {
        key,
        rate: rate === undefined ? null : formatRate(rate),
        limitPerSec: rate === undefined ? null : roundForPeople(ratePerSec(rate)),
        grantedPerSec: roundForPeople(grantedPerSec),
        childCount: children.length,
        backloggedChildren,
        children: [...children]
          .sort(
            (a, b) =>
              Number(b.backlogged) - Number(a.backlogged) ||
              b.grantedPerSec - a.grantedPerSec ||
              (a.key < b.key ? -1 : 1),
          )
          .slice(0, CHILD_LIST_LIMIT)
          .map((child) => ({
            key: child.key,
            weight: child.weight,
            backlogged: child.backlogged,
            grantedPerSec: roundForPeople(child.grantedPerSec),
          })),
      }
    })
}

/**
 * roundForPeople keeps what a person reads of a number: three decimals from 1 up, three
 * significant digits below (1.5000000000000002 is 1.5, 1/min is 0.0167 per second).
 */
export function roundForPeople(value: number): number {
  if (!Number.isFinite(value) || value === 0) return value
  return Math.abs(value) >= 1 ? Math.round(value * 1_000) / 1_000 : Number(value.toPrecision(3))
}

function finiteOrNull(value: number): number | null {
  return Number.isFinite(value) ? value : null
}
