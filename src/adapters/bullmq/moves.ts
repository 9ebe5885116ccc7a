import type { Job } from 'bullmq'
import type { RedisScripting } from './backlog-store.js'

/**
 * The parts of a BullMQ 6.7 Job (and Worker) the adapter reaches behind its public API,
 * pinned by the integration tests: `backend.moveToDelayed` takes the fields to write in
 * the same script that moves the job (Job.moveToDelayed passes none), and `backend.queue`
 * holds the client and the keys the backlog's scripts run against.
 */
interface JobInternals {
  backend: {
    moveToDelayed(
      jobId: string,
      timestampMs: number,
      delayMs: number,
      token: string,
      opts: { skipAttempt: boolean; fieldsToUpdate?: Record<string, string> },
    ): Promise<unknown>
    queue: JobQueue
  }
}

/** JobQueue is what a job's queue gives the backlog store: its client and keys. */
export interface JobQueue {
  client: Promise<RedisScripting>
  toKey(type: string): string
}

/**
 * moveToDelayed moves `job` (held with `token`) to delayed until `untilWallMs`, spending no
 * attempt, and writes `data` as its data in the same atomic step when given: either both
 * happen or neither, so a reservation written on the job is never left without the move.
 */
export async function moveToDelayed(
  job: Job,
  token: string,
  nowWallMs: number,
  untilWallMs: number,
  data?: Record<string, unknown>,
): Promise<void> {
  const internals = job as unknown as JobInternals
  const fieldsToUpdate = data === undefined ? undefined : { data: JSON.stringify(data) }
  await internals.backend.moveToDelayed(job.id!, nowWallMs, Math.max(0, untilWallMs - nowWallMs), token, {
    skipAttempt: true,
    fieldsToUpdate,
  })
  if (data !== undefined) job.data = data
}

/** queueOf is the queue `job` (or a Worker or Queue) belongs to: its client and keys. */
export function queueOf(jobOrWorker: object): JobQueue {
  return (jobOrWorker as unknown as JobInternals).backend.queue
}
