import { type Job, Queue, Worker } from 'bullmq'
import { afterEach, describe, expect, it } from 'vitest'
import { createThrottledProcessor, type ThrottleOptions } from '../../../src/adapters/bullmq/index.js'
import { RetryLaterError } from '../../../src/errors.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { redisUrl, uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import { connectionOf } from './support.js'

const connection = connectionOf(redisUrl())
const cleanups: Array<() => Promise<unknown>> = []

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** setup starts a plain BullMQ Worker running `handler` through createThrottledProcessor. */
async function setup(
  rate: string,
  handler: (job: Job, token?: string, signal?: AbortSignal) => Promise<unknown>,
  options: Partial<ThrottleOptions<unknown, unknown, string>> = {},
) {
  const queue = new Queue(uniqueName('throttle-proc'), { connection })
  const limiter = new KeyedLimiter({ rate })
  const counted = { grants: 0 }
  const processor = createThrottledProcessor(handler, {
    limiter: {
      reserve: (key, cost) => {
        const reservation = limiter.reserve(key, cost)
        if (reservation.ok) counted.grants++
        return reservation
      },
      penalize: (key, retryAfterMs) => limiter.penalize(key, retryAfterMs),
    },
    ...options,
  })
  const worker = new Worker(queue.name, processor, { connection, concurrency: 20 })
  const failed: Array<{ job: Job | undefined; error: Error }> = []
  worker.on('failed', (job, error) => failed.push({ job, error }))
  cleanups.push(async () => {
    await worker.close()
    await queue.obliterate({ force: true })
    await queue.close()
  })
  await worker.waitUntilReady()
  return { queue, limiter, counted, processor, failed }
}

describe('createThrottledProcessor', () => {
  it('fails a job without a valid merchant key at once, unrecoverably, saying what is wrong', async () => {
    const runs: string[] = []
    const { queue, processor } = await setup('600/min', async (job) => runs.push(job.id!))
    const bad = [{ note: 'no merchant' }, { merchantId: 42 }, { merchantId: 'has space' }, { merchantId: '' }]
    await queue.addBulk(bad.map((data) => ({ name: 'pay', data, opts: { attempts: 5 } })))
    await waitFor('4 failed jobs', async () => (await queue.getJobCountByTypes('failed')) === 4, 5_000, 20)
    const reasons = (await queue.getJobs(['failed']))
      .map((job) => [job.failedReason, job.attemptsMade])
      .sort()
    expect(reasons).toEqual([
      ['invalid merchant key: contains characters outside [A-Za-z0-9-_.:@/+=] (job.data.merchantId)', 1],
      ['invalid merchant key: empty (job.data.merchantId)', 1],
      ['invalid merchant key: expected a string, got number (job.data.merchantId)', 1],
      ['invalid merchant key: missing (job.data.merchantId)', 1],
    ])
    expect(runs).toEqual([])
    expect(processor.stats()['invalid-key']).toBe(4)
    expect(await queue.getJobCounts('wait', 'delayed', 'active')).toEqual({ wait: 0, delayed: 0, active: 0 })
  })

  it('on RetryLaterError, penalizes the merchant and delays the job by the asked time without spending an attempt', async () => {
    const runs: Array<{ atMs: number; attemptsMade: number }> = []
    const { queue, limiter, counted, processor, failed } = await setup('600/min burst 5', async (job) => {
      runs.push({ atMs: performance.now(), attemptsMade: job.attemptsMade })
      if (runs.length === 1) throw new RetryLaterError(400)
    })
    await queue.add('pay', { merchantId: 'm-429' }, { attempts: 1 })
    await waitFor(
      'the job completed',
      async () => (await queue.getJobCountByTypes('completed')) === 1,
      5_000,
      20,
    )
    expect(runs).toHaveLength(2)
    expect(runs[1]!.atMs - runs[0]!.atMs).toBeGreaterThanOrEqual(390)
    expect(runs.map((run) => run.attemptsMade)).toEqual([0, 0])
    expect(failed).toEqual([])
    expect(limiter.inspect('m-429')?.penaltyFactor).toBe(0.5)
    expect(processor.stats()['retry-later']).toBe(1)
    // Each run is charged once: the retry is a new run.
    expect(counted.grants).toBe(2)
  })

  it('leaves other handler errors to BullMQ attempts, and charges the retried run again', async () => {
    const attempts: number[] = []
    const { queue, counted, failed } = await setup('600/min burst 5', async (job) => {
      attempts.push(job.attemptsMade)
      if (attempts.length === 1) throw new Error('PSP timed out')
    })
    await queue.add('pay', { merchantId: 'm-retry' }, { attempts: 2 })
    await waitFor(
      'the job completed',
      async () => (await queue.getJobCountByTypes('completed')) === 1,
      5_000,
      20,
    )
    expect(attempts).toEqual([0, 1])
    expect(failed.map((f) => f.error.message)).toEqual(['PSP timed out'])
    expect(counted.grants).toBe(2)
  })

  it('a delayed job promoted long before its reservation is delayed again, keeps its reservation, and is not charged twice', async () => {
    const starts = new Map<number, number>()
    const { queue, counted, processor } = await setup('60/min burst 1', async (job) => {
      starts.set(job.data.i, performance.now())
    })
    await queue.addBulk([0, 1].map((i) => ({ name: 'pay', data: { merchantId: 'm-early', i } })))
    await waitFor(
      'the second job delayed',
      async () => (await queue.getJobCountByTypes('delayed')) === 1,
      5_000,
      20,
    )
    const [delayed] = await queue.getJobs(['delayed'])
    await delayed!.promote()
    await waitFor('both jobs started', () => starts.size === 2, 5_000, 20)
    expect(starts.get(1)! - starts.get(0)!).toBeGreaterThanOrEqual(990)
    expect(starts.get(1)! - starts.get(0)!).toBeLessThanOrEqual(1_100)
    expect(processor.stats().redelayed).toBe(1)
    expect(processor.stats().reused).toBe(1)
    expect(counted.grants).toBe(2)
  })

  it('a job whose data cannot carry a reservation gives the tokens back and asks again, never running early', async () => {
    const starts: number[] = []
    const { queue, processor } = await setup(
      '120/min burst 1',
      async () => {
        starts.push(performance.now())
      },
      { keyOf: (job: Job) => job.data },
    )
    await queue.addBulk([0, 1, 2].map(() => ({ name: 'pay', data: 'm-string' })))
    await waitFor('three jobs started', () => starts.length === 3, 10_000, 20)
    const sorted = starts.sort((a, b) => a - b)
    expect(sorted[1]! - sorted[0]!).toBeGreaterThanOrEqual(490)
    expect(sorted[2]! - sorted[1]!).toBeGreaterThanOrEqual(490)
    expect(processor.stats().deferred).toBeGreaterThanOrEqual(2)
    expect(processor.stats().delayed).toBe(0)
  })

  it("passes BullMQ's AbortSignal to a handler that takes a third parameter, and only then", async () => {
    const signals: unknown[] = []
    const withSignal = await setup('600/min', async (_job, _token, signal) => signals.push(signal))
    await withSignal.queue.add('pay', { merchantId: 'm-signal' })
    await waitFor('the job run', () => signals.length === 1, 5_000, 20)
    expect(signals[0]).toBeInstanceOf(AbortSignal)
    expect(withSignal.processor.length).toBe(3)
    const without = await setup('600/min', async () => undefined)
    expect(without.processor.length).toBe(2)
  })
})
