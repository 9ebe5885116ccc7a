import type { InFlightTable } from '../../limiter/index.js'

/** SlotTable is the part of InFlightTable the processor uses. */
export type SlotTable = Pick<InFlightTable, 'tryStart' | 'finish' | 'count' | 'capOf' | 'merchants'>

/**
 * SlotAnswer says whether a fetched job may take its slot:
 * - `start`: counted in flight; it must be matched by exactly one `finish`.
 * - `at-cap`: its merchant has `maxInFlight` jobs in flight already.
 * - `over-share`: the worker is saturated and its merchant holds its fair share or more.
 */
export type SlotAnswer = 'start' | 'at-cap' | 'over-share'

/**
 * fairShareOf is a merchant's fair share of `concurrency` slots when `merchantsInFlight`
 * merchants have work in flight: ceil(concurrency / merchants), at least 1.
 */
export function fairShareOf(concurrency: number, merchantsInFlight: number): number {
  return Math.max(1, Math.ceil(concurrency / Math.max(1, merchantsInFlight)))
}

/**
 * takeSlot decides for one job of `merchantKey` fetched while `inFlight` of this worker's
 * `concurrency` slots are held by other jobs. Fair shares apply only when the job would
 * take the worker's last free slot (inFlight >= concurrency - 1): then a merchant that
 * already holds its fair share leaves the slot to whichever job the queue brings next.
 * A merchant with nothing in flight always gets the slot (its cap permitting).
 */
export function takeSlot(
  table: SlotTable,
  merchantKey: string,
  inFlight: number,
  concurrency: number,
): SlotAnswer {
  const held = table.count(merchantKey)
  if (held >= table.capOf(merchantKey)) return 'at-cap'
  if (held > 0 && inFlight >= concurrency - 1 && held >= fairShareOf(concurrency, table.merchants))
    return 'over-share'
  return table.tryStart(merchantKey) ? 'start' : 'at-cap'
}
