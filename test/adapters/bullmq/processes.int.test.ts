import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { redisUrl, uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import { connectionOf } from './support.js'

const fixture = fileURLToPath(new URL('./fixtures/throttled-worker.ts', import.meta.url))
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url))

/** WorkerProcess is a child process running fixtures/throttled-worker.ts. */
interface WorkerProcess {
  child: ChildProcess
  workerId: Promise<string>
  instances(): number
}

function startWorkerProcess(settings: Record<string, string | number>): WorkerProcess {
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: redisUrl() }
  for (const [name, value] of Object.entries(settings)) env[name] = String(value)
  const child = spawn(process.execPath, ['--import', 'tsx', fixture], {
    cwd: repoRoot,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let instances = 0
  let ready: (workerId: string) => void = () => undefined
  const workerId = new Promise<string>((resolve) => {
    ready = resolve
  })
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const message = JSON.parse(line) as { event: string; workerId?: string; instances?: number }
    if (message.event === 'ready') ready(message.workerId!)
    if (message.event === 'share') instances = message.instances!
  })
  return { child, workerId, instances: () => instances }
}

// One queue and three worker processes for the whole file (starting a process costs seconds
// on a loaded machine): the first test measures the shared rate, the second kills one of them.
// Each test uses its own merchant, so each has its own limit and its own records.
const connection = connectionOf(redisUrl())
const redis = new Redis(redisUrl())
const queue = new Queue(uniqueName('throttle-procs'), { connection })
const runsKey = `${queue.name}:test-runs`
const startsKey = `${queue.name}:test-starts`
const limitPerSec = 20
const burst = 10
let workers: WorkerProcess[] = []
let workerIds: string[] = []

beforeAll(async () => {
  const settings = {
    QUEUE: queue.name,
    RUNS_KEY: runsKey,
    STARTS_KEY: startsKey,
    RATE: `${limitPerSec * 60}/min burst ${burst}`,
    // A short horizon keeps each process from reserving far ahead, so that jobs go to
    // whichever process has room and every share is used.
    HORIZON_MS: 2_000,
    INSTANCES: 'auto',
    INSTANCES_FALLBACK: 3,
    REFRESH_MS: 300,
    CONCURRENCY: 20,
    HANDLER_MS: 300,
    // Stalled-job recovery within seconds: locks live 3 s, renewed every 1.5 s, checked every second.
    LOCK_DURATION_MS: 3_000,
    STALLED_INTERVAL_MS: 1_000,
  }
  workers = [startWorkerProcess(settings), startWorkerProcess(settings), startWorkerProcess(settings)]
  workerIds = await Promise.all(workers.map((w) => w.workerId))
  await waitFor(
    'every process counting 3 instances',
    () => workers.every((w) => w.instances() === 3),
    10_000,
    20,
  )
})

afterAll(async () => {
  await Promise.all(
    workers.map(async ({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const exited = await Promise.race([
        once(child, 'exit'),
        new Promise((resolve) => setTimeout(resolve, 10_000)),
      ])
      if (exited === undefined) child.kill('SIGKILL')
    }),
  )
  await queue.obliterate({ force: true })
  await queue.close()
  const keys = await redis.keys(`${queue.name}:test-*`)
  if (keys.length > 0) await redis.del(...keys)
  redis.disconnect()
})

async function completedOf(merchantId: string): Promise<number> {
  return Object.keys(await redis.hgetall(`${runsKey}:${merchantId}`)).length
}

describe('several worker processes on one queue', () => {
  it("three processes with instances 'auto' keep one merchant's overall rate within 10% of its limit", async () => {
    const jobs = 200
    await queue.addBulk(
      Array.from({ length: jobs }, (_, i) => ({ name: 'pay', data: { merchantId: 'm-rate', i } })),
    )
    await waitFor('all jobs run', async () => (await completedOf('m-rate')) === jobs, 30_000, 20)

    const at = (await redis.lrange(`${startsKey}:m-rate`, 0, -1))
      .map((entry) => Number(entry.split(' ')[0]))
      .sort((a, b) => a - b)
    expect(at).toHaveLength(jobs)
    // After the first second (the burst), starts follow the rate.
    const steady = at.filter((t) => t >= at[0]! + 1_000)
    const ratePerSec = ((steady.length - 1) * 1000) / (steady.at(-1)! - steady[0]!)
    expect(ratePerSec).toBeGreaterThanOrEqual(limitPerSec * 0.9)
    expect(ratePerSec).toBeLessThanOrEqual(limitPerSec * 1.1)
    // Never above the limit: in any one-second window, at most the burst and one second's rate.
    let maxInOneSecond = 0
    for (let i = 0, j = 0; i < at.length; i++) {
      while (at[i]! - at[j]! >= 1_000) j++
      maxInOneSecond = Math.max(maxInOneSecond, i - j + 1)
    }
    expect(maxInOneSecond).toBeLessThanOrEqual(burst + limitPerSec + 1)
    expect(Object.values(await redis.hgetall(`${runsKey}:m-rate`)).every((runs) => runs === '1')).toBe(true)
    console.info(
      `three processes: ${ratePerSec.toFixed(2)}/s after the burst, at most ${maxInOneSecond} in a second`,
    )
  })

  it('kill -9 of one process mid-run: every job completes; duplicates are no more than its jobs in flight', async () => {
    const jobs = 200
    await queue.addBulk(
      Array.from({ length: jobs }, (_, i) => ({ name: 'pay', data: { merchantId: 'm-kill', i } })),
    )
    await waitFor('60 jobs run', async () => (await completedOf('m-kill')) >= 60, 20_000, 20)
    const victim = workers[0]!
    victim.child.kill('SIGKILL')
    await once(victim.child, 'exit')
    // The jobs in flight in the killed process are those still locked with its worker's tokens.
    const active = await queue.getActive()
    const tokens = await Promise.all(active.map((job) => redis.get(`bull:${queue.name}:${job.id}:lock`)))
    const inFlightAtKill = tokens.filter((token) => token?.startsWith(`${workerIds[0]}:`)).length
    expect(inFlightAtKill).toBeGreaterThan(0)

    await waitFor('every job run', async () => (await completedOf('m-kill')) === jobs, 30_000, 20)
    await waitFor(
      'the queue empty',
      async () => (await queue.getJobCountByTypes('active', 'wait', 'delayed')) === 0,
      10_000,
      20,
    )
    expect(await queue.getJobCountByTypes('failed')).toBe(0)
    expect(await queue.getJobCountByTypes('completed')).toBe(400)
    const runs = Object.values(await redis.hgetall(`${runsKey}:m-kill`)).map(Number)
    const duplicates = runs.reduce((sum, n) => sum + n - 1, 0)
    expect(duplicates).toBeLessThanOrEqual(inFlightAtKill)
    // The survivors count two instances again, and so take half the limit each.
    await waitFor(
      'the survivors counting 2',
      () => workers.slice(1).every((w) => w.instances() === 2),
      5_000,
      20,
    )
    console.info(`kill -9: ${inFlightAtKill} jobs in flight in the killed process, ${duplicates} run twice`)
  })
})
