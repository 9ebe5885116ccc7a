import { type Job, Queue } from 'bullmq'
import { afterEach, describe, expect, it } from 'vitest'
import { createThrottledWorker, type ThrottledWorker } from '../../../src/adapters/bullmq/index.js'
import type { ThrottleEvent } from '../../../src/adapters/bullmq/stats.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { redisUrl, uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import { connectionOf, removeBacklogKeys } from './support.js'

const connection = connectionOf(redisUrl())
const cleanups: Array<() => Promise<unknown>> = []

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** Start is one run of a job: which job of which merchant, when (performance.now ms). */
interface Start {
  merchantId: string
  i: number
  atMs: number
}

/** setup starts a throttled worker at concurrency 50 that records each start and each throttle event. */
async function setup(rate: string, options: { overrides?: Record<string, string> } = {}) {
  const queue = new Queue(uniqueName('throttle-backlog'), { connection })
  const limiter = new KeyedLimiter({ rate })
  for (const [key, override] of Object.entries(options.overrides ?? {})) limiter.setRate(key, override)
  const starts: Start[] = []
  const events: Array<ThrottleEvent & { i?: number }> = []
  const worker: ThrottledWorker = createThrottledWorker(
    queue.name,
    async (job: Job) => {
      const { merchantId, i } = job.data as { merchantId: string; i: number }
      starts.push({ merchantId, i, atMs: performance.now() })
    },
    {
      connection,
      limiter,
      concurrency: 50,
      onEvent: (event) => events.push({ ...event, i: Number(event.jobId) - 1 }),
    },
  )
  cleanups.push(async () => {
    await worker.close()
    await removeBacklogKeys(queue)
    await queue.obliterate({ force: true })
    await queue.close()
  })
  await worker.waitUntilReady()
  const add = (merchantId: string, count: number, from = 0) =>
    queue.addBulk(
      Array.from({ length: count }, (_, k) => ({ name: 'pay', data: { merchantId, i: from + k } })),
    )
  const startsOf = (merchantId: string) => starts.filter((s) => s.merchantId === merchantId)
  return { queue, limiter, worker, starts, events, add, startsOf }
}

/** countIn counts the starts in [fromMs, toMs). */
function countIn(starts: readonly Start[], fromMs: number, toMs: number): number {
  return starts.filter((s) => s.atMs >= fromMs && s.atMs < toMs).length
}

/**
 * outOfOrder lists the starts of one merchant that came more than 300 ms before the start
 * of a job added earlier, leaving out the jobs of `exempt` (those that came back late:
 * charged again when they came, after jobs added after them). The slack is BullMQ's:
 * delayed jobs come back up to ~110 ms late (more on a loaded machine) and run on their
 * reservations up to the late tolerance (250 ms); and at concurrency > 1 BullMQ fetches
 * on two connections, so two jobs added together can reach the throttle in either order.
 */
function outOfOrder(starts: readonly Start[], exempt: ReadonlySet<number> = new Set()): Start[] {
  const byAdd = starts.filter((s) => !exempt.has(s.i)).sort((a, b) => a.i - b.i)
  let latestEarlier = Number.NEGATIVE_INFINITY
  const early: Start[] = []
  // In add order: a start more than 300 ms before the latest start of the jobs added before it.
  for (const s of byAdd) {
    if (s.atMs < latestEarlier - 300) early.push(s)
    latestEarlier = Math.max(latestEarlier, s.atMs)
  }
  return early
}

/** lateJobs is the set of `i` of the jobs reported late (job ids count from 1 in add order). */
function lateJobs(events: ReadonlyArray<ThrottleEvent & { i?: number }>): Set<number> {
  return new Set(events.filter((e) => e.outcome === 'late').map((e) => e.i!))
}

const MOVES: ReadonlySet<string> = new Set(['delayed', 'redelayed', 'deferred', 'backlogged', 'promoted'])

describe('standing backlogs on BullMQ', () => {
  it('a merchant hours over its rate: bounded moves per job, in order, quiet merchants unslowed, a raise felt within 2 s', async () => {
    const { add, worker, limiter, starts, events, startsOf } = await setup('10/s burst 1')
    await add('m-hot', 1_000)
    await waitFor('the hot backlog parked', () => worker.throttleStats().backlogged > 900, 15_000, 20)
    const quietAddedAt = performance.now()
    for (let q = 0; q < 20; q++) await add(`m-quiet-${q}`, 1)
    await waitFor('quiet jobs', () => starts.filter((s) => s.merchantId !== 'm-hot').length === 20, 5_000, 20)
    const quietLatency = Math.max(
      ...starts.filter((s) => s.merchantId !== 'm-hot').map((s) => s.atMs - quietAddedAt),
    )
    expect(quietLatency).toBeLessThan(1_000)

    const raisedAt = performance.now()
    limiter.setRate('m-hot', '100/s burst 1')
    worker.ratesChanged(['m-hot'])
    await new Promise((resolve) => setTimeout(resolve, 4_000))
    const hot = startsOf('m-hot')
    // Within 2 s of the raise the merchant runs at >= 90% of its new rate.
    const afterRaise = countIn(hot, raisedAt + 2_000, raisedAt + 4_000)
    expect(afterRaise).toBeGreaterThanOrEqual(0.9 * 100 * 2)
    // Never above the new rate: a window's starts are those reserved in it and up to the
    // late tolerance (250 ms) before it.
    expect(afterRaise).toBeLessThanOrEqual(1 + 100 * (2 + 0.25))
    expect(outOfOrder(hot, lateJobs(events))).toEqual([])
    // BullMQ puts a delayed job that comes due at the back of the wait list: the few
    // reserved while the 1,000 jobs were still being fetched came back late.
    expect(lateJobs(events).size).toBeLessThanOrEqual(20)

    // Moves (to delayed, parked, promoted) of the jobs delivered, per delivered job.
    const delivered = new Set(
      events.filter((e) => e.outcome === 'reused' || e.outcome === 'granted').map((e) => e.jobId),
    )
    const moves = events.filter((e) => MOVES.has(e.outcome) && delivered.has(e.jobId)).length
    expect(moves / delivered.size).toBeLessThanOrEqual(2)
    const waiting = worker.throttleStats().waiting['m-hot']!
    expect(waiting.jobs).toBeGreaterThan(1_000 - hot.length - 10)
    expect(waiting.jobs).toBeLessThanOrEqual(1_000 - hot.length)
    expect(waiting.oldestAgeMs).toBeGreaterThan(4_000)
    console.info(
      `backlog: quiet max ${quietLatency.toFixed(0)} ms, ${afterRaise / 2}/s 2-4 s after the raise, ${(moves / delivered.size).toFixed(2)} moves per job`,
    )
  })

  it('a cut reaches the backlog within the horizon and is never exceeded after it; a raise later is felt within 2 s', async () => {
    const { add, worker, limiter, startsOf, events } = await setup('40/s burst 1')
    await add('m-cut', 600)
    await waitFor('the merchant running', () => startsOf('m-cut').length >= 40, 5_000, 20)
    const cutAt = performance.now()
    limiter.setRate('m-cut', '5/s burst 1')
    worker.ratesChanged(['m-cut'])
    await new Promise((resolve) => setTimeout(resolve, 4_000))
    const raisedAt = performance.now()
    limiter.setRate('m-cut', '50/s burst 1')
    worker.ratesChanged(['m-cut'])
    await new Promise((resolve) => setTimeout(resolve, 4_000))
    const runs = startsOf('m-cut')
    // Reservations made before the cut stand for up to the horizon (1 s) and the lead.
    const afterCut = runs.filter((s) => s.atMs >= cutAt + 1_300 && s.atMs < raisedAt)
    for (const s of afterCut) expect(countIn(afterCut, s.atMs, s.atMs + 1_000)).toBeLessThanOrEqual(5 + 1)
    expect(afterCut.length).toBeGreaterThanOrEqual(0.9 * 5 * 2.7 - 1)
    expect(countIn(runs, raisedAt + 2_000, raisedAt + 4_000)).toBeGreaterThanOrEqual(0.9 * 50 * 2)
    expect(outOfOrder(runs, lateJobs(events))).toEqual([])
  })

  it('a merchant whose jobs are all parked when its override is cleared runs them at the default rate at once', async () => {
    const { add, worker, limiter, startsOf, events } = await setup('50/s burst 5', {
      overrides: { 'm-over': '1/min' },
    })
    await add('m-over', 60)
    await waitFor('59 jobs parked', () => worker.throttleStats().backlogged === 59, 10_000, 20)
    expect(startsOf('m-over')).toHaveLength(1)
    const clearedAt = performance.now()
    limiter.setRate('m-over', null)
    worker.ratesChanged(['m-over'])
    await waitFor('every job run', () => startsOf('m-over').length === 60, 5_000, 20)
    // 59 jobs at 50/s after a burst of 5: about 1.1 s, plus promotion and BullMQ's lateness.
    expect(performance.now() - clearedAt).toBeLessThan(3_000)
    expect(outOfOrder(startsOf('m-over'), lateJobs(events))).toEqual([])
  })

  it('a quiet merchant’s job starts within 1 s of being added beside 5,000 parked jobs of another (max of 20)', async () => {
    const { add, worker, starts } = await setup('2/s burst 1')
    await add('m-parked', 5_000)
    await waitFor('the backlog parked', () => worker.throttleStats().backlogged > 4_990, 60_000, 20)
    const latencies: number[] = []
    for (let q = 0; q < 20; q++) {
      const addedAt = performance.now()
      await add(`m-quiet-${q}`, 1)
      await waitFor(`quiet job ${q}`, () => starts.some((s) => s.merchantId === `m-quiet-${q}`), 5_000, 20)
      latencies.push(starts.find((s) => s.merchantId === `m-quiet-${q}`)!.atMs - addedAt)
    }
    expect(Math.max(...latencies)).toBeLessThan(1_000)
  })
})
