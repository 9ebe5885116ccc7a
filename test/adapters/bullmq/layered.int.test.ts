import { type Job, Queue, Worker } from 'bullmq'
import { afterEach, describe, expect, it } from 'vitest'
import { createThrottledProcessor, type ThrottleOptions } from '../../../src/adapters/bullmq/index.js'
import { RetryLaterError } from '../../../src/errors.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { expectBindingScenario, expectMainScenario } from '../../support/layered-expectations.js'
import {
  BINDING,
  MAIN,
  runBullmq,
  type Scenario,
  type Summary,
  startPspEndpoint,
  summarize,
} from '../../support/layered-fairness.js'
import { redisUrl, uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import { connectionOf, removeBacklogKeys } from './support.js'

const connection = connectionOf(redisUrl())
const cleanups: Array<() => Promise<unknown>> = []

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const psp = (merchantKey: string, data: { psp?: unknown }) => [
  `psp:${data.psp}`,
  `psp:${data.psp}:${merchantKey}`,
]

/** setup starts a plain BullMQ Worker running `handler` through createThrottledProcessor with limit keys. */
async function setup(
  limiter: KeyedLimiter,
  handler: (job: Job) => Promise<unknown>,
  options: Partial<ThrottleOptions<{ psp?: unknown }, unknown, string>> = {},
) {
  const queue = new Queue(uniqueName('throttle-layered'), { connection })
  const processor = createThrottledProcessor(handler, { limiter, limitKeys: psp, ...options })
  const worker = new Worker(queue.name, processor, { connection, concurrency: 20 })
  cleanups.push(async () => {
    processor.close()
    await worker.close()
    await queue.obliterate({ force: true })
    await removeBacklogKeys(queue)
    await queue.close()
  })
  await worker.waitUntilReady()
  return { queue, processor }
}

describe('createThrottledProcessor with limitKeys (issue 18)', () => {
  it('fails a job whose limitKeys throws or gives a bad list at once, unrecoverably, saying what is wrong', async () => {
    const runs: string[] = []
    const limiter = new KeyedLimiter({ rate: '600/min' })
    const { queue, processor } = await setup(limiter, async (job) => runs.push(job.data.merchantId), {
      limitKeys: (merchantKey, data: { psp?: unknown; keys?: unknown }) => {
        if (data.keys === 'throw') throw new Error('job data has no field psp')
        return (data.keys ?? psp(merchantKey, data)) as string[]
      },
    })
    const jobs = [
      { merchantId: 'm-throws', keys: 'throw' },
      { merchantId: 'm-empty', keys: [] },
      { merchantId: 'm-repeat', keys: ['psp:x', 'psp:x'] },
      { merchantId: 'm-bad', keys: ['psp:x', 'has space'] },
      { merchantId: 'm-good', psp: 'x' },
    ]
    await queue.addBulk(jobs.map((data) => ({ name: 'pay', data, opts: { attempts: 5 } })))
    await waitFor('4 failed jobs', async () => (await queue.getJobCountByTypes('failed')) === 4, 5_000, 20)
    await waitFor('the good job run', () => runs.length === 1, 5_000, 20)
    const reasons = (await queue.getJobs(['failed']))
      .map((job) => [job.failedReason, job.attemptsMade])
      .sort()
    const reason = (what: string) => `invalid merchant key: ${what} (limitKeys(merchantKey, job.data))`
    expect(reasons).toEqual(
      [
        [reason('limit key 1 contains characters outside [A-Za-z0-9-_.:@/+=]'), 1],
        [reason('limit key 1 repeats key 0 (psp:x)'), 1],
        [reason('expected 1 to 4 limit keys, got none'), 1],
        [reason('limitKeys threw: job data has no field psp'), 1],
      ].sort(),
    )
    expect(runs).toEqual(['m-good'])
    expect(processor.stats()['invalid-key']).toBe(4)
    // Nothing lost: every job is completed or failed with its reason.
    expect(await queue.getJobCounts('wait', 'delayed', 'active')).toEqual({ wait: 0, delayed: 0, active: 0 })
  })

  it("takes every job's tokens from the PSP's key too: two merchants' jobs share its rate, each in its own order", async () => {
    const starts: Array<{ merchant: string; i: number; atMs: number }> = []
    const limiter = new KeyedLimiter({ rate: '20/s' })
    limiter.setRate('psp:x', '4/s burst 1')
    const { queue, processor } = await setup(limiter, async (job) => {
      starts.push({ merchant: job.data.merchantId, i: job.data.i, atMs: performance.now() })
    })
    const data = ['m-a', 'm-b'].flatMap((merchantId) =>
      Array.from({ length: 6 }, (_, i) => ({ merchantId, psp: 'x', i })),
    )
    await queue.addBulk(data.map((d) => ({ name: 'pay', data: d })))
    await waitFor('a job waiting on the parent', () => Object.keys(processor.waiting()).length > 0, 5_000, 20)
    const waiting = Object.values(processor.waiting())
    expect(waiting.map((w) => w.limitKeys?.[0])).toContain('psp:x')
    await waitFor('12 jobs run', () => starts.length === 12, 15_000, 20)
    const at = starts.map((s) => s.atMs).sort((a, b) => a - b)
    // The parent's 4/s, burst 1, not the merchants' 20/s: 12 starts take at least 11 × 250 ms.
    expect(at.at(-1)! - at[0]!).toBeGreaterThanOrEqual(11 * 250 - 100)
    for (const merchant of ['m-a', 'm-b']) {
      const order = starts.filter((s) => s.merchant === merchant).map((s) => s.i)
      expect(order).toEqual([0, 1, 2, 3, 4, 5])
    }
  })

  it('penalizes the innermost key on RetryLaterError, not the PSP every merchant shares', async () => {
    let calls = 0
    const limiter = new KeyedLimiter({ rate: '600/min burst 5' })
    limiter.setRate('psp:x', '100/s')
    const { queue } = await setup(limiter, async () => {
      if (calls++ === 0) throw new RetryLaterError(300)
    })
    await queue.add('pay', { merchantId: 'm-429', psp: 'x' }, { attempts: 1 })
    await waitFor(
      'the job completed',
      async () => (await queue.getJobCountByTypes('completed')) === 1,
      5_000,
      20,
    )
    expect(limiter.inspect('psp:x:m-429')?.penaltyFactor).toBe(0.5)
    expect(limiter.inspect('psp:x')?.penaltyFactor ?? 1).toBe(1)
  })
})

/**
 * The scenario on the real Redis (see test/support/layered-fairness.ts). Bounds:
 * - the handlers never start more than burst + rate × W of the PSP's rate, for W of 1 s and
 *   5 s, over the whole run: no tolerance upwards (the throttle's promise); the endpoint sees
 *   at most that plus what loopback delivery can crowd into a window (rate × 100 ms: the call
 *   is made after its start, and one loaded process holds both sides);
 * - a backlogged merchant gets at least 75 % of its expected rate over the 15 s measured
 *   (a loaded machine starts jobs late, never early) and no more than its own burst + rate;
 * - a quiet merchant's p99 wait (queued to arrival) stays under 1 s: behind the backlogs
 *   it would wait 75 s (1,500 jobs at 20/s); what is left is BullMQ's fetch and the HTTP
 *   call, plus the event-loop stalls of a loaded machine (100-300 ms seen in these tests).
 */
async function runAndSummarize(scenario: Scenario): Promise<Summary> {
  const endpoint = await startPspEndpoint()
  try {
    const run = await runBullmq(scenario, connection, uniqueName('layered-fair'), endpoint)
    const summary = summarize(scenario, run)
    console.info(`bullmq layered ${scenario.parentRate}: ${JSON.stringify(summary)}`)
    return summary
  } finally {
    await endpoint.close()
  }
}

describe('BullMQ against a PSP endpoint: a parent at 50/s over 5 merchants at 20/s (issue 18)', () => {
  it('the endpoint never sees more than burst + 50 × W; the backlogged merchants each get their share; the quiet ones wait little', async () => {
    expectMainScenario(await runAndSummarize(MAIN))
  })

  it('when the parent binds hard (30/s over two merchants at 20/s) each gets about half, though one has 100× the backlog', async () => {
    expectBindingScenario(await runAndSummarize(BINDING))
  })
})
