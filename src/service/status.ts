import type { ControlStats, ControlTable } from '../control/index.js'
import {
  type BreakerState,
  type CircuitBreakers,
  formatRate,
  type InFlightTable,
  type KeyedLimiter,
  ratePerSec,
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
  control: {
    source: 'kafka' | 'file'
    caughtUp: boolean
    applied: number
    stale: number
    rejected: number
    recentChanges: Array<{ atIso: string; description: string }>
    recentRejections: Array<{ atIso: string; reason: string; error: string }>
  }
  sources: SourceStatus[]
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

/** MerchantStatus is one merchant's row: its recent work (failures included) and its limits. */
export type MerchantStatus = MerchantActivity & {
  rate: string
  /** limitPerSec is the rate in force per second, rounded for people (roundForPeople). */
  limitPerSec: number
  tokens: number | null
  /** waiting: units reserved ahead of time and not yet run (the bucket's debt). */
  waiting: number
  capacity: number | null
  penaltyFactor: number
  /** maxInFlight is the merchant's in-flight cap; null: no cap. */
  maxInFlight: number | null
  /** inFlight is how many of the merchant's jobs this worker has in flight. */
  inFlight: number
  /** breaker is the merchant's circuit breaker: its state, failures in the window, openings, ms until a probe. */
  breaker: { state: BreakerState; recentFailures: number; openings: number; retryInMs: number }
  /** lastChange is the change that set the rate in force: the merchant's own (`scope: 'merchant'`) or the default's. */
  lastChange: {
    description: string
    version: number
    atIso: string
    scope: 'merchant' | 'default'
  } | null
}

/** SourceStatus names one source the worker consumes. */
export interface SourceStatus {
  kind: 'bullmq' | 'kafka'
  name: string
  concurrency: number
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
  limiter: Pick<KeyedLimiter, 'stats' | 'inspect' | 'rateOf' | 'rates'>
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

/** STATUS_LIST_LIMIT bounds the merchants and open breakers listed. */
export const STATUS_LIST_LIMIT = 100

/** buildStatus assembles /status.json from its parts; events are listed newest first. */
export function buildStatus(parts: StatusParts): StatusSnapshot {
  const stats = parts.limiter.stats()
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
    merchants: merchantRows(parts),
    control: {
      source: parts.control.source,
      caughtUp: parts.control.caughtUp,
      applied: parts.control.stats.applied,
      stale: parts.control.stats.stale,
      rejected: parts.control.stats.rejected,
      recentChanges: [...parts.control.recentChanges].reverse(),
      recentRejections: [...parts.control.recentRejections].reverse(),
    },
    sources: parts.sources.map(({ kind, name, concurrency }) => ({ kind, name, concurrency })),
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

function merchantRows(parts: StatusParts): MerchantStatus[] {
  const table = parts.control.table
  const ownChange = new Map(table.overrides.map((override) => [override.merchant, override]))
  return parts.activity
    .slice(0, STATUS_LIST_LIMIT)
    .map((row) => merchantStatus(row, parts, ownChange.get(row.merchantKey)))
}

function merchantStatus(
  row: MerchantActivity,
  parts: StatusParts,
  own: ControlTable['overrides'][number] | undefined,
): MerchantStatus {
  const { limiter, inFlight, breakers } = parts
  const inspection = limiter.inspect(row.merchantKey)
  const rate = inspection?.rate ?? limiter.rateOf(row.merchantKey)
  const change = own ?? parts.control.table.default
  return {
    ...row,
    rate: formatRate(rate),
    limitPerSec: roundForPeople(ratePerSec(rate)),
    tokens: inspection === undefined ? null : roundForPeople(inspection.tokens),
    waiting: inspection === undefined ? 0 : Math.max(0, Math.ceil(-inspection.tokens - 1e-9)),
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
