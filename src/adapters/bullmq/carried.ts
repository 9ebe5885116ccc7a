import { createHmac, timingSafeEqual } from 'node:crypto'

/**
 * THROTTLE_FIELD is the one field of `job.data` the adapter writes: the reservation a
 * delayed job carries back to whichever worker picks it up, or the mark of a job parked
 * in its merchant's backlog. Handlers see it and should leave it alone.
 */
export const THROTTLE_FIELD = '__throttle'

/**
 * CarriedReservation is a reservation stored on a delayed job. It is good for one run:
 * the run with the same `attemptsMade`, on the first fetch after the job was moved to
 * delayed (`attemptsStarted + 1`). A later fetch of the same job (after a crash and
 * stalled-job recovery, or after a RetryLaterError) is a new run and is charged again.
 */
export interface CarriedReservation {
  /** reservedAtWallMs is when the job may start, in wall-clock ms since the epoch of the reserving host. */
  reservedAtWallMs: number
  /** attemptsMade is the job's attemptsMade when the reservation was made. */
  attemptsMade: number
  /** attemptsStarted is the job's attemptsStarted when it was moved to delayed. */
  attemptsStarted: number
  /** cost is the number of tokens the reservation holds. */
  cost: number
  /**
   * held is true when the job came back on time and could not start (its merchant at its
   * in-flight cap, or its breaker open): its tokens were spent on it, so it runs on them
   * when it comes back, however late, instead of being charged again.
   */
  held?: boolean
  /** mac signs the fields above and the job's id with the workers' reservation key (see signCarried). */
  mac?: string
}

/** ParkedMark is what a job parked in its merchant's backlog carries instead of a reservation. */
export interface ParkedMark {
  /** parkedAtWallMs is when the job was parked, in wall-clock ms. */
  parkedAtWallMs: number
}

/** readCarried returns the reservation stored on `data`, or undefined when there is none or it is malformed. */
export function readCarried(data: unknown): CarriedReservation | undefined {
  if (!isPlainObject(data)) return undefined
  const carried = data[THROTTLE_FIELD]
  if (!isPlainObject(carried)) return undefined
  const { reservedAtWallMs, attemptsMade, attemptsStarted, cost, held, mac } = carried
  if (
    !Number.isFinite(reservedAtWallMs) ||
    !Number.isInteger(attemptsMade) ||
    !Number.isInteger(attemptsStarted) ||
    !Number.isFinite(cost) ||
    (held !== undefined && typeof held !== 'boolean') ||
    (mac !== undefined && typeof mac !== 'string')
  ) {
    return undefined
  }
  const result: CarriedReservation = {
    reservedAtWallMs: reservedAtWallMs as number,
    attemptsMade: attemptsMade as number,
    attemptsStarted: attemptsStarted as number,
    cost: cost as number,
  }
  if (held === true) result.held = true
  if (mac !== undefined) result.mac = mac as string
  return result
}

/** readParked returns the mark of a job parked in its merchant's backlog, or undefined. */
export function readParked(data: unknown): ParkedMark | undefined {
  if (!isPlainObject(data)) return undefined
  const mark = data[THROTTLE_FIELD]
  if (!isPlainObject(mark) || !Number.isFinite(mark.parkedAtWallMs)) return undefined
  return { parkedAtWallMs: mark.parkedAtWallMs as number }
}

/**
 * withCarried returns a copy of `data` carrying `carried` (or a parked mark) as its last
 * field, or undefined when `data` is not a plain object (a string, an array, null): such
 * a job cannot carry a reservation. The field is last so that the promotion script can
 * replace a parked mark at the end of the stored JSON without parsing the rest.
 */
export function withCarried(
  data: unknown,
  carried: CarriedReservation | ParkedMark,
): Record<string, unknown> | undefined {
  if (!isPlainObject(data)) return undefined
  const { [THROTTLE_FIELD]: _previous, ...rest } = data
  return { ...rest, [THROTTLE_FIELD]: carried }
}

/**
 * signCarried returns `carried` with its mac: HMAC-SHA256 under `key` over the job's id,
 * the reserved time, both attempt counters, the cost and `held`. A producer that can write
 * job data but not read the workers' key cannot make a reservation the workers accept.
 */
export function signCarried(key: Buffer, jobId: string, carried: CarriedReservation): CarriedReservation {
  const { mac: _mac, ...fields } = carried
  return { ...fields, mac: macOf(key, jobId, fields) }
}

/** verifyCarried says whether `carried.mac` is the mac of `carried` for `jobId` under `key`. */
export function verifyCarried(key: Buffer, jobId: string, carried: CarriedReservation): boolean {
  if (carried.mac === undefined) return false
  const expected = Buffer.from(macOf(key, jobId, carried))
  const got = Buffer.from(carried.mac)
  return expected.length === got.length && timingSafeEqual(expected, got)
}

function macOf(key: Buffer, jobId: string, carried: CarriedReservation): string {
  const text = [
    jobId,
    carried.reservedAtWallMs,
    carried.attemptsMade,
    carried.attemptsStarted,
    carried.cost,
    carried.held === true ? 'held' : '',
  ].join('\n')
  return createHmac('sha256', key).update(text).digest('base64url')
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}
