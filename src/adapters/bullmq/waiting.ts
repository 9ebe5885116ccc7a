import type { LimitKeys } from '../../limiter/index.js'

/** MerchantWaiting is one merchant's jobs waiting to run, as this process knows them. */
export interface MerchantWaiting {
  /** jobs is delayed + parked: a count of jobs, not of tokens. */
  jobs: number
  /** delayed is the jobs this process moved to delayed on a reservation not yet due. */
  delayed: number
  /** parked is the merchant's backlog in Redis (every process's), as last read. */
  parked: number
  /** oldestAgeMs is how long ago the oldest of them was added to the queue, in ms. */
  oldestAgeMs: number
  /**
   * limitKeys are the keys the latest of its jobs seen here is limited by (see
   * ThrottleOptions.limitKeys), for `limiter.explain(limitKeys)`.
   */
  limitKeys?: readonly string[]
}

/** DelayedCount is one merchant's jobs delayed on a reservation still ahead. */
export interface DelayedCount {
  delayed: number
  oldestAddedAtWallMs: number
  /** limitKeys of the latest of them. */
  limitKeys: LimitKeys
}

interface DelayedRecord {
  merchantKey: string
  limitKeys: LimitKeys
  reservedAtWallMs: number
  addedAtWallMs: number
}

/**
 * DelayedJobs remembers the jobs this process moved to delayed on a reservation, until
 * their reserved time, for the waiting counts. Records come in time order and none is
 * reserved further ahead than `aheadMs`, so those older than that are dropped from the
 * front: memory is bounded by the delays made in `aheadMs`.
 */
export class DelayedJobs {
  private records: DelayedRecord[] = []
  private head = 0
  private readonly madeAt: number[] = []

  constructor(private readonly aheadMs: number) {}

  /** add remembers a job of `merchantKey` (limited by `limitKeys`) delayed at `nowWallMs` on a reservation for `reservedAtWallMs`. */
  add(
    merchantKey: string,
    limitKeys: LimitKeys,
    nowWallMs: number,
    reservedAtWallMs: number,
    addedAtWallMs: number,
  ): void {
    this.prune(nowWallMs)
    this.records.push({ merchantKey, limitKeys, reservedAtWallMs, addedAtWallMs })
    this.madeAt.push(nowWallMs)
  }

  /** byMerchant counts, per merchant, the jobs whose reservations are still ahead of `nowWallMs`. */
  byMerchant(nowWallMs: number): Map<string, DelayedCount> {
    this.prune(nowWallMs)
    const counts = new Map<string, DelayedCount>()
    for (let i = this.head; i < this.records.length; i++) {
      const record = this.records[i]!
      if (record.reservedAtWallMs <= nowWallMs) continue
      const count = counts.get(record.merchantKey)
      if (count === undefined) {
        const { addedAtWallMs, limitKeys } = record
        counts.set(record.merchantKey, { delayed: 1, oldestAddedAtWallMs: addedAtWallMs, limitKeys })
      } else {
        count.delayed++
        count.limitKeys = record.limitKeys
        count.oldestAddedAtWallMs = Math.min(count.oldestAddedAtWallMs, record.addedAtWallMs)
      }
    }
    return counts
  }

  private prune(nowWallMs: number): void {
    while (this.head < this.records.length && this.madeAt[this.head]! + this.aheadMs < nowWallMs) this.head++
    if (this.head > 1024 && this.head * 2 > this.records.length) {
      this.records = this.records.slice(this.head)
      this.madeAt.splice(0, this.head)
      this.head = 0
    }
  }
}
