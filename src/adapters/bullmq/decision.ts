import type { CarriedReservation } from './carried.js'

/**
 * Timing is what the decisions need to know about BullMQ's delays, in ms.
 *
 * BullMQ starts a delayed job between its due time and about 100 ms later (Redis wakes
 * blocked clients at `hz` 10), and jobs due close together start in a clump. So a job
 * is moved to delayed `leadMs` before its reserved time and waits the last stretch in
 * the process, which starts it within a few ms of the reservation. A delay of at most
 * `leadMs` is waited in the process from the start.
 */
export interface Timing {
  /** leadMs: how long before its reserved time a delayed job is due back from BullMQ. */
  leadMs: number
  /**
   * clockSkewToleranceMs: a job may come back this much earlier than `leadMs` before its
   * reservation (the host that reserved it and the host that promoted it read different
   * wall clocks) and still count as on time.
   */
  clockSkewToleranceMs: number
  /**
   * lateToleranceMs: a job that comes back more than this after its reserved time no longer
   * runs on its reservation (unless it was held, see CarriedReservation.held): that slot
   * has passed, and running every missed slot at once after a pause of the workers would
   * burst at the merchant. It is charged again in the window in which it runs.
   */
  lateToleranceMs: number
  /**
   * horizonMs: the furthest ahead a job is given a reservation; past it the job is parked
   * in its merchant's backlog. A carried reservation further ahead than this (plus the
   * lead and the skew tolerance) was not made by a worker, and is ignored.
   */
  horizonMs: number
}

/** JobAttempts are the two counters of a BullMQ job that identify one run. */
export interface JobAttempts {
  attemptsMade: number
  attemptsStarted: number
}

/**
 * CarriedDecision says what to do with a job that may carry a reservation:
 * - `run`: its reserved time has come; run it without charging again.
 * - `wait`: its reserved time is `waitMs` away, within the lead; wait in the process, then run it without charging.
 * - `redelay`: it came back far too early (promoted by hand, or read by a clock far
 *   behind); delay it again until `delayUntilWallMs`, keeping the reservation.
 * - `none`: it carries no reservation for this run (`other-run`), came back later than the
 *   tolerance (`late`), or carries a time no worker would have reserved (`implausible`);
 *   ask the limiter.
 */
export type CarriedDecision =
  | { action: 'run' }
  | { action: 'wait'; waitMs: number }
  | { action: 'redelay'; delayUntilWallMs: number }
  | { action: 'none'; reason: 'absent' | 'other-run' | 'late' | 'implausible' }

/** decideCarried decides for a job fetched at `nowWallMs` (wall clock, ms) that carries `carried` or nothing. */
export function decideCarried(
  carried: CarriedReservation | undefined,
  job: JobAttempts,
  nowWallMs: number,
  timing: Timing,
): CarriedDecision {
  if (carried === undefined) return { action: 'none', reason: 'absent' }
  if (carried.attemptsMade !== job.attemptsMade || carried.attemptsStarted + 1 !== job.attemptsStarted) {
    return { action: 'none', reason: 'other-run' }
  }
  const remainingMs = carried.reservedAtWallMs - nowWallMs
  if (remainingMs > timing.horizonMs + timing.leadMs + timing.clockSkewToleranceMs) {
    return { action: 'none', reason: 'implausible' }
  }
  if (remainingMs < -timing.lateToleranceMs && carried.held !== true)
    return { action: 'none', reason: 'late' }
  if (remainingMs < 1) return { action: 'run' }
  if (remainingMs <= timing.leadMs + timing.clockSkewToleranceMs)
    return { action: 'wait', waitMs: remainingMs }
  return { action: 'redelay', delayUntilWallMs: carried.reservedAtWallMs - timing.leadMs }
}

/** LimiterAnswer is the part of the limiter's Reservation the decision reads. */
export type LimiterAnswer =
  | { ok: true; delayMs: number }
  | { ok: false; delayMs: number; reason: 'beyond-horizon' | 'parent-share' | 'table-full' }

/**
 * ReservationDecision says what to do with the limiter's answer for a job:
 * - `run`: tokens granted now.
 * - `wait`: tokens reserved `waitMs` from now, within the lead; wait in the process.
 * - `delay`: tokens reserved for `reservedAtWallMs`; store the reservation on the job
 *   and move it to delayed until `delayUntilWallMs` (the lead before it).
 * - `park`: the tokens are further than the horizon (`horizonMs`, or the limiter's own),
 *   or the merchant has taken its share of a parent key that binds (`parent-share`, asked
 *   again after its delay, as beyond the horizon); give back what was reserved and park
 *   the job in its merchant's backlog, due for promotion in `dueInMs`.
 * - `defer`: nothing reserved (the table is full); move the job to delayed until
 *   `delayUntilWallMs` and ask again then.
 * - `ask-again`: nothing reserved, for a key list whose next unit is `waitMs` away, within
 *   the lead; wait in the process and ask again.
 */
export type ReservationDecision =
  | { action: 'run' }
  | { action: 'wait'; waitMs: number }
  | { action: 'ask-again'; waitMs: number }
  | { action: 'delay'; reservedAtWallMs: number; delayUntilWallMs: number }
  | { action: 'park'; dueInMs: number }
  | { action: 'defer'; delayUntilWallMs: number }

/**
 * MIN_DEFER_MS bounds how soon a job the limiter could not reserve for comes back, so
 * that a zero or tiny answer cannot spin a job between Redis and the worker.
 */
export const MIN_DEFER_MS = 50

/**
 * decideReservation turns the limiter's answer at `nowWallMs` (wall clock, ms) into an
 * action. For a key list (`keyList`), the limiter defers rather than reserve ahead whenever
 * an inner key (the merchant's own limit) would place the unit after an outer key's own
 * time, so that no other child loses the outer key's time before it: such a deferral is
 * short (the inner key's next unit, 50 ms at 20/s): one within the lead is waited in the
 * process (the processor lets one job per merchant do so, and parks the others behind it);
 * a longer one parks the job, as beyond the horizon.
 */
export function decideReservation(
  answer: LimiterAnswer,
  nowWallMs: number,
  timing: Timing,
  keyList = false,
): ReservationDecision {
  if (!answer.ok) {
    if (keyList && answer.reason !== 'table-full' && answer.delayMs <= timing.leadMs) {
      return { action: 'ask-again', waitMs: Math.max(answer.delayMs, 1) }
    }
    if (answer.reason !== 'table-full') return { action: 'park', dueInMs: answer.delayMs }
    return { action: 'defer', delayUntilWallMs: nowWallMs + Math.max(answer.delayMs, MIN_DEFER_MS) }
  }
  if (answer.delayMs > timing.horizonMs) return { action: 'park', dueInMs: answer.delayMs - timing.horizonMs }
  if (answer.delayMs < 1) return { action: 'run' }
  if (answer.delayMs <= timing.leadMs) return { action: 'wait', waitMs: answer.delayMs }
  const reservedAtWallMs = nowWallMs + answer.delayMs
  return { action: 'delay', reservedAtWallMs, delayUntilWallMs: reservedAtWallMs - timing.leadMs }
}
