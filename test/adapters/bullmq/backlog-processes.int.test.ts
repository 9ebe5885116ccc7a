import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import { redisUrl, uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import { connectionOf, removeBacklogKeys } from './support.js'

const fixture = fileURLToPath(new URL('./fixtures/throttled-worker.ts', import.meta.url))
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url))
const connection = connectionOf(redisUrl())
const redis = new Redis(redisUrl())
const children: ChildProcess[] = []
const cleanups: Array<() => Promise<unknown>> = []

afterEach(async () => {
  await Promise.all(children.splice(0).map(stop))
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGTERM')
  const exited = await Promise.race([
    once(child, 'exit'),
    new Promise((resolve) => setTimeout(resolve, 10_000)),
  ])
  if (exited === undefined) child.kill('SIGKILL')
}

/** startWorkers starts `count` processes running fixtures/throttled-worker.ts and waits until each is connected. */
async function startWorkers(
  count: number,
  settings: Record<string, string | number>,
): Promise<ChildProcess[]> {
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: redisUrl() }
  for (const [name, value] of Object.entries(settings)) env[name] = String(value)
  const started = Array.from({ length: count }, () => {
    const child = spawn(process.execPath, ['--import', 'tsx', fixture], {
      cwd: repoRoot,
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    children.push(child)
    const ready = new Promise<void>((resolve) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if ((JSON.parse(line) as { event: string }).event === 'ready') resolve()
      })
    })
    return { child, ready }
  })
  await Promise.all(started.map((s) => s.ready))
  return started.map((s) => s.child)
}

function newQueue() {
  const queue = new Queue(uniqueName('throttle-backlog-procs'), { connection })
  const runsKey = `${queue.name}:test-runs`
  const startsKey = `${queue.name}:test-starts`
  cleanups.push(async () => {
    await removeBacklogKeys(queue)
    await queue.obliterate({ force: true })
    await queue.close()
    const keys = await redis.keys(`${queue.name}:test-*`)
    if (keys.length > 0) await redis.del(...keys)
  })
  const settings = (rate: string) => ({
    QUEUE: queue.name,
    RUNS_KEY: runsKey,
    STARTS_KEY: startsKey,
    RATE: rate,
    HORIZON_MS: 60_000,
    INSTANCES: 3,
    INSTANCES_FALLBACK: 3,
    REFRESH_MS: 10_000,
    CONCURRENCY: 20,
    HANDLER_MS: 20,
    // Stalled-job recovery within seconds: locks live 3 s, renewed every 1.5 s, checked every second.
    LOCK_DURATION_MS: 3_000,
    STALLED_INTERVAL_MS: 1_000,
  })
  const runsOf = async (merchantId: string) =>
    Object.values(await redis.hgetall(`${runsKey}:${merchantId}`)).map(Number)
  const startsOf = async (merchantId: string) =>
    (await redis.lrange(`${startsKey}:${merchantId}`, 0, -1)).map((entry) => {
      const [atMs, jobId] = entry.split(' ')
      return { atMs: Number(atMs), i: Number(jobId) - 1 }
    })
  return { queue, settings, runsOf, startsOf }
}

describe('standing backlogs over several worker processes', () => {
  it('three processes sharing a backlogged merchant: aggregate within 10% of the limit, in order, none promoted twice', async () => {
    const limitPerSec = 30
    const { queue, settings, runsOf, startsOf } = newQueue()
    await startWorkers(3, settings(`${limitPerSec * 60}/min burst 3`))
    const jobs = 240
    await queue.addBulk(
      Array.from({ length: jobs }, (_, i) => ({ name: 'pay', data: { merchantId: 'm-shared', i } })),
    )
    await waitFor('every job run', async () => (await runsOf('m-shared')).length === jobs, 30_000, 20)

    const starts = (await startsOf('m-shared')).sort((a, b) => a.atMs - b.atMs)
    const at = starts.map((s) => s.atMs)
    const steady = at.filter((t) => t >= at[0]! + 1_000)
    const ratePerSec = ((steady.length - 1) * 1000) / (steady.at(-1)! - steady[0]!)
    expect(ratePerSec).toBeGreaterThanOrEqual(limitPerSec * 0.9)
    expect(ratePerSec).toBeLessThanOrEqual(limitPerSec * 1.1)
    expect((await runsOf('m-shared')).every((runs) => runs === 1)).toBe(true)
    // In order, up to the interleaving of the processes: each promotes up to a horizon (1 s)
    // of its own share at a time, so jobs of two processes' batches can swap by up to that
    // (and BullMQ's lateness).
    const byAdd = [...starts].sort((a, b) => a.i - b.i)
    let latestEarlier = Number.NEGATIVE_INFINITY
    const early = byAdd.filter((s) => {
      const isEarly = s.atMs < latestEarlier - 1_300
      latestEarlier = Math.max(latestEarlier, s.atMs)
      return isEarly
    })
    // A process that has not yet parked a job of the merchant runs one at once when its
    // share of the burst (1) is there: at most one per process ahead of its turn.
    expect(early.length).toBeLessThanOrEqual(3)
    console.info(`three processes, one backlog: ${ratePerSec.toFixed(2)}/s after the first second`)
  })

  it('kill -9 of every worker while 3,000 jobs are parked: after a restart all complete, none lost, duplicates no more than in flight', async () => {
    const { queue, settings, runsOf } = newQueue()
    const first = await startWorkers(3, settings('1200/min burst 5'))
    const jobs = 3_000
    await queue.addBulk(
      Array.from({ length: jobs }, (_, i) => ({ name: 'pay', data: { merchantId: 'm-killed', i } })),
    )
    await waitFor('40 jobs run', async () => (await runsOf('m-killed')).length >= 40, 20_000, 20)
    for (const child of first) child.kill('SIGKILL')
    await Promise.all(first.map((child) => once(child, 'exit')))
    const inFlightAtKill = await queue.getJobCountByTypes('active')
    const parked = await redis.zcard(`bull:${queue.name}:mt:backlog:m-killed`)
    expect(parked).toBeGreaterThan(2_000)

    // Restarted faster, so that the rest drains in seconds.
    await startWorkers(3, settings('30000/min burst 50'))
    await waitFor('every job run', async () => (await runsOf('m-killed')).length === jobs, 40_000, 20)
    await waitFor(
      'the queue empty',
      async () => (await queue.getJobCountByTypes('active', 'wait', 'delayed')) === 0,
      10_000,
      20,
    )
    expect(await queue.getJobCountByTypes('failed')).toBe(0)
    expect(await queue.getJobCountByTypes('completed')).toBe(jobs)
    const duplicates = (await runsOf('m-killed')).reduce((sum, n) => sum + n - 1, 0)
    expect(duplicates).toBeLessThanOrEqual(inFlightAtKill)
    expect(await redis.exists(`bull:${queue.name}:mt:backlog:m-killed`)).toBe(0)
    console.info(
      `kill -9 of every worker: ${parked} parked, ${inFlightAtKill} in flight, ${duplicates} run twice`,
    )
  })
})
