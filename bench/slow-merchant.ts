import { once } from 'node:events'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { type Job, Queue } from 'bullmq'
import { createThrottledWorker } from '../src/adapters/bullmq/index.js'
import { RetryableFailureError } from '../src/errors.js'
import { InFlightTable, KeyedLimiter } from '../src/limiter/index.js'
import { connection, dropQueue, fixed, versionsLine } from './bullmq-support.js'
import { machineLine, median, quantile, writeSection } from './report.js'

// One merchant's endpoint hangs until the request timeout while 20 quiet merchants send
// a steady stream. Compared, side by side in one run on the throttled BullMQ worker:
// no in-flight cap (the state before in-flight caps existed), the hanging merchant capped
// at 5 in flight, and no hanging merchant at all. Measured: the quiet jobs' completion
// latency (job added to job completed).

const CONCURRENCY = 50
const CAP = 5
const TIMEOUT_MS = 2_000
const HANGING_JOBS = 150
const QUIET_MERCHANTS = 20
const QUIET_PER_TICK = 10
const TICK_MS = 100
const TICKS = 40
const QUIET_RESPONSE_MS = 20
const ROUNDS = 2
const COMMAND = 'node --import tsx bench/slow-merchant.ts'

type Variant = 'no cap' | `cap ${number}` | 'no hanging merchant'

async function startMerchants(): Promise<{ origin: string; close(): Promise<void> }> {
  const server = http.createServer((request, response) => {
    request.resume()
    if (request.url!.startsWith('/hang')) return
    setTimeout(() => response.end('ok'), QUIET_RESPONSE_MS)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return {
    origin: `http://127.0.0.1:${port}`,
    async close() {
      server.closeAllConnections()
      server.close()
      await once(server, 'close')
    },
  }
}

async function round(variant: Variant, origin: string): Promise<number[]> {
  const queue = new Queue(`bench-slow-${variant.replaceAll(' ', '-')}-${process.pid}-${Date.now()}`, {
    connection: connection(),
  })
  const inFlight = new InFlightTable()
  if (variant === `cap ${CAP}`) inFlight.setCap('hang', CAP)
  const handler = async (job: Job) => {
    const response = await fetch(`${origin}/${job.data.merchantId}`, {
      method: 'POST',
      body: '{}',
      signal: AbortSignal.timeout(TIMEOUT_MS),
    }).catch((error: unknown) => {
      throw new RetryableFailureError('timeout', undefined, String(error))
    })
    await response.text()
  }
  const latencyMs: number[] = []
  const worker = createThrottledWorker(queue.name, handler, {
    connection: connection(),
    limiter: new KeyedLimiter({ rate: '10000/s burst 1000' }),
    inFlight,
    concurrency: CONCURRENCY,
    removeOnComplete: { count: 0 },
    removeOnFail: { count: 0 },
  })
  worker.on('completed', (job) => {
    if (job.data.merchantId !== 'hang') latencyMs.push(Date.now() - job.timestamp)
  })
  await worker.waitUntilReady()
  if (variant !== 'no hanging merchant') {
    await queue.addBulk(
      Array.from({ length: HANGING_JOBS }, (_, i) => ({ name: 'hook', data: { merchantId: 'hang', i } })),
    )
  }
  await sleep(200)
  for (let tick = 0; tick < TICKS; tick++) {
    await queue.addBulk(
      Array.from({ length: QUIET_PER_TICK }, (_, i) => ({
        name: 'hook',
        data: { merchantId: `quiet${(tick * QUIET_PER_TICK + i) % QUIET_MERCHANTS}` },
      })),
    )
    await sleep(TICK_MS)
  }
  const deadline = Date.now() + 30_000
  while (latencyMs.length < TICKS * QUIET_PER_TICK && Date.now() < deadline) await sleep(100)
  await worker.close(true)
  await dropQueue(queue)
  return latencyMs
}

async function main(): Promise<void> {
  const versions = await versionsLine()
  const merchants = await startMerchants()
  const variants: Variant[] = ['no cap', `cap ${CAP}`, 'no hanging merchant']
  const results = new Map<Variant, Array<{ p50: number; p99: number; done: number }>>(
    variants.map((v) => [v, []]),
  )
  for (let r = 0; r < ROUNDS; r++) {
    for (const variant of variants) {
      const latency = await round(variant, merchants.origin)
      const row = { p50: quantile(latency, 0.5), p99: quantile(latency, 0.99), done: latency.length }
      results.get(variant)!.push(row)
      console.info(
        `round ${r + 1} ${variant}: p50 ${fixed(row.p50, 0)} ms, p99 ${fixed(row.p99, 0)} ms, ${row.done} quiet jobs`,
      )
    }
  }
  await merchants.close()
  const base = results.get('no hanging merchant')!
  const baseP50 = median(base.map((r) => r.p50))
  const baseP99 = median(base.map((r) => r.p99))
  const lines = variants.map((variant) => {
    const rows = results.get(variant)!
    const p50 = median(rows.map((r) => r.p50))
    const p99 = median(rows.map((r) => r.p99))
    return `| ${variant} | ${fixed(p50, 0)} | ${fixed(p99, 0)} | ${fixed(p50 / baseP50, 2)} | ${fixed(p99 / baseP99, 2)} |`
  })
  const markdown = `## Slow merchant: quiet merchants' latency next to a hanging endpoint (BullMQ)

${machineLine()}; ${versions}. Command: \`${COMMAND}\`.

The throttled BullMQ worker at concurrency ${CONCURRENCY}; one merchant's endpoint never answers (each request ends at
the ${TIMEOUT_MS / 1_000} s timeout, one attempt), ${HANGING_JOBS} of its jobs queued first; ${QUIET_MERCHANTS} quiet merchants send
${(QUIET_PER_TICK * 1_000) / TICK_MS} jobs/s in all for ${(TICKS * TICK_MS) / 1_000} s to a local endpoint answering in ${QUIET_RESPONSE_MS} ms.
Latency is from the job being added to its completion. Variants run side by side, ${ROUNDS} rounds each; figures are
the medians of the rounds' p50 and p99, and their ratio to the run without a hanging merchant.

| Variant | quiet p50 (ms) | quiet p99 (ms) | p50 / no hanging | p99 / no hanging |
|---|---|---|---|---|
${lines.join('\n')}

"no cap" is the state before in-flight caps: the hanging merchant's jobs take every slot for the timeout, and the quiet
merchants wait behind them. With the cap, the hanging merchant holds at most ${CAP} slots; its other jobs are parked
(delayed, not charged, no attempt spent) and promoted one by one as its jobs time out.
`
  await writeSection('slow-merchant', markdown)
  console.info(markdown)
}

await main()
