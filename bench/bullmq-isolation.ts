import { type Job, Queue, Worker } from 'bullmq'
import { createThrottledWorker } from '../src/adapters/bullmq/index.js'
import { KeyedLimiter } from '../src/limiter/index.js'
import { connection, dropQueue, fixed, versionsLine } from './bullmq-support.js'
import { machineLine, median, quantile, writeSection } from './report.js'

// Isolation: one merchant sends 100 times its limit while 20 quiet merchants send well
// under theirs. Compared: the throttled worker (a limit per merchant) and a plain BullMQ
// Worker with BullMQ's queue-wide `limiter` set to the hot merchant's rate, which is what
// open-source BullMQ offers to keep one merchant within its limit.

const LIMIT_PER_SEC = 2
const HOT_PER_SEC = LIMIT_PER_SEC * 100
const QUIET_MERCHANTS = 20
const QUIET_PER_SEC_EACH = 1
const SEND_MS = 12_000
const DRAIN_MS = 2_000
const TICK_MS = 50
const CONCURRENCY = 50
const ROUNDS = 2
const COMMAND = 'node --import tsx bench/bullmq-isolation.ts'

type Variant = 'throttled' | 'queue-limiter'

interface RoundResult {
  quietSent: number
  quietDone: number
  quietPerSec: number
  quietLatencyMs: number[]
  hotDone: number
}

async function round(variant: Variant): Promise<RoundResult> {
  const queue = new Queue(`bench-isolation-${variant}-${process.pid}-${Date.now()}`, {
    connection: connection(),
  })
  const quietLatencyMs: number[] = []
  let hotDone = 0
  const handler = async (job: Job) => {
    if (job.data.merchantId === 'm-hot') hotDone++
    else quietLatencyMs.push(Date.now() - (job.data.sentAtMs as number))
  }
  const worker =
    variant === 'throttled'
      ? createThrottledWorker(queue.name, handler, {
          connection: connection(),
          concurrency: CONCURRENCY,
          limiter: new KeyedLimiter({ rate: `${LIMIT_PER_SEC}/s burst ${LIMIT_PER_SEC}` }),
        })
      : new Worker(queue.name, handler, {
          connection: connection(),
          concurrency: CONCURRENCY,
          limiter: { max: LIMIT_PER_SEC, duration: 1_000 },
        })
  await worker.waitUntilReady()

  // Send on a fixed schedule: each tick carries its share of the hot and the quiet traffic.
  let quietSent = 0
  let hotOwed = 0
  let quietOwed = 0
  const startedAtMs = performance.now()
  for (let tick = 1; tick * TICK_MS <= SEND_MS; tick++) {
    hotOwed += (HOT_PER_SEC * TICK_MS) / 1000
    quietOwed += (QUIET_MERCHANTS * QUIET_PER_SEC_EACH * TICK_MS) / 1000
    const jobs: Array<{ name: string; data: { merchantId: string; sentAtMs: number } }> = []
    const sentAtMs = Date.now()
    for (; hotOwed >= 1; hotOwed--) jobs.push({ name: 'pay', data: { merchantId: 'm-hot', sentAtMs } })
    for (; quietOwed >= 1; quietOwed--) {
      jobs.push({ name: 'pay', data: { merchantId: `m-quiet-${quietSent % QUIET_MERCHANTS}`, sentAtMs } })
      quietSent++
    }
    await queue.addBulk(jobs)
    const waitMs = startedAtMs + tick * TICK_MS - performance.now()
    if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs))
  }
  await new Promise((resolve) => setTimeout(resolve, DRAIN_MS))
  const windowMs = performance.now() - startedAtMs
  const result = {
    quietSent,
    quietDone: quietLatencyMs.length,
    quietPerSec: (quietLatencyMs.length * 1000) / windowMs,
    quietLatencyMs: [...quietLatencyMs],
    hotDone,
  }
  await worker.close(true)
  await dropQueue(queue)
  return result
}

const results: Record<Variant, RoundResult[]> = { throttled: [], 'queue-limiter': [] }
for (let r = 0; r < ROUNDS; r++) {
  const order: Variant[] = r % 2 === 0 ? ['throttled', 'queue-limiter'] : ['queue-limiter', 'throttled']
  for (const variant of order) results[variant].push(await round(variant))
}

const summary = (variant: Variant) => {
  const rounds = results[variant]
  const latencies = rounds.flatMap((r) => r.quietLatencyMs)
  return {
    quietPerSec: median(rounds.map((r) => r.quietPerSec)),
    done: `${rounds.map((r) => r.quietDone).join(', ')} of ${rounds.map((r) => r.quietSent).join(', ')}`,
    p50: latencies.length > 0 ? quantile(latencies, 0.5) : Number.NaN,
    p99: latencies.length > 0 ? quantile(latencies, 0.99) : Number.NaN,
    hotPerSec: median(rounds.map((r) => (r.hotDone * 1000) / (SEND_MS + DRAIN_MS))),
  }
}
const throttled = summary('throttled')
const queueLimiter = summary('queue-limiter')
const quietOfferedPerSec = QUIET_MERCHANTS * QUIET_PER_SEC_EACH
const row = (label: string, s: ReturnType<typeof summary>) =>
  `| ${label} | ${fixed(s.quietPerSec, 2)} | ${s.done} | ${fixed(s.p50, 0)} | ${fixed(s.p99, 0)} | ${fixed(s.hotPerSec, 2)} |`

await writeSection(
  'bullmq-isolation',
  `
## BullMQ adapter: isolation from a merchant 100× over its limit

Every merchant's limit is ${LIMIT_PER_SEC}/s. For ${SEND_MS / 1000} s, one merchant sends ${HOT_PER_SEC} jobs/s
(100× its limit) and ${QUIET_MERCHANTS} quiet merchants send ${QUIET_PER_SEC_EACH}/s each (${quietOfferedPerSec}/s in all, under
their limits), in batches every ${TICK_MS} ms; the window closes ${DRAIN_MS / 1000} s after the last send. One worker,
concurrency ${CONCURRENCY}, a handler that returns at once. Compared: \`createThrottledWorker\` (a limit per
merchant) and a plain \`Worker\` with BullMQ's queue-wide \`limiter: { max: ${LIMIT_PER_SEC}, duration: 1000 }\`, the
hot merchant's rate: the way open-source BullMQ keeps that merchant within its limit, which holds
everyone else to it too. ${ROUNDS} rounds each, alternating; latency is from send to handler, pooled over rounds.

${machineLine()}; ${await versionsLine()}.
Command: \`${COMMAND}\`

| worker | quiet completions/s (median) | quiet done, of sent | quiet latency p50 ms | p99 ms | hot completions/s |
| --- | ---: | --- | ---: | ---: | ---: |
${row('`createThrottledWorker`', throttled)}
${row('plain `Worker`, queue-wide `limiter`', queueLimiter)}

Quiet merchants' completions: **${fixed(throttled.quietPerSec / queueLimiter.quietPerSec, 0)}×** with the throttle
(offered: ${quietOfferedPerSec}/s). The hot merchant is held near its own ${LIMIT_PER_SEC}/s in both (plus its burst).
`,
)
console.log({ throttled, queueLimiter })
