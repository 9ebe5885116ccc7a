import type { Clock } from '../limiter/index.js'

/** ACTIVITY_WINDOW_S is the length of the delivered-rate window, in seconds. */
export const ACTIVITY_WINDOW_S = 60

/** MerchantActivity is one merchant's recent work, for the status page. */
export interface MerchantActivity {
  merchantKey: string
  /** deliveredLastMinute counts jobs completed in the last 60 s. */
  deliveredLastMinute: number
  /** deliveredPerSec holds the last 60 one-second buckets, oldest first. */
  deliveredPerSec: number[]
  /** failedLastMinute counts failed attempts (dead-lettered or to be retried) in the last 60 s. */
  failedLastMinute: number
  /** failures counts failed attempts since the worker started, with the last one's reason. */
  failures: FailureCount
  /** deadLetters counts jobs given up (dead-lettered, or the failed set on BullMQ) since the worker started. */
  deadLetters: FailureCount
  lastSeenMs: number
}

/** FailureCount is how many, and why the last one happened (null: none yet). */
export interface FailureCount {
  count: number
  lastReason: string | null
}

/** MAX_REASON_LENGTH bounds a reason kept for the status page. */
export const MAX_REASON_LENGTH = 200

interface Track {
  /** buckets[i] counts completions in second `baseS + i` modulo the window. */
  buckets: Uint32Array
  /** failedBuckets counts failed attempts, second by second as `buckets`. */
  failedBuckets: Uint32Array
  latestS: number
  lastSeenMs: number
  failures: FailureCount
  deadLetters: FailureCount
}

/**
 * ActivityTracker counts completions per merchant per second over the last minute, for
 * at most `maxMerchants` merchants: the least recently seen is dropped first, so memory
 * stays bounded whatever the number of merchants.
 */
export class ActivityTracker {
  private readonly tracks = new Map<string, Track>()

  constructor(
    private readonly clock: Clock,
    private readonly maxMerchants = 2_000,
  ) {}

  /** delivered counts one completed job for `merchantKey`. */
  delivered(merchantKey: string): void {
    const track = this.touch(merchantKey)
    track.buckets[slotOf(this.second())]! += 1
  }

  /**
   * failed counts one failed attempt for `merchantKey`; `deadLettered` says the job was
   * given up with it (no attempt left, or a failure retrying cannot help).
   */
  failed(merchantKey: string, reason: string, deadLettered: boolean): void {
    const track = this.touch(merchantKey)
    track.failedBuckets[slotOf(this.second())]! += 1
    const bounded = reason.length > MAX_REASON_LENGTH ? `${reason.slice(0, MAX_REASON_LENGTH - 1)}…` : reason
    track.failures.count++
    track.failures.lastReason = bounded
    if (deadLettered) {
      track.deadLetters.count++
      track.deadLetters.lastReason = bounded
    }
  }

  /** seen notes a decision for `merchantKey`, so a merchant that only waits is listed too. */
  seen(merchantKey: string): void {
    this.touch(merchantKey)
  }

  /** snapshot lists the tracked merchants, busiest first, at most `limit`. */
  snapshot(limit = 100): MerchantActivity[] {
    const nowS = this.second()
    const rows: MerchantActivity[] = []
    for (const [merchantKey, track] of this.tracks) {
      this.roll(track, nowS)
      const perSec: number[] = []
      for (let s = nowS - ACTIVITY_WINDOW_S + 1; s <= nowS; s++) perSec.push(track.buckets[slotOf(s)]!)
      rows.push({
        merchantKey,
        deliveredLastMinute: sum(perSec),
        deliveredPerSec: perSec,
        failedLastMinute: sum(track.failedBuckets),
        failures: { ...track.failures },
        deadLetters: { ...track.deadLetters },
        lastSeenMs: track.lastSeenMs,
      })
    }
    rows.sort((a, b) => b.deliveredLastMinute - a.deliveredLastMinute || b.lastSeenMs - a.lastSeenMs)
    return rows.slice(0, limit)
  }

  private touch(merchantKey: string): Track {
    const nowS = this.second()
    let track = this.tracks.get(merchantKey)
    if (track === undefined) {
      if (this.tracks.size >= this.maxMerchants) this.dropOldest()
      track = {
        buckets: new Uint32Array(ACTIVITY_WINDOW_S),
        failedBuckets: new Uint32Array(ACTIVITY_WINDOW_S),
        latestS: nowS,
        lastSeenMs: 0,
        failures: { count: 0, lastReason: null },
        deadLetters: { count: 0, lastReason: null },
      }
    } else {
      this.tracks.delete(merchantKey)
      this.roll(track, nowS)
    }
    track.lastSeenMs = this.clock.now()
    this.tracks.set(merchantKey, track)
    return track
  }

  /** roll clears the buckets of the seconds that passed since the track was last written. */
  private roll(track: Track, nowS: number): void {
    const passed = Math.min(nowS - track.latestS, ACTIVITY_WINDOW_S)
    for (let i = 1; i <= passed; i++) {
      track.buckets[slotOf(track.latestS + i)] = 0
      track.failedBuckets[slotOf(track.latestS + i)] = 0
    }
    if (nowS > track.latestS) track.latestS = nowS
  }

  /** dropOldest forgets the least recently seen merchant (Map order is touch order). */
  private dropOldest(): void {
    const oldest = this.tracks.keys().next()
    if (!oldest.done) this.tracks.delete(oldest.value)
  }

  private second(): number {
    return Math.floor(this.clock.now() / 1_000)
  }
}

function sum(values: ArrayLike<number>): number {
  let total = 0
  for (let i = 0; i < values.length; i++) total += values[i]!
  return total
}

/** slotOf maps a second, negative ones too, to its bucket. */
function slotOf(second: number): number {
  return ((second % ACTIVITY_WINDOW_S) + ACTIVITY_WINDOW_S) % ACTIVITY_WINDOW_S
}
