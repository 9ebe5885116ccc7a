/** Granted is a reservation that holds tokens: run the work after `delayMs`. */
export interface Granted {
  readonly ok: true
  /** key is the innermost key of the reservation (the only one, for a single key). */
  readonly key: string
  /** keys are all the keys the reservation was asked for, outermost first ([key] for a single key). */
  readonly keys: readonly string[]
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

/**
 * DeferReason says why a reservation was not made. `parent-share`: a child of a parent
 * whose limit binds has taken its fair share for now (see KeyedLimiter.setWeight); ask
 * again after delayMs, as for `beyond-horizon`.
 */
export type DeferReason = 'beyond-horizon' | 'table-full' | 'parent-share'

/** Deferred is a reservation that was not made: nothing is held; ask again after `delayMs`. */
export interface Deferred {
  readonly ok: false
  readonly delayMs: number
  readonly reason: DeferReason
  /** bindingKey is the key whose limit set the wait, when known (always, for a list of keys). */
  readonly bindingKey?: string
}

/** Reservation is the answer of reserve. */
export type Reservation = Granted | Deferred

/**
 * GrantedReservation is a Granted that remembers, on the limiter's internal timeline,
 * where it sits, so that cancel can give back no more than it still holds.
 */
export class GrantedReservation implements Granted, HeldReservation {
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
    /** extra is, for a key of several windows, intervalMs, spanMs and endMs of each window after the first, in threes. */
    readonly extra: Float64Array | undefined,
    private readonly refund: (reservation: GrantedReservation) => void,
  ) {}

  /** layers is undefined: a single key's reservation holds one part. */
  get layers(): readonly HeldReservation[] | undefined {
    return undefined
  }

  get keys(): readonly string[] {
    return [this.key]
  }

  cancel(): boolean {
    if (this.cancelled) return false
    this.cancelled = true
    this.refund(this)
    return true
  }
}

/**
 * LayeredReservation is a Granted for a list of keys: its own fields are the innermost
 * key's part, `layers` the parts of the outer keys it charged (a parent without a rate of
 * its own is not charged, so has none). cancel gives each part back by the single-key rule.
 */
export class LayeredReservation implements Granted, HeldReservation {
  readonly ok = true
  private cancelled = false

  constructor(
    readonly keys: readonly string[],
    readonly cost: number,
    readonly delayMs: number,
    readonly reservedAtMs: number,
    private readonly inner: HeldReservation,
    readonly layers: readonly HeldReservation[],
    private readonly refund: (reservation: HeldReservation) => void,
  ) {}

  get key(): string {
    return this.inner.key
  }
  get atMs(): number {
    return this.inner.atMs
  }
  get spanMs(): number {
    return this.inner.spanMs
  }
  get endMs(): number {
    return this.inner.endMs
  }
  get epochMs(): number {
    return this.inner.epochMs
  }
  get extra(): Float64Array | undefined {
    return this.inner.extra
  }

  cancel(): boolean {
    if (this.cancelled) return false
    this.cancelled = true
    this.refund(this)
    return true
  }
}

/** ROW_NUMBERS is how many numbers a ReservationBook row holds: atMs, spanMs, endMs, epochMs (see HeldReservation). */
const ROW_NUMBERS = 4

/**
 * reservedTime is the clock time of a reservation `atMs` after `epochMs`. Far from 0 the
 * clock's own rounding is coarser than a unit at a fast rate: the time is never rounded early.
 */
export function reservedTime(epochMs: number, atMs: number): number {
  const reservedAtMs = epochMs + atMs
  return reservedAtMs - epochMs < atMs ? reservedAtMs + Math.abs(reservedAtMs) * Number.EPSILON : reservedAtMs
}

/**
 * ReservationBook holds granted reservations as rows of one packed Float64Array (where
 * each sits on the limiter's timeline, its time read from that) beside its key, for a
 * caller that holds many at once, such as a Kafka consumer with one reservation per
 * waiting lane: about 40 bytes a row, where a Granted object and its numbers cost about 200. A row is
 * taken by KeyedLimiter.reserveIn and given back by KeyedLimiter.cancelIn or release; its
 * number is only valid until then (rows are reused).
 */
export class ReservationBook {
  /** lastDelayMs is the delay of the reservation reserveIn made last, in ms (0: now). */
  lastDelayMs = 0
  private keys: (string | undefined)[] = []
  /** extras holds the rows of keys of several windows: their HeldReservation.extra. */
  private readonly extras = new Map<number, Float64Array>()
  /** layers holds the rows reserved for a list of keys: the outer keys' parts (HeldReservation.layers). */
  private readonly layers = new Map<number, readonly HeldReservation[]>()
  private numbers = new Float64Array(ROW_NUMBERS * 16)
  private readonly freeRows: number[] = []
  private held = 0

  /** size is the number of rows held. */
  get size(): number {
    return this.held
  }

  /** holds says whether `row` is held (taken and not given back). */
  holds(row: number): boolean {
    return this.keys[row] !== undefined
  }

  /** reservedAtMs is when the row's work may run, on the limiter's clock. */
  reservedAtMs(row: number): number {
    const at = row * ROW_NUMBERS
    return reservedTime(this.numbers[at + 3]!, this.numbers[at]!)
  }

  /** release gives the row back without refunding anything (the work ran, or the time passed). */
  release(row: number): void {
    if (this.keys[row] === undefined) return
    this.keys[row] = undefined
    if (this.extras.size !== 0) this.extras.delete(row)
    if (this.layers.size !== 0) this.layers.delete(row)
    this.freeRows.push(row)
    this.held--
  }

  /** take records a reservation (KeyedLimiter.reserveIn's half) and returns its row. */
  take(key: string, delayMs: number, held: Omit<HeldReservation, 'key'>): number {
    const row = this.freeRows.pop() ?? this.keys.length
    if ((row + 1) * ROW_NUMBERS > this.numbers.length) {
      const grown = new Float64Array(this.numbers.length * 2)
      grown.set(this.numbers)
      this.numbers = grown
    }
    this.keys[row] = key
    const at = row * ROW_NUMBERS
    const numbers = this.numbers
    numbers[at] = held.atMs
    numbers[at + 1] = held.spanMs
    numbers[at + 2] = held.endMs
    numbers[at + 3] = held.epochMs
    if (held.extra !== undefined) this.extras.set(row, held.extra)
    if (held.layers !== undefined) this.layers.set(row, held.layers)
    this.lastDelayMs = delayMs
    this.held++
    return row
  }

  /** heldAt reads a held row's place on the limiter's timeline (KeyedLimiter.cancelIn's half). */
  heldAt(row: number): HeldReservation | undefined {
    const key = this.keys[row]
    if (key === undefined) return undefined
    const at = row * ROW_NUMBERS
    const numbers = this.numbers
    return {
      key,
      atMs: numbers[at]!,
      spanMs: numbers[at + 1]!,
      endMs: numbers[at + 2]!,
      epochMs: numbers[at + 3]!,
      extra: this.extras.size === 0 ? undefined : this.extras.get(row),
      layers: this.layers.size === 0 ? undefined : this.layers.get(row),
    }
  }
}

/** HeldReservation is where a granted reservation sits on the limiter's timeline (see GrantedReservation). */
export interface HeldReservation {
  readonly key: string
  /** atMs is the reserved time in ms since `epochMs`. */
  readonly atMs: number
  /** spanMs is how far the reservation moved its bucket's arrival time. */
  readonly spanMs: number
  /** endMs is the bucket's arrival time less its tolerance just after this reservation, since `epochMs`. */
  readonly endMs: number
  /** epochMs is the limiter's epoch when the reservation was made. */
  readonly epochMs: number
  /** extra is, for a key of several windows, intervalMs, spanMs and endMs of each window after the first, in threes. */
  readonly extra: Float64Array | undefined
  /** layers are, for a reservation of a list of keys, the parts of the outer keys it charged. */
  readonly layers?: readonly HeldReservation[] | undefined
}
