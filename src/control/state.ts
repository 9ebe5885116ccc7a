import { type Logger, pino } from 'pino'
import type { ApplyResult, CapChange, Rate, RateChange } from '../limiter/index.js'
import { type ControlChange, DEFAULT_RATE_KEY, SNAPSHOT_KEY, type SnapshotChange } from './schema.js'

/**
 * ControlApply is one accepted change: the limiter's RateChange (rates and weights) and,
 * with it, the in-flight caps it sets. `weights` maps a key to its weight, or to null for
 * the default weight (1).
 */
export type ControlApply = RateChange & {
  maxInFlight?: CapChange
  weights?: Readonly<Record<string, number | null>>
}

/**
 * RateTarget receives each accepted change as one synchronous `apply`. A KeyedLimiter is
 * one (it applies the rates); a target that also holds in-flight caps applies
 * `maxInFlight` in the same step (see the service).
 */
export interface RateTarget {
  apply(change: ControlApply): ApplyResult
}

/**
 * ControlRejectReason says why a control record was refused: by size, JSON, schema,
 * signature, a message key that does not match the message, or the limiter itself.
 */
export type ControlRejectReason =
  | 'too-large'
  | 'invalid-json'
  | 'invalid-message'
  | 'missing-key'
  | 'key-mismatch'
  | 'unsigned'
  | 'unknown-key-id'
  | 'bad-signature'
  | 'not-a-snapshot'
  | 'limiter-refused'

/** ControlOrigin says where a change came from, for logs: a topic partition and offset, or a file. */
export interface ControlOrigin {
  readonly source: 'kafka' | 'file' | 'direct'
  readonly partition?: number
  readonly offset?: string
  readonly path?: string
}

/** ControlEvent is what ControlState reports to its listeners, one per record. */
export type ControlEvent =
  | { kind: 'applied'; change: ControlChange; atMs: number; origin: ControlOrigin }
  /** stale: the change's version is at or below `inForceVersion`, the version in force for what it changes. */
  | { kind: 'stale'; change: ControlChange; inForceVersion: number; origin: ControlOrigin }
  | { kind: 'rejected'; reason: ControlRejectReason; error: string; origin: ControlOrigin }
  /** forgotten: a tombstone for `key`; `changed` is false when it had nothing to undo. */
  | { kind: 'forgotten'; key: string; changed: boolean; atMs: number; origin: ControlOrigin }

/** ControlOutcome is what one record did, as returned to the source that fed it. */
export type ControlOutcome = ControlEvent['kind']

/** RateEntry is one rate in force: the rate, its in-flight cap if it has one, the version that set it, and when it was applied (wall ms). */
export interface RateEntry {
  readonly rate: Rate
  readonly maxInFlight?: number
  readonly version: number
  readonly changedAtMs: number
}

/** WeightEntry is one key's weight in force, the version that set it and when (wall ms). */
export interface WeightEntry {
  readonly merchant: string
  readonly weight: number
  readonly version: number
  readonly changedAtMs: number
}

/** ControlTable is the applied table, for the status page and `throttlectl get`. */
export interface ControlTable {
  /** default is the default rate set by control, or undefined while the limiter's configured one holds. */
  readonly default: RateEntry | undefined
  /** overrides lists the merchants with a rate of their own, sorted by merchant key. */
  readonly overrides: ReadonlyArray<RateEntry & { readonly merchant: string }>
  /** weights lists the keys with a weight of their own (layered keys), sorted by key. */
  readonly weights: ReadonlyArray<WeightEntry>
  /** snapshotVersion is the version of the latest snapshot applied: every merchant's floor. */
  readonly snapshotVersion: number | undefined
  /** lastChangeAtMs is when the last change was applied (wall ms), or undefined before the first. */
  readonly lastChangeAtMs: number | undefined
}

/** ControlStats are counters for metrics, one per outcome and one per rejection reason. */
export interface ControlStats {
  applied: number
  stale: number
  rejected: number
  forgotten: number
  rejectedBy: Partial<Record<ControlRejectReason, number>>
}

/** ControlStateOptions configure a ControlState. */
export interface ControlStateOptions {
  /** target receives every accepted change as one `apply` call; without one, the state only keeps the table. */
  target?: RateTarget
  /** wallNow is the wall clock for `changedAtMs`, in ms since the epoch (Date.now by default). */
  wallNow?: () => number
  logger?: Logger
}

/**
 * A merchant's latest change: its rate, or null after a clear or when only a weight is set
 * (kept to order later changes), its cap and its weight when it has them.
 */
interface MerchantEntry {
  readonly rate: Rate | null
  readonly maxInFlight?: number
  readonly weight?: number
  readonly version: number
  readonly changedAtMs: number
}

/**
 * ControlState orders control changes and applies the accepted ones to the limiter.
 *
 * Versions order changes per merchant and for the default: a change at or below the
 * version in force for what it touches is stale, ignored and counted. A snapshot at
 * version v is every merchant's floor: it wins over every entry at or below v (ties go
 * to the snapshot) and leaves newer ones alone, so the table ends the same whatever
 * order the records arrive in, across partitions and replays.
 *
 * The limiter's own `version` is global, so it is never passed: ordering is done here,
 * and each accepted change is exactly one synchronous `target.apply` call.
 */
export class ControlState {
  private readonly target: RateTarget | undefined
  private readonly wallNow: () => number
  private readonly logger: Logger
  private readonly merchants = new Map<string, MerchantEntry>()
  private defaultEntry: RateEntry | undefined
  private snapshot: SnapshotChange | undefined
  private lastChangeAtMs: number | undefined
  private readonly listeners = new Set<(event: ControlEvent) => void>()
  private readonly counters: ControlStats = {
    applied: 0,
    stale: 0,
    rejected: 0,
    forgotten: 0,
    rejectedBy: {},
  }

  constructor(options: ControlStateOptions = {}) {
    this.target = options.target
    this.wallNow = options.wallNow ?? Date.now
    this.logger = options.logger ?? pino({ level: 'silent' })
  }

  /** floorVersion is the latest snapshot's version, or -Infinity before any snapshot. */
  private get floorVersion(): number {
    return this.snapshot?.version ?? Number.NEGATIVE_INFINITY
  }

  /**
   * accept orders one parsed change and applies it when it is newer than what is in
   * force. Clearing the default (`clear` of `*`) is misuse and throws a TypeError.
   */
  accept(change: ControlChange, origin: ControlOrigin = DIRECT): ControlOutcome {
    if (change.type === 'clear' && change.merchant === DEFAULT_RATE_KEY) {
      throw new TypeError(
        "accept: expected a merchant to clear, got '*' (the default rate cannot be cleared)",
      )
    }
    const inForce = this.inForceVersion(change)
    if (change.version <= inForce) {
      this.counters.stale++
      this.emit({ kind: 'stale', change, inForceVersion: inForce, origin })
      return 'stale'
    }
    const atMs = this.wallNow()
    if (change.type === 'snapshot') return this.acceptSnapshot(change, atMs, origin)
    if (change.type === 'set' && change.merchant === DEFAULT_RATE_KEY) {
      const applied = this.applyToTarget(
        {
          default: change.rate,
          inheritance: change.inheritance,
          maxInFlight: { default: change.maxInFlight ?? null },
        },
        origin,
      )
      if (!applied) return 'rejected'
      this.defaultEntry = withCap(
        { rate: change.rate, version: change.version, changedAtMs: atMs },
        change.maxInFlight,
      )
      return this.applied(change, atMs, origin)
    }
    const rate = change.type === 'set' ? change.rate : null
    const cap = change.type === 'set' ? change.maxInFlight : undefined
    const weight = change.type === 'set' ? change.weight : undefined
    const overrides = Object.fromEntries([[change.merchant, rate]])
    const caps = Object.fromEntries([[change.merchant, cap ?? null]])
    // A set or clear is the merchant's whole entry: a weight it does not give goes back to 1.
    const weights = Object.fromEntries([[change.merchant, weight ?? null]])
    if (
      !this.applyToTarget(
        { overrides, weights, inheritance: change.inheritance, maxInFlight: { overrides: caps } },
        origin,
      )
    )
      return 'rejected'
    this.merchants.set(
      change.merchant,
      withWeight(withCap({ rate, version: change.version, changedAtMs: atMs }, cap), weight),
    )
    return this.applied(change, atMs, origin)
  }

  /**
   * forget handles a tombstone (a null value) for message key `key`: compaction will drop
   * every record under that key, so the state becomes what a worker replaying the
   * compacted topic would build. A merchant falls back to the latest snapshot's rate for
   * it, or to no override; the default falls back to the snapshot's default. With no
   * snapshot to fall back to, a tombstone for `*` keeps the default in force, and a
   * tombstone for the snapshot key is ignored: both are reported with `changed: false`.
   */
  forget(key: string, origin: ControlOrigin = DIRECT): ControlOutcome {
    const floor = this.floorVersion
    const atMs = this.wallNow()
    let changed = false
    if (key === DEFAULT_RATE_KEY) {
      if (
        this.snapshot !== undefined &&
        this.defaultEntry !== undefined &&
        this.defaultEntry.version > floor
      ) {
        changed = this.applyToTarget(
          { default: this.snapshot.default, maxInFlight: { default: this.snapshot.maxInFlight ?? null } },
          origin,
        )
        if (!changed) return 'rejected'
        this.defaultEntry = withCap(
          { rate: this.snapshot.default, version: floor, changedAtMs: atMs },
          this.snapshot.maxInFlight,
        )
      }
    } else if (key !== SNAPSHOT_KEY) {
      const entry = this.merchants.get(key)
      if (entry !== undefined && entry.version > floor) {
        const fallback = this.snapshot?.overrides.get(key) ?? null
        const fallbackCap = this.snapshot?.caps?.get(key)
        const fallbackWeight = this.snapshot?.weights?.get(key)
        if (fallback !== null || entry.rate !== null || fallbackWeight !== entry.weight) {
          const applied = this.applyToTarget(
            {
              overrides: Object.fromEntries([[key, fallback]]),
              weights: Object.fromEntries([[key, fallbackWeight ?? null]]),
              maxInFlight: { overrides: Object.fromEntries([[key, fallbackCap ?? null]]) },
            },
            origin,
          )
          if (!applied) return 'rejected'
        }
        if (fallback === null && fallbackWeight === undefined) this.merchants.delete(key)
        else
          this.merchants.set(
            key,
            withWeight(
              withCap({ rate: fallback, version: floor, changedAtMs: atMs }, fallbackCap),
              fallbackWeight,
            ),
          )
        changed = true
      }
    }
    if (changed) this.lastChangeAtMs = atMs
    this.counters.forgotten++
    this.emit({ kind: 'forgotten', key, changed, atMs, origin })
    return 'forgotten'
  }

  /** reject records a record refused before it reached ordering (size, JSON, schema, signature). */
  reject(reason: ControlRejectReason, error: string, origin: ControlOrigin = DIRECT): ControlOutcome {
    this.counters.rejected++
    this.counters.rejectedBy[reason] = (this.counters.rejectedBy[reason] ?? 0) + 1
    this.emit({ kind: 'rejected', reason, error, origin })
    return 'rejected'
  }

  /** versionOf is the version in force for a merchant (or `*`), including a clear; undefined if none. */
  versionOf(merchant: string): number | undefined {
    if (merchant === DEFAULT_RATE_KEY) return this.defaultEntry?.version
    return this.merchants.get(merchant)?.version ?? this.snapshot?.version
  }

  /** maxVersion is the highest version applied so far, or undefined before the first change. */
  maxVersion(): number | undefined {
    let max = this.defaultEntry?.version
    if (this.snapshot !== undefined && (max === undefined || this.snapshot.version > max))
      max = this.snapshot.version
    for (const entry of this.merchants.values())
      if (max === undefined || entry.version > max) max = entry.version
    return max
  }

  /** table is the applied table: default, overrides in merchant order, floor and last change time. */
  table(): ControlTable {
    const overrides: Array<RateEntry & { merchant: string }> = []
    for (const [merchant, entry] of this.merchants) {
      if (entry.rate !== null)
        overrides.push(
          withCap(
            { merchant, rate: entry.rate, version: entry.version, changedAtMs: entry.changedAtMs },
            entry.maxInFlight,
          ),
        )
    }
    const weights: WeightEntry[] = []
    for (const [merchant, entry] of this.merchants) {
      if (entry.weight !== undefined)
        weights.push({
          merchant,
          weight: entry.weight,
          version: entry.version,
          changedAtMs: entry.changedAtMs,
        })
    }
    overrides.sort(byMerchant)
    weights.sort(byMerchant)
    return {
      default: this.defaultEntry,
      overrides,
      weights,
      snapshotVersion: this.snapshot?.version,
      lastChangeAtMs: this.lastChangeAtMs,
    }
  }

  /** stats returns a copy of the counters. */
  stats(): ControlStats {
    return { ...this.counters, rejectedBy: { ...this.counters.rejectedBy } }
  }

  /** subscribe calls `listener` with every event from now on; returns the function that unsubscribes. */
  subscribe(listener: (event: ControlEvent) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  private inForceVersion(change: ControlChange): number {
    const floor = this.floorVersion
    if (change.type === 'snapshot') return floor
    if (change.merchant === DEFAULT_RATE_KEY) return this.defaultEntry?.version ?? floor
    return this.merchants.get(change.merchant)?.version ?? floor
  }

  private acceptSnapshot(change: SnapshotChange, atMs: number, origin: ControlOrigin): ControlOutcome {
    const next = new Map<string, MerchantEntry>()
    for (const [merchant, entry] of this.merchants)
      if (entry.version > change.version) next.set(merchant, entry)
    for (const [merchant, rate] of change.overrides) {
      if (!next.has(merchant))
        next.set(
          merchant,
          withWeight(
            withCap({ rate, version: change.version, changedAtMs: atMs }, change.caps?.get(merchant)),
            change.weights?.get(merchant),
          ),
        )
    }
    // a key may have a weight and no rate of its own (it follows the default)
    for (const [merchant, weight] of change.weights ?? []) {
      if (!next.has(merchant))
        next.set(merchant, { rate: null, weight, version: change.version, changedAtMs: atMs })
    }
    const takesDefault = (this.defaultEntry?.version ?? Number.NEGATIVE_INFINITY) <= change.version
    const overrides: Array<[string, Rate]> = []
    const caps: Array<[string, number]> = []
    // Weights are sent whole: each kept or new one, and null for each one the snapshot drops.
    const weights: Record<string, number | null> = {}
    for (const [merchant, entry] of this.merchants) if (entry.weight !== undefined) weights[merchant] = null
    for (const [merchant, entry] of next) {
      if (entry.rate !== null) overrides.push([merchant, entry.rate])
      if (entry.maxInFlight !== undefined) caps.push([merchant, entry.maxInFlight])
      if (entry.weight !== undefined) weights[merchant] = entry.weight
    }
    const applied = this.applyToTarget(
      {
        default: takesDefault ? change.default : undefined,
        overrides: Object.fromEntries(overrides),
        weights,
        replace: true,
        inheritance: change.inheritance,
        maxInFlight: {
          ...(takesDefault ? { default: change.maxInFlight ?? null } : {}),
          overrides: Object.fromEntries(caps),
          replace: true,
        },
      },
      origin,
    )
    if (!applied) return 'rejected'
    this.merchants.clear()
    for (const [merchant, entry] of next) this.merchants.set(merchant, entry)
    if (takesDefault)
      this.defaultEntry = withCap(
        { rate: change.default, version: change.version, changedAtMs: atMs },
        change.maxInFlight,
      )
    this.snapshot = change
    return this.applied(change, atMs, origin)
  }

  /** applyToTarget makes one limiter call; a refusal (a TypeError) is a rejection, with nothing changed. */
  private applyToTarget(change: ControlApply, origin: ControlOrigin): boolean {
    if (this.target === undefined) return true
    try {
      const result = this.target.apply(change)
      if (result.applied) return true
      this.reject('limiter-refused', `limiter: ${result.reason}`, origin)
    } catch (error) {
      this.reject('limiter-refused', `limiter: ${(error as Error).message}`, origin)
    }
    return false
  }

  private applied(change: ControlChange, atMs: number, origin: ControlOrigin): ControlOutcome {
    this.lastChangeAtMs = atMs
    this.counters.applied++
    this.emit({ kind: 'applied', change, atMs, origin })
    return 'applied'
  }

  private emit(event: ControlEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event)
      } catch (error) {
        this.logger.error(
          { err: error, event: event.kind },
          'control event listener threw; the change stands',
        )
      }
    }
  }
}

const DIRECT: ControlOrigin = { source: 'direct' }

/** withWeight adds `weight` to an entry when there is one, and leaves the field out otherwise. */
function withWeight<T extends object>(entry: T, weight: number | undefined): T & { weight?: number } {
  return weight === undefined ? entry : { ...entry, weight }
}

function byMerchant(a: { merchant: string }, b: { merchant: string }): number {
  return a.merchant < b.merchant ? -1 : a.merchant > b.merchant ? 1 : 0
}

/** withCap adds `maxInFlight` to an entry when there is one, and leaves the field out otherwise. */
function withCap<T extends object>(entry: T, maxInFlight: number | undefined): T & { maxInFlight?: number } {
  return maxInFlight === undefined ? entry : { ...entry, maxInFlight }
}
