/** Granted is a reservation that holds tokens: run the work after `delayMs`. */
export interface Granted {
  readonly ok: true
  readonly key: string
  readonly cost: number
  /** delayMs is how long to wait before running, in ms; 0 means now. */
  readonly delayMs: number
  /** reservedAtMs is when the work may run, on the limiter's clock. */
  readonly reservedAtMs: number
  /**
   * cancel gives the reservation up and returns true; later calls do nothing and return
   * false. As in Go's x/time/rate, a reservation whose time has passed gets nothing
   * back (its slot has been, whether the work ran or not), and one still ahead gets
   * back only the part of its span that no later reservation has been scheduled behind:
   * all of it for the latest one, nothing for one with at least its cost reserved after
   * it. Cancel only work that has not run. The bucket never holds more than its
   * capacity, and a Retry-After stands.
   */
  cancel(): boolean
}

/** DeferReason says why a reservation was not made. */
export type DeferReason = 'beyond-horizon' | 'table-full'

/** Deferred is a reservation that was not made: nothing is held; ask again after `delayMs`. */
export interface Deferred {
  readonly ok: false
  readonly delayMs: number
  readonly reason: DeferReason
}

/** Reservation is the answer of reserve. */
export type Reservation = Granted | Deferred

/**
 * GrantedReservation is a Granted that remembers, on the limiter's internal timeline,
 * where it sits, so that cancel can give back no more than it still holds.
 */
export class GrantedReservation implements Granted {
  readonly ok = true
  private cancelled = false

  constructor(
    readonly key: string,
    readonly cost: number,
    readonly delayMs: number,
    readonly reservedAtMs: number,
    /** atMs is reservedAtMs in ms since `epochMs`. */
    readonly atMs: number,
    /** spanMs is how far the reservation moved its bucket's arrival time. */
    readonly spanMs: number,
    /** endMs is the bucket's arrival time less its tolerance just after this reservation, since `epochMs`. */
    readonly endMs: number,
    /** epochMs is the limiter's epoch when the reservation was made. */
    readonly epochMs: number,
    private readonly refund: (reservation: GrantedReservation) => void,
  ) {}

  cancel(): boolean {
    if (this.cancelled) return false
    this.cancelled = true
    this.refund(this)
    return true
  }
}
