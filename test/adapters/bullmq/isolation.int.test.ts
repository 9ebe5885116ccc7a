import { type Job, Queue } from 'bullmq'
import { afterAll, describe, expect, it } from 'vitest'
import { createThrottledWorker } from '../../../src/adapters/bullmq/index.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { redisUrl, uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import { connectionOf } from './support.js'

const connection = connectionOf(redisUrl())
const cleanups: Array<() => Promise<unknown>> = []

afterAll(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** shuffled returns a copy of `items` in a pseudo-random order fixed by `seed`. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const copy = [...items]
  let state = seed
  for (let i = copy.length - 1; i > 0; i--) {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31
    const j = state % (i + 1)
    ;[copy[i], copy[j]] = [copy[j]!, copy[i]!]
  }
  return copy
}

describe('isolation between merchants', () => {
  it('20 quiet merchants finish within the first seconds while one merchant has 5,000 jobs queued', async () => {
    const queue = new Queue(uniqueName('throttle-isolation'), { connection })
    const limiter = new KeyedLimiter({ rate: '600/min burst 10' })
    const doneAtMs = new Map<string, number[]>()
    const worker = createThrottledWorker(
      queue.name,
      async (job: Job) => {
        const key = job.data.merchantId as string
        const list = doneAtMs.get(key) ?? []
        list.push(performance.now())
        doneAtMs.set(key, list)
      },
      { connection, limiter, concurrency: 50 },
    )
    cleanups.push(async () => {
      await worker.close()
      await queue.obliterate({ force: true })
      await queue.close()
    })
    await worker.waitUntilReady()
    const quiet = Array.from({ length: 20 }, (_, m) => `m-quiet-${m}`)
    const jobs = shuffled(
      [
        ...Array.from({ length: 5_000 }, () => 'm-hot'),
        ...quiet.flatMap((merchantId) => Array.from({ length: 20 }, () => merchantId)),
      ],
      7,
    ).map((merchantId) => ({ name: 'pay', data: { merchantId } }))
    const addedAtMs = performance.now()
    await queue.addBulk(jobs)
    const quietDone = () => quiet.every((m) => (doneAtMs.get(m)?.length ?? 0) === 20)
    await waitFor('the quiet merchants done', quietDone, 25_000, 20)
    const quietFinishedAfterMs = Math.max(...quiet.flatMap((m) => doneAtMs.get(m)!)) - addedAtMs
    const hotDone = doneAtMs.get('m-hot') ?? []

    // Behind the hot merchant they would wait for its backlog: 5,000 jobs at 10/s, 500 s. They
    // wait only for the worker to fetch past the hot jobs queued before theirs (each fetched once
    // and delayed): a few seconds, more on a loaded machine.
    expect(quietFinishedAfterMs).toBeLessThan(20_000)
    // The hot merchant ran at its own rate meanwhile: burst 10 plus 10 a second, never more.
    expect(hotDone.length).toBeLessThanOrEqual(10 + Math.ceil((quietFinishedAfterMs / 1000) * 10) + 1)
    expect(hotDone.length).toBeGreaterThanOrEqual(10)
    console.info(
      `quiet merchants done after ${Math.round(quietFinishedAfterMs)} ms; hot ran ${hotDone.length}`,
    )
  })
})
