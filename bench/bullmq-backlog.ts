// bench/bullmq-backlog.ts: one merchant with a standing backlog (100,000 jobs at 50/s) beside
// 20 quiet merchants sending 1 job a second each, concurrency 50, side by side: this
// adapter, the adapter as it was at 7729fa9 (a `git worktree add /tmp/bullmq-old 7729fa9`
// copy, with node_modules linked in; skipped when absent), and BullMQ's own queue-wide
// limiter (70/s, the load's total). Each variant runs in a child process against a private
// redis-server on a free loopback port, so INFO commandstats counts its commands only.
// BENCH_QUICK=1 (or `--quick` run directly): 10,000 jobs, 15 s.
import { execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { type Job, Queue, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import { fixed, startRedis } from './bullmq-support.js'
import { machineLine, quantile, writeSection } from './report.js'

const QUICK = process.argv.includes('--quick') || process.env.BENCH_QUICK === '1'
const HOT_JOBS = QUICK ? 10_000 : 100_000
const RUN_MS = QUICK ? 15_000 : 60_000
const RAISE_AT_MS = RUN_MS * 0.6
const QUIET = 20
const OLD_DIR = process.env.BULLMQ_OLD_DIR ?? '/tmp/bullmq-old'
const COMMAND = `${QUICK ? 'BENCH_QUICK=1 ' : ''}npm run bench -- bullmq-backlog`
const _run = promisify(execFile)

type Variant = 'adapter' | 'adapter-7729fa9' | 'bullmq-limiter'

/** Result is what one variant measured over the run, after the hot backlog was fetched once. */
interface Result {
  variant: Variant
  warmUpMs: number
  completed: number
  commandsPerJob: number
  cpuUsPerJob: number
  quietP50Ms: number
  quietP99Ms: number
  hotPerSecBeforeRaise: number
  msToRaisedRate: number | undefined | null
}

async function commandCalls(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats')
  let calls = 0
  for (const match of info.matchAll(/calls=(\d+)/g)) calls += Number(match[1])
  return calls
}

async function makeWorker(
  variant: Variant,
  queueName: string,
  connection: object,
  onStart: (job: Job) => void,
) {
  const handler = async (job: Job) => onStart(job)
  if (variant === 'bullmq-limiter') {
    const worker = new Worker(queueName, handler, {
      connection,
      concurrency: 50,
      limiter: { max: 70, duration: 1_000 },
    })
    return { worker, raise: undefined }
  }
  const root = variant === 'adapter' ? '..' : OLD_DIR
  const adapter = await import(`${root}/src/adapters/bullmq/index.ts`)
  const { KeyedLimiter } = await import(`${root}/src/limiter/index.ts`)
  const limiter = new KeyedLimiter({ rate: '2/s burst 2' })
  limiter.setRate('m-hot', '50/s burst 1')
  const worker = adapter.createThrottledWorker(queueName, handler, { connection, limiter, concurrency: 50 })
  const raise = () => {
    limiter.setRate('m-hot', '100/s burst 1')
    worker.ratesChanged?.(['m-hot'])
  }
  return { worker, raise }
}

/** runVariant is the child process's part: one variant against the Redis on `port`. */
async function runVariant(variant: Variant, port: number): Promise<Result> {
  const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null }
  const redis = new Redis(port, '127.0.0.1')
  const queue = new Queue(`bench-backlog-${variant}`, { connection })
  for (let from = 0; from < HOT_JOBS; from += 1_000) {
    await queue.addBulk(
      Array.from({ length: Math.min(1_000, HOT_JOBS - from) }, (_, k) => ({
        name: 'pay',
        data: { merchantId: 'm-hot', i: from + k },
      })),
    )
  }
  const hotStarts: number[] = []
  const quietLatencies: number[] = []
  let measuring = false
  let completed = 0
  const { worker, raise } = await makeWorker(variant, queue.name, connection, (job) => {
    if (!measuring) return
    const { merchantId } = job.data as { merchantId: string }
    if (merchantId === 'm-hot') hotStarts.push(performance.now())
    else quietLatencies.push(Date.now() - job.timestamp)
  })
  worker.on('completed', () => {
    if (measuring) completed++
  })
  // Warm-up: until the worker has fetched the hot backlog once (the wait list is short).
  const warmUpFrom = performance.now()
  const warmUpCapMs = QUICK ? 30_000 : 120_000
  while ((await queue.getWaitingCount()) > 100 && performance.now() - warmUpFrom < warmUpCapMs)
    await sleep(200)
  const warmUpMs = performance.now() - warmUpFrom
  const quiet = setInterval(() => {
    void queue.addBulk(
      Array.from({ length: QUIET }, (_, q) => ({ name: 'pay', data: { merchantId: `m-quiet-${q}` } })),
    )
  }, 1_000)
  measuring = true
  const callsFrom = await commandCalls(redis)
  const cpuFrom = process.cpuUsage()
  const from = performance.now()
  await sleep(RAISE_AT_MS)
  const raisedAt = performance.now()
  raise?.()
  await sleep(RUN_MS - RAISE_AT_MS)
  const cpu = process.cpuUsage(cpuFrom)
  const calls = (await commandCalls(redis)) - callsFrom
  measuring = false
  clearInterval(quiet)
  let msToRaisedRate: number | undefined
  for (const t of hotStarts.filter((s) => s >= raisedAt)) {
    if (hotStarts.filter((s) => s >= t && s < t + 1_000).length >= 90) {
      msToRaisedRate = t - raisedAt
      break
    }
  }
  const beforeRaise = hotStarts.filter((s) => s >= from + 2_000 && s < raisedAt).length
  await worker.close(true)
  redis.disconnect()
  await queue.close()
  return {
    variant,
    warmUpMs,
    completed,
    commandsPerJob: calls / Math.max(1, completed),
    cpuUsPerJob: (cpu.user + cpu.system) / Math.max(1, completed),
    quietP50Ms: quietLatencies.length > 0 ? quantile(quietLatencies, 0.5) : Number.NaN,
    quietP99Ms: quietLatencies.length > 0 ? quantile(quietLatencies, 0.99) : Number.NaN,
    hotPerSecBeforeRaise: (beforeRaise * 1_000) / (raisedAt - from - 2_000),
    msToRaisedRate: raise === undefined ? undefined : msToRaisedRate,
  }
}

function runChild(variant: Variant, port: number): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        fileURLToPath(import.meta.url),
        `--variant=${variant}`,
        `--port=${port}`,
        ...(QUICK ? ['--quick'] : []),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    let out = ''
    child.stdout!.on('data', (chunk) => {
      out += chunk
    })
    child.on('error', reject)
    child.on('close', (code) => {
      const line = out.trim().split('\n').at(-1)
      if (code !== 0 || line === undefined) reject(new Error(`variant ${variant} exited with ${code}`))
      else resolve(JSON.parse(line) as Result)
    })
  })
}

/** ms formats a latency, or says none was measured (JSON turns NaN into null). */
function ms(value: number | null): string {
  return value === null || Number.isNaN(value) ? 'none started' : fixed(value, 0)
}

function row(r: Result): string {
  const raised =
    r.variant === 'bullmq-limiter'
      ? 'n/a'
      : r.msToRaisedRate === undefined || r.msToRaisedRate === null
        ? 'not reached'
        : `${fixed(r.msToRaisedRate / 1_000, 1)} s`
  return `| ${r.variant} | ${fixed(r.warmUpMs / 1_000, 1)} s | ${r.completed} | ${fixed(r.commandsPerJob, 1)} | ${fixed(r.cpuUsPerJob, 0)} | ${ms(r.quietP50Ms)} / ${ms(r.quietP99Ms)} | ${fixed(r.hotPerSecBeforeRaise, 1)} | ${raised} |`
}

async function main(): Promise<void> {
  const variantArg = process.argv.find((a) => a.startsWith('--variant='))
  if (variantArg !== undefined) {
    const port = Number(process.argv.find((a) => a.startsWith('--port='))!.slice('--port='.length))
    const result = await runVariant(variantArg.slice('--variant='.length) as Variant, port)
    process.stdout.write(`${JSON.stringify(result)}\n`)
    process.exit(0)
  }
  const variants: Variant[] = ['adapter', 'bullmq-limiter']
  if (existsSync(`${OLD_DIR}/src/adapters/bullmq/index.ts`)) variants.splice(1, 0, 'adapter-7729fa9')
  const results: Result[] = []
  for (const variant of variants) {
    const redis = await startRedis()
    try {
      console.error(`  ${variant}…`)
      results.push(await runChild(variant, redis.port))
      console.error(`  ${JSON.stringify(results.at(-1))}`)
    } finally {
      await redis.stop()
    }
  }
  const markdown = `## BullMQ: a standing backlog beside quiet merchants

${machineLine()}; BullMQ with a private Redis 7 on loopback per variant. Command: \`${COMMAND}\`.
${HOT_JOBS.toLocaleString('en')} jobs of one merchant limited to 50/s, 20 quiet merchants adding 1 job a second each, concurrency 50, one worker process; measured for ${RUN_MS / 1_000} s after a warm-up (until the wait list is down to 100 jobs, at most ${QUICK ? 30 : 120} s: the old adapter's and BullMQ's never drain), the hot merchant raised to 100/s at ${RAISE_AT_MS / 1_000} s. Redis commands and worker CPU (user + system of the worker's process, the quiet producer included) per job completed in the window. Quiet latency: start − add. The machine was loaded by other work (2 cores shared with other builds and a Kafka broker): read ratios, not absolutes.

| variant | warm-up | completed | Redis commands / job | CPU µs / job | quiet p50 / p99 ms | hot /s before the raise | to ≥ 90/s after the raise |
| --- | --- | --- | --- | --- | --- | --- | --- |
${results.map(row).join('\n')}

adapter-7729fa9 is the adapter before the backlog (every job past its 60 s horizon deferred by about 1/rate); bullmq-limiter is BullMQ's queue-wide limiter at 70/s, which has no per-merchant limit (so no raise).`
  await writeSection('bullmq-backlog', markdown)
  console.info(markdown)
}

await main()
