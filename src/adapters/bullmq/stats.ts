/**
 * ThrottleOutcome is what the throttled processor did with one job fetch:
 * - `granted`: charged, ran at once.
 * - `waited`: charged, waited a short delay (at most the lead) in the process, then ran.
 * - `delayed`: charged, moved to delayed carrying its reservation.
 * - `reused`: ran on the reservation it carried, not charged again.
 * - `redelayed`: came back far earlier than its reservation; delayed again, keeping it.
 * - `late`: came back later than the late tolerance after its reservation (behind a long
 *   wait list, or after a pause of the workers); its slot has passed, so it is charged
 *   again and reported a second time with the outcome of that charge. It may start after
 *   jobs of its merchant added after it.
 * - `deferred`: nothing reserved (table full, the job's data cannot carry a reservation,
 *   or its key list's next unit is further than the lead); moved to delayed to ask again later.
 * - `asked-again`: nothing reserved, its key list's next unit within the lead: waited in the
 *   process and asked again (reported once per wait).
 * - `backlogged`: its tokens are further than the horizon, or its merchant has parked jobs
 *   before it; parked in the merchant's backlog, not charged.
 * - `promoted`: a parked job was promoted from its merchant's backlog by this process,
 *   charged and delayed on a reservation (counted when promoted, not fetched).
 * - `retry-later`: the handler threw RetryLaterError; the merchant was penalized and the
 *   job delayed by the asked time without spending an attempt.
 * - `parked`: its merchant was at its in-flight cap; moved to delayed for `parkMs`, not
 *   charged and spending no attempt, and promoted when one of the merchant's jobs
 *   finishes in this process.
 * - `parked-fair`: the worker was saturated and its merchant held its fair share of the
 *   slots; parked like `parked`.
 * - `breaker-open`: the merchant's circuit breaker is open (or its half-open probe is out);
 *   moved to delayed until the breaker lets a call through, not attempted, not charged.
 * - `invalid-key`: no valid merchant key; failed unrecoverably.
 * - `invalid-cost`: `cost(job)` was not a number of tokens the merchant's bucket can ever hold; failed unrecoverably.
 */
export type ThrottleOutcome =
  | 'granted'
  | 'waited'
  | 'delayed'
  | 'reused'
  | 'redelayed'
  | 'late'
  | 'deferred'
  | 'asked-again'
  | 'backlogged'
  | 'promoted'
  | 'retry-later'
  | 'parked'
  | 'parked-fair'
  | 'breaker-open'
  | 'invalid-key'
  | 'invalid-cost'

/** ThrottleEvent reports one outcome, for metrics and tracing. */
export interface ThrottleEvent {
  outcome: ThrottleOutcome
  jobId: string | undefined
  /** merchantKey is undefined for `invalid-key`. */
  merchantKey: string | undefined
  /** delayMs is how long the job waits before it runs or asks again, in ms; 0 when it runs now or fails. */
  delayMs: number
}

/** ThrottleStats counts outcomes since the processor was created. */
export type ThrottleStats = Record<ThrottleOutcome, number>

/** ThrottleCounters counts outcomes and forwards each one to an optional listener. */
export class ThrottleCounters {
  private readonly counts: ThrottleStats = {
    granted: 0,
    waited: 0,
    delayed: 0,
    reused: 0,
    redelayed: 0,
    late: 0,
    deferred: 0,
    'asked-again': 0,
    backlogged: 0,
    promoted: 0,
    'retry-later': 0,
    parked: 0,
    'parked-fair': 0,
    'breaker-open': 0,
    'invalid-key': 0,
    'invalid-cost': 0,
  }

  constructor(private readonly onEvent: ((event: ThrottleEvent) => void) | undefined) {}

  record(event: ThrottleEvent): void {
    this.counts[event.outcome]++
    this.onEvent?.(event)
  }

  snapshot(): ThrottleStats {
    return { ...this.counts }
  }
}
