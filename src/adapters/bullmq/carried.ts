/**
 * THROTTLE_FIELD is the one field of `job.data` the adapter writes: the reservation a
 * delayed job carries back to whichever worker picks it up. Handlers see it and should
 * leave it alone.
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
}

/** readCarried returns the reservation stored on `data`, or undefined when there is none or it is malformed. */
export function readCarried(data: unknown): CarriedReservation | undefined {
  if (!isPlainObject(data)) return undefined
  const carried = data[THROTTLE_FIELD]
  if (!isPlainObject(carried)) return undefined
  const { reservedAtWallMs, attemptsMade, attemptsStarted, cost } = carried
  if (
    !Number.isFinite(reservedAtWallMs) ||
    !Number.isInteger(attemptsMade) ||
    !Number.isInteger(attemptsStarted) ||
    !Number.isFinite(cost)
  ) {
    return undefined
  }
  return {
    reservedAtWallMs: reservedAtWallMs as number,
    attemptsMade: attemptsMade as number,
    attemptsStarted: attemptsStarted as number,
    cost: cost as number,
  }
}

/**
 * withCarried returns a copy of `data` carrying `carried`, or undefined when `data` is
 * not a plain object (a string, an array, null): such a job cannot carry a reservation.
 */
export function withCarried(data: unknown, carried: CarriedReservation): Record<string, unknown> | undefined {
  if (!isPlainObject(data)) return undefined
  return { ...data, [THROTTLE_FIELD]: carried }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}
