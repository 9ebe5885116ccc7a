import { randomUUID } from 'node:crypto'
import { type Job, Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { createThrottledWorker } from '../../../src/adapters/bullmq/index.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { redisUrl, uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import { connectionOf, gapsOf, medianOf } from './support.js'

const connection = connectionOf(redisUrl())
const cleanups: Array<() => Promise<unknown>> = []

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

function newQueue(prefix: string): Queue {
  const queue = new Queue(uniqueName(prefix), { connection })
  cleanups.push(async () => {
    await queue.obliterate({ force: true })
    await queue.close()
  })
  return queue
}

function track<W extends { close(): Promise<void> }>(worker: W): W {
  cleanups.push(() => worker.close())
  return worker
}

/**
 * countingLimiter passes calls to `limiter` and counts the reservations it grants and that
 * are not given back (a job parked in its backlog asks, then cancels at once).
 */
function countingLimiter(limiter: KeyedLimiter) {
  const counted = { grants: 0 }
  return {
    counted,
    limiter: {
      reserve: (key: string, cost?: number) => {
        const reservation = limiter.reserve(key, cost)
        if (!reservation.ok) return reservation
        counted.grants++
        const cancel = () => {
          const cancelled = reservation.cancel()
          if (cancelled) counted.grants--
          return cancelled
        }
        return { ...reservation, cancel }
      },
      penalize: (key: string, retryAfterMs: number) => limiter.penalize(key, retryAfterMs),
      setShare: (instances: number) => limiter.setShare(instances),
    },
  }
}

describe('createThrottledWorker', () => {
  it('paces 200 jobs of one merchant at 1200/min burst 10: 10 at once, then one every 50 ms, none lost', async () => {
    const queue = newQueue('throttle-pace')
    const { limiter, counted } = countingLimiter(new KeyedLimiter({ rate: '1200/min burst 10' }))
    const starts: Array<{ atMs: number; attemptsMade: number }> = []
    const outcomes: string[] = []
    const worker = track(
      createThrottledWorker(
        queue.name,
        async (job: Job) => {
          starts.push({ atMs: performance.now(), attemptsMade: job.attemptsMade })
        },
        {
          connection,
          limiter,
          concurrency: 200,
          onEvent: (event) => {
            if (event.merchantKey === 'm-pace') outcomes.push(event.outcome)
          },
        },
      ),
    )
    let failed = 0
    worker.on('failed', () => failed++)
    await worker.waitUntilReady()
    // A first job of another merchant warms the worker (scripts loaded into Redis, code paths compiled).
    await queue.add('warm-up', { merchantId: 'm-warm-up' })
    await waitFor('the warm-up job', () => starts.length === 1, 5_000, 20)
    starts.length = 0
    await queue.addBulk(
      Array.from({ length: 200 }, (_, i) => ({ name: 'pay', data: { merchantId: 'm-pace', i } })),
    )
    await waitFor(
      '200 completed jobs',
      async () => (await queue.getJobCountByTypes('completed')) === 201,
      30_000,
      20,
    )

    const at = starts.map((s) => s.atMs).sort((a, b) => a - b)
    const first = at[0]!
    // The burst: the first 10 are granted at once, not paced (paced, the 10th would start 450 ms
    // after the first). A loaded machine may fetch slowly enough for a token or two more.
    expect(outcomes.slice(0, 10)).toEqual(Array(10).fill('granted'))
    expect(at[9]! - first).toBeLessThan(450)
    // Never ahead of the rate: the k-th start (from 0) is no earlier than (k - 9) × 50 ms after the first.
    const ahead = at.filter((t, k) => k >= 10 && t - first < (k - 9) * 50 - 5)
    expect(ahead).toEqual([])
    const gaps = gapsOf(at.slice(9))
    expect(gaps).toHaveLength(190)
    expect(medianOf(gaps)).toBeGreaterThanOrEqual(40)
    expect(medianOf(gaps)).toBeLessThanOrEqual(60)
    expect(Math.abs(at[199]! - first - 9_500)).toBeLessThanOrEqual(9_500 * 0.05)
    expect(starts).toHaveLength(200)
    expect(starts.every((s) => s.attemptsMade === 0)).toBe(true)
    expect(failed).toBe(0)
    expect(await queue.getJobCounts('failed', 'delayed', 'wait', 'active')).toEqual({
      failed: 0,
      delayed: 0,
      wait: 0,
      active: 0,
    })
    const stats = worker.throttleStats()
    expect(counted.grants).toBe(201)
    expect(stats.granted + stats.waited + stats.delayed + stats.promoted).toBe(201)
    expect(stats.reused).toBe(stats.delayed + stats.promoted)
    // Past the 1 s horizon the jobs were parked in the merchant's backlog and promoted in order.
    expect(stats.promoted).toBeGreaterThan(150)
    // Completing counts as the one attempt; the delays spent none.
    const completed = await queue.getJobs(['completed'])
    expect(completed.filter((job) => job.attemptsMade !== 1)).toEqual([])
  })

  it('a rate change applies to jobs not yet reserved; delayed jobs keep their reservations and are charged once', async () => {
    const queue = newQueue('throttle-rate-change')
    const base = new KeyedLimiter({ rate: '600/min burst 1' })
    const { limiter, counted } = countingLimiter(base)
    const starts = new Map<number, number>()
    const worker = track(
      createThrottledWorker(
        queue.name,
        async (job: Job) => {
          starts.set(job.data.i, performance.now())
        },
        // A horizon long enough for every job of the first batch to be reserved at the old rate.
        { connection, limiter, concurrency: 100, horizonMs: 5_000 },
      ),
    )
    await worker.waitUntilReady()
    const batch = (from: number) =>
      Array.from({ length: 20 }, (_, k) => ({ name: 'pay', data: { merchantId: 'm-change', i: from + k } }))
    await queue.addBulk(batch(0))
    await waitFor('the first batch reserved', () => counted.grants === 20, 5_000, 20)
    base.setRate('m-change', '1200/min burst 1')
    await queue.addBulk(batch(20))
    await waitFor('40 jobs started', () => starts.size === 40, 20_000, 20)

    const startsOf = (from: number) =>
      Array.from({ length: 20 }, (_, k) => starts.get(from + k)!).sort((a, b) => a - b)
    const before = startsOf(0)
    const after = startsOf(20)
    // Reserved at 600/min (100 ms apart) before the change, and still run so.
    expect(medianOf(gapsOf(before))).toBeGreaterThanOrEqual(90)
    expect(medianOf(gapsOf(before))).toBeLessThanOrEqual(110)
    // Reserved after the change: 1200/min, 50 ms apart, queued behind the earlier reservations.
    expect(medianOf(gapsOf(after))).toBeGreaterThanOrEqual(40)
    expect(medianOf(gapsOf(after))).toBeLessThanOrEqual(60)
    expect(after[0]!).toBeGreaterThan(before[19]! + 20)
    const stats = worker.throttleStats()
    expect(counted.grants).toBe(40)
    expect(stats.reused).toBe(stats.delayed)
  })

  it('close lets in-flight jobs finish, those waiting in the process included, and loses none', async () => {
    const queue = newQueue('throttle-close')
    const runs = new Map<number, number>()
    const startedAtMs: number[] = []
    const handler = async (job: Job) => {
      runs.set(job.data.i, (runs.get(job.data.i) ?? 0) + 1)
      startedAtMs.push(performance.now())
    }
    const first = createThrottledWorker(queue.name, handler, {
      connection,
      limiter: new KeyedLimiter({ rate: '1200/min burst 1' }),
      concurrency: 50,
    })
    let failed = 0
    first.on('failed', () => failed++)
    await first.waitUntilReady()
    await queue.addBulk(
      Array.from({ length: 40 }, (_, i) => ({ name: 'pay', data: { merchantId: 'm-close', i } })),
    )
    await waitFor('10 jobs run', () => runs.size >= 10, 10_000, 20)
    const closingAtMs = performance.now()
    await first.close()
    // Jobs that were waiting in the process for their reserved time when close began ran before it returned.
    expect(startedAtMs.filter((at) => at > closingAtMs).length).toBeGreaterThan(0)
    const counts = await queue.getJobCounts('active', 'failed', 'completed', 'delayed', 'wait')
    expect(counts.active).toBe(0)
    expect(counts.failed).toBe(0)
    expect(counts.completed! + counts.delayed! + counts.wait!).toBe(40)
    expect(counts.completed).toBe(runs.size)

    // A worker started later (a fresh limiter, as in a restarted process) runs the rest on their reservations.
    const second = track(
      createThrottledWorker(queue.name, handler, {
        connection,
        limiter: new KeyedLimiter({ rate: '1200/min burst 1' }),
        concurrency: 50,
      }),
    )
    second.on('failed', () => failed++)
    await waitFor('all 40 jobs run', () => runs.size === 40, 10_000, 20)
    await waitFor('40 completed', async () => (await queue.getJobCountByTypes('completed')) === 40, 5_000, 20)
    expect([...runs.values()].every((n) => n === 1)).toBe(true)
    expect(failed).toBe(0)
    expect(second.throttleStats().reused).toBeGreaterThan(0)
  })

  it("instances 'auto' counts the workers on the queue, and each enforces its share", async () => {
    const queue = newQueue('throttle-auto')
    const start = () => {
      const limiter = new KeyedLimiter({ rate: '600/min' })
      const worker = createThrottledWorker(queue.name, async () => undefined, {
        connection,
        limiter,
        instances: 'auto',
        instancesRefreshMs: 100,
      })
      return { limiter, worker }
    }
    const a = start()
    const b = start()
    cleanups.push(() => a.worker.close())
    await waitFor(
      'both workers counting 2',
      () => a.worker.instanceShare().instances === 2 && b.worker.instanceShare().instances === 2,
      5_000,
      20,
    )
    expect(a.worker.instanceShare().source).toBe('counted')
    expect(a.limiter.rateOf('m1').limit).toBe(300)
    await b.worker.close()
    await waitFor(
      'the remaining worker counting 1',
      () => a.worker.instanceShare().instances === 1,
      5_000,
      20,
    )
    expect(a.limiter.rateOf('m1').limit).toBe(600)
  })

  it("instances 'auto' falls back to the configured count, and logs it, where CLIENT LIST is refused", async () => {
    const queue = newQueue('throttle-auto-acl')
    const admin = new Redis(redisUrl())
    const user = uniqueName('mt-no-client-list')
    const password = randomUUID()
    await admin.call('ACL', 'SETUSER', user, 'on', `>${password}`, '~*', '&*', '+@all', '-client|list')
    cleanups.push(async () => {
      await admin.call('ACL', 'DELUSER', user)
      admin.disconnect()
    })
    const logs: Array<{ msg: string }> = []
    const logger = pino({ level: 'warn' }, { write: (line: string) => logs.push(JSON.parse(line)) })
    const limiter = new KeyedLimiter({ rate: '600/min' })
    const worker = track(
      createThrottledWorker(queue.name, async () => undefined, {
        connection: { ...connection, username: user, password },
        limiter,
        logger,
        instances: 'auto',
        instancesFallback: 3,
        instancesRefreshMs: 100,
      }),
    )
    await waitFor(
      'the failed count logged',
      () => logs.some((line) => line.msg.startsWith('cannot count workers')),
      5_000,
      20,
    )
    expect(worker.instanceShare()).toEqual({ instances: 3, source: 'fallback' })
    expect(limiter.rateOf('m1').limit).toBe(200)
  })
})
