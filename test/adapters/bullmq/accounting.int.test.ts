// Regression tests for issue 15 (exact accounting), items 1, 9 and 11, on the BullMQ adapter.
import { setTimeout as sleep } from 'node:timers/promises'
import { type Job, Queue, Worker } from 'bullmq'
import { afterEach, describe, expect, it } from 'vitest'
import {
  type BreakerGate,
  createThrottledProcessor,
  THROTTLE_FIELD,
  type ThrottleOptions,
} from '../../../src/adapters/bullmq/index.js'
import { InFlightTable, KeyedLimiter } from '../../../src/limiter/index.js'
import { redisUrl, uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import { connectionOf, removeBacklogKeys } from './support.js'

const connection = connectionOf(redisUrl())
const cleanups: Array<() => Promise<unknown>> = []

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/**
 * setup runs `handler` through createThrottledProcessor on a plain Worker, counting the
 * tokens charged: reservations granted and not given back.
 */
async function setup(
  rate: string,
  handler: (job: Job, token?: string, signal?: AbortSignal) => Promise<unknown>,
  options: Partial<ThrottleOptions<unknown, unknown, string>> = {},
  concurrency = 20,
) {
  const queue = new Queue(uniqueName('throttle-accounting'), { connection })
  const limiter = new KeyedLimiter({ rate })
  const counted = { charges: 0 }
  const processor = createThrottledProcessor(handler, {
    limiter: {
      reserve: (key, cost) => {
        const reservation = limiter.reserve(key, cost)
        if (!reservation.ok) return reservation
        counted.charges++
        const cancel = () => {
          const cancelled = reservation.cancel()
          if (cancelled) counted.charges--
          return cancelled
        }
        return { ...reservation, cancel }
      },
      penalize: (key, retryAfterMs) => limiter.penalize(key, retryAfterMs),
    },
    ...options,
  })
  const worker = new Worker(queue.name, processor, { connection, concurrency })
  cleanups.push(async () => {
    processor.close()
    await worker.close(true)
    await removeBacklogKeys(queue)
    await queue.obliterate({ force: true })
    await queue.close()
  })
  await worker.waitUntilReady()
  return { queue, limiter, counted, processor, worker }
}

describe('exact accounting on BullMQ (issue 15)', () => {
  // In the item 1 cases the first job runs alone first, so that the next two are fetched while
  // the merchant's slot is free and its breaker closed: each is charged and delayed on a
  // reservation. What happens when they come back is the case.
  it('charged twice (item 1): a delayed job back on time at its merchant’s in-flight cap keeps its reservation — 3 jobs, 3 charges', async () => {
    const inFlight = new InFlightTable(1)
    const runs: number[] = []
    const { queue, counted, processor } = await setup(
      '4/s burst 1',
      async (job) => {
        runs.push(job.data.i)
        // The second holds the slot while the third comes back for its reservation.
        await sleep(job.data.i === 1 ? 1_000 : 10)
      },
      { inFlight },
    )
    await queue.add('pay', { merchantId: 'm-cap', i: 0 })
    await waitFor('the first job done', () => runs.length === 1 && inFlight.count('m-cap') === 0, 5_000, 20)
    await queue.addBulk([1, 2].map((i) => ({ name: 'pay', data: { merchantId: 'm-cap', i } })))
    await waitFor('three jobs run', () => runs.length === 3, 10_000, 20)
    expect(processor.stats().parked).toBeGreaterThanOrEqual(1)
    expect(counted.charges).toBe(3)
  })

  it('charged twice (item 1): a delayed job back on time to an open breaker keeps its reservation — 3 jobs, 3 charges', async () => {
    const breaker = { openUntil: 0 }
    const breakers = {
      admit: () => {
        const retryInMs = breaker.openUntil - performance.now()
        return retryInMs > 0 ? { allowed: false, retryInMs } : { allowed: true }
      },
      release: () => undefined,
      success: () => undefined,
      failure: () => undefined,
    } as unknown as BreakerGate
    const runs: number[] = []
    const { queue, counted, processor } = await setup(
      '4/s burst 1',
      async (job) => {
        runs.push(job.data.i)
      },
      { breakers },
    )
    await queue.add('pay', { merchantId: 'm-breaker', i: 0 })
    await waitFor('the first job run', () => runs.length === 1, 5_000, 20)
    await queue.addBulk([1, 2].map((i) => ({ name: 'pay', data: { merchantId: 'm-breaker', i } })))
    await waitFor('two jobs delayed on reservations', () => processor.stats().delayed === 2, 5_000, 20)
    breaker.openUntil = performance.now() + 800
    await waitFor('three jobs run', () => runs.length === 3, 10_000, 20)
    expect(processor.stats()['breaker-open']).toBeGreaterThanOrEqual(2)
    expect(counted.charges).toBe(3)
  })

  it('charged twice (item 1): an in-process wait aborted before the run gives its tokens back, so the retry is the only charge', async () => {
    const runs: number[] = []
    // A lead of 2 s: the second job's wait for its token (1 s) is spent in the process.
    const { queue, counted, worker } = await setup(
      '1/s burst 1',
      async (job, _token, _signal) => {
        runs.push(job.data.i)
      },
      { leadMs: 2_000 },
    )
    await queue.add('pay', { merchantId: 'm-abort', i: 0 })
    await waitFor('the first job run', () => runs.length === 1, 5_000, 20)
    const second = await queue.add('pay', { merchantId: 'm-abort', i: 1 }, { attempts: 2, backoff: 0 })
    await waitFor('the second job waiting', async () => (await second.getState()) === 'active', 2_000, 20)
    await sleep(100)
    expect(worker.cancelJob(second.id!)).toBe(true)
    await waitFor('the retried job run', () => runs.length === 2, 5_000, 20)
    expect(counted.charges).toBe(2)
  })

  it('a forged reservation (item 9): job data carrying a made-up __throttle is charged when the workers sign theirs', async () => {
    const starts: number[] = []
    const { queue, counted } = await setup(
      '2/s burst 1',
      async () => {
        starts.push(performance.now())
      },
      { reservationKey: 'a secret the workers share, 32 bytes' },
    )
    const forged = { reservedAtWallMs: Date.now(), attemptsMade: 0, attemptsStarted: 0, cost: 1 }
    await queue.addBulk(
      [0, 1, 2].map((i) => ({ name: 'pay', data: { merchantId: 'm-forged', i, [THROTTLE_FIELD]: forged } })),
    )
    await waitFor('three jobs run', () => starts.length === 3, 10_000, 20)
    expect(counted.charges).toBe(3)
    const sorted = starts.sort((a, b) => a - b)
    expect(sorted[2]! - sorted[0]!).toBeGreaterThanOrEqual(900)
  })

  it('a forged reservation (item 9): without a key, a carried time further ahead than any worker reserves is ignored', async () => {
    const starts: number[] = []
    const { queue, counted } = await setup('600/min', async () => {
      starts.push(performance.now())
    })
    const farAhead = {
      reservedAtWallMs: Date.now() + 3_600_000,
      attemptsMade: 0,
      attemptsStarted: 0,
      cost: 1,
    }
    await queue.add('pay', { merchantId: 'm-far', [THROTTLE_FIELD]: farAhead })
    await waitFor('the job run', () => starts.length === 1, 5_000, 20)
    expect(counted.charges).toBe(1)
  })

  it('late reservations (item 11): after a pause of every worker, the merchant sees at most burst + rate × W', async () => {
    const starts: number[] = []
    const limitPerSec = 10
    const burst = 2
    const options = { horizonMs: 5_000 }
    const first = await setup(`${limitPerSec}/s burst ${burst}`, async () => undefined, options, 50)
    await first.queue.addBulk(
      Array.from({ length: 40 }, (_, i) => ({ name: 'pay', data: { merchantId: 'm-pause', i } })),
    )
    // Every job reserved and delayed; then every worker stops before they come back.
    await waitFor('the jobs reserved', () => first.processor.stats().delayed >= 34, 5_000, 20)
    await first.worker.close(true)
    await sleep(3_000)
    // The same process's limiter (a pause: Redis away, a long GC, workers paused), so the
    // reservations still ahead stand in its bucket.
    const limiter = first.limiter
    const processor = createThrottledProcessor(
      async () => {
        starts.push(performance.now())
      },
      { limiter, ...options },
    )
    const second = new Worker(first.queue.name, processor, { connection, concurrency: 50 })
    cleanups.push(async () => {
      processor.close()
      await second.close(true)
    })
    await waitFor('the jobs run after the pause', () => starts.length >= 30, 10_000, 20)
    const at = starts.sort((a, b) => a - b)
    let maxInOneSecond = 0
    for (let i = 0, j = 0; i < at.length; i++) {
      while (at[i]! - at[j]! >= 1_000) j++
      maxInOneSecond = Math.max(maxInOneSecond, i - j + 1)
    }
    // burst + rate × 1 s, and the late tolerance's worth (250 ms) of jobs run on their reservations.
    expect(maxInOneSecond).toBeLessThanOrEqual(burst + limitPerSec + Math.ceil(limitPerSec * 0.25))
    expect(processor.stats().late).toBeGreaterThan(0)
  })
})
