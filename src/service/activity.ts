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
  /** waiting counts jobs delayed by the limiter and not yet run. */
  waiting: number
  lastSeenMs: number
}

interface Track {
  /** buckets[i] counts completions in second `baseS + i` modulo the window. */
  buckets: Uint32Array
  latestS: number
  waiting: number
  lastSeenMs: number
}

/**
 * ActivityTracker counts completions per merchant per second over the last minute, and
 * jobs waiting, for at most `maxMerchants` merchants: the least recently seen is dropped
 * first, so memory stays bounded whatever the number of merchants.
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
    track.buckets[this.second() % ACTIVITY_WINDOW_S]! += 1
  }

  /** waitingChanged adds `delta` (+1 delayed, -1 no longer waiting) to a merchant's waiting count. */
  waitingChanged(merchantKey: string, delta: number): void {
    const track = this.touch(merchantKey)
    track.waiting = Math.max(0, track.waiting + delta)
  }

  /** snapshot lists the tracked merchants, busiest first, at most `limit`. */
  snapshot(limit = 100): MerchantActivity[] {
    const nowS = this.second()
    const rows: MerchantActivity[] = []
    for (const [merchantKey, track] of this.tracks) {
      this.roll(track, nowS)
      const perSec: number[] = []
      for (let s = nowS - ACTIVITY_WINDOW_S + 1; s <= nowS; s++) perSec.push(track.buckets[s % ACTIVITY_WINDOW_S]!)
      const total = perSec.reduce((sum, n) => sum + n, 0)
      rows.push({ merchantKey, deliveredLastMinute: total, deliveredPerSec: perSec, waiting: track.waiting, lastSeenMs: track.lastSeenMs })
    }
    rows.sort((a, b) => b.deliveredLastMinute - a.deliveredLastMinute || b.waiting - a.waiting || b.lastSeenMs - a.lastSeenMs)
    return rows.slice(0, limit)
  }

  private touch(merchantKey: string): Track {
    const nowS = this.second()
    let track = this.tracks.get(merchantKey)
    if (track === undefined) {
      if (this.tracks.size >= this.maxMerchants) this.dropOldest()
      track = { buckets: new Uint32Array(ACTIVITY_WINDOW_S), latestS: nowS, waiting: 0, lastSeenMs: 0 }
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
    for (let i = 1; i <= passed; i++) track.buckets[(track.latestS + i) % ACTIVITY_WINDOW_S] = 0
    if (nowS > track.latestS) track.latestS = nowS
  }

  private dropOldest(): void {
    for (const [merchantKey, track] of this.tracks) {
      if (track.waiting === 0 || this.tracks.size > this.maxMerchants * 2) {
        this.tracks.delete(merchantKey)
        return
      }
    }
  }

  private second(): number {
    return Math.floor(this.clock.now() / 1_000)
  }
}
