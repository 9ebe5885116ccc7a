import { keyList } from '../limit-keys.js'
import type { Lane } from './lanes.js'
import type { BufferedMessage, PartitionState } from './partition-state.js'

/** BACKLOG_MERCHANTS is how many merchants ThrottledConsumerStats.backlog lists at most. */
export const BACKLOG_MERCHANTS = 20

/** MerchantBacklog is one merchant's messages waiting in this consumer, and how old the oldest is. */
export interface MerchantBacklog {
  merchantKey: string
  /**
   * buffered: its messages held in source-partition lanes, plus those read back into a
   * parking lane whose source partition this consumer does not hold (during a rebalance):
   * never one counted in `parked`, so buffered + parked is what waits.
   */
  buffered: number
  /**
   * parked: its messages routed to parking and not yet handled, on their way to the parking
   * topic, in it, or read back from it into a lane (after a restart or rebalance: the moved
   * stretch's length, an upper bound, until the merchant catches up).
   */
  parked: number
  /** oldestAgeMs: age of its oldest message held, from the message's timestamp (wall clock). */
  oldestAgeMs: number
  /**
   * limitKeys: the keys the message at the front of its lane is limited by (see
   * ThrottledConsumerOptions.limitKeys), for `limiter.explain(limitKeys)`; absent when
   * it has no lane here (every message it has waiting is parked).
   */
  limitKeys?: readonly string[]
}

/**
 * merchantBacklog lists the BACKLOG_MERCHANTS merchants with the most messages waiting in
 * `partitions`, most first, ages measured at `nowMs` (wall clock, as message timestamps).
 * `countedAsParked` says whether a lane's messages are in its merchant's parked count
 * already (so they are not counted twice).
 */
export function merchantBacklog<T>(
  partitions: Iterable<PartitionState<T>>,
  countedAsParked: (lane: Lane<BufferedMessage<T>>) => boolean,
  nowMs: number,
): MerchantBacklog[] {
  const byMerchant = new Map<string, MerchantBacklog>()
  const entry = (merchantKey: string) => {
    let backlog = byMerchant.get(merchantKey)
    if (backlog === undefined) {
      backlog = { merchantKey, buffered: 0, parked: 0, oldestAgeMs: 0 }
      byMerchant.set(merchantKey, backlog)
    }
    return backlog
  }
  for (const state of partitions) {
    for (const lane of state.group.lanes.values()) {
      const backlog = entry(lane.merchantKey)
      if (!countedAsParked(lane)) backlog.buffered += lane.size
      const head = lane.peek()
      if (head !== undefined) {
        backlog.limitKeys ??= keyList(head.limitKeys ?? head.merchantKey)
        const ageMs = nowMs - Number(head.message.timestamp)
        if (ageMs > backlog.oldestAgeMs) backlog.oldestAgeMs = ageMs
      }
    }
    for (const [merchantKey, parked] of state.parked.waiting()) {
      const backlog = entry(merchantKey)
      backlog.parked += parked.count
      const ageMs = nowMs - parked.oldestTimestampMs
      if (Number.isFinite(ageMs) && ageMs > backlog.oldestAgeMs) backlog.oldestAgeMs = ageMs
    }
  }
  return [...byMerchant.values()]
    .sort((a, b) => b.buffered + b.parked - (a.buffered + a.parked))
    .slice(0, BACKLOG_MERCHANTS)
}
