import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type ConnectionOptions, type Job, Queue } from 'bullmq'
import type { Kafka } from 'kafkajs'
import { createThrottledWorker } from '../../src/adapters/bullmq/index.js'
import { createThrottledConsumer, jsonDecoder } from '../../src/adapters/kafka/index.js'
import { KeyedLimiter, parseRate } from '../../src/limiter/index.js'
import { countBetween, windowCounts } from '../adapters/kafka/support/windows.js'

/**
 * The issue 18 scenario on real servers, shared by the integration tests and
 * bench/layered-fairness.ts (no test-runner imports): a PSP account with a limit of its
 * own over merchants with theirs, jobs limited by `['psp:<psp>', 'psp:<psp>:<merchant>']`,
 * a local HTTP server standing for the PSP endpoint, and what the endpoint saw.
 */

/** PSP is the one PSP of the scenario; its account key is `psp:<PSP>`. */
export const PSP = 'acq'
export const PARENT_KEY = `psp:${PSP}`

/** CallBody is what each job posts to the endpoint: its merchant and when it was queued (wall ms). */
export interface CallBody {
  psp: string
  merchant: string
  sentAtMs: number
}

/** Arrival is one call the endpoint received. */
export interface Arrival {
  merchant: string
  /** atMs: when it arrived, performance.now() of the endpoint's process. */
  atMs: number
  /** waitMs: from being queued to arriving, on the wall clock. */
  waitMs: number
}

/**
 * PspEndpoint is a loopback HTTP server that records each POST /call and answers 200; GET
 * /warm answers 204 and records nothing (see warmUp).
 */
export interface PspEndpoint {
  url: string
  arrivals: Arrival[]
  /** starts: when each call's handler began (performance.now()), the throttle's grant as the handler sees it. */
  starts: number[]
  /**
   * warmUp loads the handler's HTTP client and opens `connections` keep-alive connections
   * to the endpoint. Without it the first burst reached the endpoint ~90 ms after its grants
   * (fetch loads undici on first use) while later calls came in ~1 ms: the window holding
   * the burst then held 61 calls for the limiter's 60 grants (Kafka, 30/s burst 30).
   */
  warmUp(connections: number): Promise<void>
  close(): Promise<void>
}

/** startPspEndpoint listens on 127.0.0.1 on a free port. */
export async function startPspEndpoint(): Promise<PspEndpoint> {
  const arrivals: Arrival[] = []
  const starts: number[] = []
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    if (request.method === 'GET' && request.url === '/warm') {
      request.resume()
      response.writeHead(204).end()
      return
    }
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const atMs = performance.now()
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as CallBody
        arrivals.push({ merchant: body.merchant, atMs, waitMs: Date.now() - body.sentAtMs })
        response.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
      } catch {
        response.writeHead(400).end()
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/call`,
    arrivals,
    starts,
    warmUp: async (connections) => {
      const warm = async () => {
        const response = await fetch(`http://127.0.0.1:${port}/warm`)
        await response.arrayBuffer()
      }
      await Promise.all(Array.from({ length: connections }, warm))
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/**
 * callEndpoint is the plain handler of both adapters: note when it began, POST the job's body,
 * fail on anything but 2xx.
 */
export async function callEndpoint(endpoint: PspEndpoint, body: CallBody): Promise<void> {
  endpoint.starts.push(performance.now())
  const response = await fetch(endpoint.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  await response.arrayBuffer()
  if (!response.ok) throw new Error(`endpoint answered ${response.status}`)
}

/** pspLimitKeys is the scenario's limitKeys: the PSP account, then the merchant within it. */
export function pspLimitKeys(merchantKey: string, data: CallBody): string[] {
  return [`psp:${data.psp}`, `psp:${data.psp}:${merchantKey}`]
}

/** Scenario is one run: rates, who is backlogged by how much, who is quiet, for how long. */
export interface Scenario {
  /** parentRate is the PSP account's rate ('50/s'). */
  parentRate: string
  /** merchantRate is every merchant's rate (the limiter's default, taken by each `psp:<psp>:<merchant>`). */
  merchantRate: string
  /** backlogged: merchant → jobs queued before the traffic starts. */
  backlogged: Record<string, number>
  /** topUpPerSec: merchant → jobs a second added during the traffic (keeps a small backlog standing). */
  topUpPerSec?: Record<string, number>
  /** quiet merchants each send `quietPerSec` jobs a second during the traffic. */
  quiet: string[]
  quietPerSec: number
  /** trafficMs is how long the quiet (and top-up) traffic runs, and the measured stretch. */
  trafficMs: number
  /**
   * merchantKeyOnly limits each job by its merchant key alone, without the PSP's: the
   * baseline of what the endpoint sees without layered keys. Default false.
   */
  merchantKeyOnly?: boolean
}

/** Run is what the endpoint saw, and when the measured stretch was (endpoint clock). */
export interface Run {
  arrivals: Arrival[]
  /** starts: when each handler began (see PspEndpoint.starts). */
  starts: number[]
  trafficFromMs: number
  trafficToMs: number
  /** counted: what the `count` given to the run grew by over the measured stretch. */
  counted?: number
}

/** Summary is the figures the tests assert on and the benchmark reports. */
export interface Summary {
  /** maxIn1s / maxIn5s: the most calls the endpoint saw in any window of 1 s / 5 s, over the whole run. */
  maxIn1s: number
  maxIn5s: number
  /** startsMaxIn1s / startsMaxIn5s: the most handler starts in any window of 1 s / 5 s, over the whole run. */
  startsMaxIn1s: number
  startsMaxIn5s: number
  /** perSec: each merchant's calls a second over the measured stretch. */
  perSec: Record<string, number>
  /** quietP50Ms / quietP99Ms: quiet merchants' waits, queued to arrival. */
  quietP50Ms: number
  quietP99Ms: number
  quietCalls: number
}

/** summarize computes the Summary of a run. */
export function summarize(scenario: Scenario, run: Run): Summary {
  const all = run.arrivals.map((a) => a.atMs).sort((a, b) => a - b)
  const starts = [...run.starts].sort((a, b) => a - b)
  const most = (times: number[], ms: number) => {
    const from = times[0] ?? 0
    const to = (times.at(-1) ?? 0) + 1
    return to - from < ms ? times.length : windowCounts(times, ms, from, to).most
  }
  const window = (ms: number) => most(all, ms)
  const perSec: Record<string, number> = {}
  const seconds = (run.trafficToMs - run.trafficFromMs) / 1000
  for (const merchant of [...Object.keys(scenario.backlogged), ...scenario.quiet]) {
    const times = run.arrivals.filter((a) => a.merchant === merchant).map((a) => a.atMs)
    times.sort((a, b) => a - b)
    perSec[merchant] = countBetween(times, run.trafficFromMs, run.trafficToMs) / seconds
  }
  const quiet = new Set(scenario.quiet)
  const waits = run.arrivals.filter((a) => quiet.has(a.merchant)).map((a) => a.waitMs)
  return {
    maxIn1s: window(1_000),
    maxIn5s: window(5_000),
    startsMaxIn1s: most(starts, 1_000),
    startsMaxIn5s: most(starts, 5_000),
    perSec,
    quietP50Ms: quantile(waits, 0.5),
    quietP99Ms: quantile(waits, 0.99),
    quietCalls: waits.length,
  }
}

/** quantile of `values` (nearest rank); NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!
}

/** scenarioLimiter is the limiter of a run: merchants at merchantRate, the PSP account at parentRate. */
export function scenarioLimiter(scenario: Scenario): KeyedLimiter {
  const limiter = new KeyedLimiter({ rate: scenario.merchantRate })
  limiter.setRate(PARENT_KEY, scenario.parentRate)
  return limiter
}

/**
 * traffic sends the quiet merchants' jobs (and the top-ups) for trafficMs through `send`,
 * each merchant on its own steady schedule, and resolves when the last is sent.
 */
async function traffic(scenario: Scenario, send: (merchant: string) => Promise<void>): Promise<void> {
  const senders: Promise<void>[] = []
  const startMs = performance.now()
  const schedule = (merchant: string, perSec: number) => {
    senders.push(
      (async () => {
        const count = Math.floor((perSec * scenario.trafficMs) / 1000)
        for (let i = 0; i < count; i++) {
          const dueMs = startMs + (i * 1000) / perSec
          const waitMs = dueMs - performance.now()
          if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs))
          await send(merchant)
        }
      })(),
    )
  }
  for (const merchant of scenario.quiet) schedule(merchant, scenario.quietPerSec)
  for (const [merchant, perSec] of Object.entries(scenario.topUpPerSec ?? {})) schedule(merchant, perSec)
  await Promise.all(senders)
  const leftMs = startMs + scenario.trafficMs - performance.now()
  if (leftMs > 0) await new Promise((resolve) => setTimeout(resolve, leftMs))
}

async function until(what: string, condition: () => boolean | Promise<boolean>, timeoutMs: number) {
  const deadline = performance.now() + timeoutMs
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/**
 * runBullmq runs the scenario through a throttled BullMQ worker (concurrency 50) on a
 * fresh queue: the backlogs are queued first and taken in (every job fetched once,
 * parked or delayed), then the traffic runs; the quiet merchants' calls are waited for.
 * `count` (a benchmark's Redis command counter) is read as the measured stretch starts and ends.
 */
export async function runBullmq(
  scenario: Scenario,
  connection: ConnectionOptions,
  queueName: string,
  endpoint: PspEndpoint,
  count?: () => Promise<number>,
): Promise<Run> {
  const queue = new Queue<CallBody>(queueName, { connection })
  const limiter = scenarioLimiter(scenario)
  const worker = createThrottledWorker<CallBody>(
    queueName,
    async (job: Job<CallBody>) => callEndpoint(endpoint, job.data),
    {
      connection,
      limiter,
      concurrency: 50,
      keyOf: (job) => job.data.merchant,
      limitKeys: scenario.merchantKeyOnly === true ? undefined : pspLimitKeys,
    },
  )
  const body = (merchant: string): CallBody => ({ psp: PSP, merchant, sentAtMs: Date.now() })
  try {
    await endpoint.warmUp(50)
    await worker.waitUntilReady()
    for (const [merchant, count] of Object.entries(scenario.backlogged)) {
      for (let i = 0; i < count; i += 500) {
        const n = Math.min(500, count - i)
        await queue.addBulk(Array.from({ length: n }, () => ({ name: 'call', data: body(merchant) })))
      }
    }
    await until('the backlogs taken in', async () => (await queue.getWaitingCount()) === 0, 60_000)
    const countedFrom = await count?.()
    const trafficFromMs = performance.now()
    await traffic(scenario, async (merchant) => {
      await queue.add('call', body(merchant))
    })
    const trafficToMs = performance.now()
    const countedTo = await count?.()
    const counted = countedTo === undefined ? undefined : countedTo - countedFrom!
    const quietSent = Math.floor((scenario.quietPerSec * scenario.trafficMs) / 1000) * scenario.quiet.length
    const quiet = new Set(scenario.quiet)
    await until(
      'the quiet calls',
      () => endpoint.arrivals.filter((a) => quiet.has(a.merchant)).length >= quietSent,
      10_000,
    )
    return {
      arrivals: [...endpoint.arrivals],
      starts: [...endpoint.starts],
      trafficFromMs,
      trafficToMs,
      counted,
    }
  } finally {
    await worker.close(true)
    await queue.obliterate({ force: true })
    await removeBacklogKeys(queue)
    await queue.close()
  }
}

/** removeBacklogKeys deletes the throttle's backlog keys of `queue` (obliterate leaves keys it does not know). */
async function removeBacklogKeys(queue: Queue<CallBody>): Promise<void> {
  const client = (await queue.backend.client) as unknown as {
    scan(cursor: string, ...args: Array<string | number>): Promise<[string, string[]]>
    del(...keys: string[]): Promise<number>
  }
  const pattern = `${queue.opts.prefix ?? 'bull'}:${queue.name}:mt:*`
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    if (keys.length > 0) await client.del(...keys)
    cursor = next
  } while (cursor !== '0')
}

/**
 * runKafka runs the scenario through a throttled consumer on `topic` (which must exist,
 * empty): the backlogs are produced first and the traffic starts once each backlogged
 * merchant has a call at the endpoint; the quiet merchants' calls are waited for.
 */
export async function runKafka(
  scenario: Scenario,
  kafka: Kafka,
  names: { topic: string; deadLetterTopic: string; groupId: string },
  endpoint: PspEndpoint,
): Promise<Run> {
  const producer = kafka.producer()
  await producer.connect()
  const limiter = scenarioLimiter(scenario)
  const consumer = createThrottledConsumer<CallBody>({
    kafka,
    groupId: names.groupId,
    topics: [names.topic],
    deadLetterTopic: names.deadLetterTopic,
    fromBeginning: true,
    limiter,
    decode: jsonDecoder as (value: Buffer | null) => CallBody,
    limitKeys: scenario.merchantKeyOnly === true ? undefined : pspLimitKeys,
    handler: async ({ value }) => callEndpoint(endpoint, value),
  })
  const send = (merchant: string, count: number) =>
    producer.send({
      topic: names.topic,
      messages: Array.from({ length: count }, () => ({
        key: merchant,
        value: JSON.stringify({ psp: PSP, merchant, sentAtMs: Date.now() } satisfies CallBody),
      })),
    })
  try {
    await endpoint.warmUp(50)
    for (const [merchant, count] of Object.entries(scenario.backlogged)) {
      for (let i = 0; i < count; i += 1_000) await send(merchant, Math.min(1_000, count - i))
    }
    await consumer.run()
    const backlogged = Object.keys(scenario.backlogged)
    await until(
      'a call of each backlogged merchant',
      () => backlogged.every((m) => endpoint.arrivals.some((a) => a.merchant === m)),
      60_000,
    )
    // As on BullMQ, where taking the backlogs in takes longer than their bursts: measure past them.
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    const trafficFromMs = performance.now()
    await traffic(scenario, async (merchant) => {
      await send(merchant, 1)
    })
    const trafficToMs = performance.now()
    const quietSent = Math.floor((scenario.quietPerSec * scenario.trafficMs) / 1000) * scenario.quiet.length
    const quiet = new Set(scenario.quiet)
    await until(
      'the quiet calls',
      () => endpoint.arrivals.filter((a) => quiet.has(a.merchant)).length >= quietSent,
      10_000,
    )
    return { arrivals: [...endpoint.arrivals], starts: [...endpoint.starts], trafficFromMs, trafficToMs }
  } finally {
    await consumer.stop()
    await producer.disconnect()
  }
}

/**
 * MAIN is the scenario: a PSP account at 50/s over 5 merchants at 20/s, two of them
 * backlogged with 100× the jobs the quiet ones send over the run (1/s each for 15 s).
 */
export const MAIN: Scenario = {
  parentRate: '50/s',
  merchantRate: '20/s',
  backlogged: { 'm-hot-a': 1_500, 'm-hot-b': 1_500 },
  quiet: ['m-quiet-1', 'm-quiet-2', 'm-quiet-3'],
  quietPerSec: 1,
  trafficMs: 15_000,
}

/**
 * BINDING is the variant where the account binds hard: 30/s over two merchants at 20/s,
 * one with 100× the other's backlog at the start (3,000 against 30), the smaller kept
 * standing by 20 more a second: each should get about 15/s.
 */
export const BINDING: Scenario = {
  parentRate: '30/s',
  merchantRate: '20/s',
  backlogged: { 'm-big': 3_000, 'm-small': 30 },
  topUpPerSec: { 'm-small': 20 },
  quiet: [],
  quietPerSec: 1,
  trafficMs: 15_000,
}

/**
 * DELIVERY_SLACK_MS: how long loopback delivery (fetch, the HTTP parser, one loaded event loop
 * holding both sides) may hold a call after its handler began. Calls held that long can crowd
 * into a window with the ones after them: rate × this many more than were started in it.
 */
export const DELIVERY_SLACK_MS = 100

/**
 * endpointCeilingOf is what the endpoint may see in a window: the ceiling of the starts, and
 * the calls delivery can move into the window (see DELIVERY_SLACK_MS).
 */
export function endpointCeilingOf(rate: string, windowMs: number): number {
  const { limit, intervalMs } = parseRate(rate)
  return ceilingOf(rate, windowMs) + Math.ceil((limit * DELIVERY_SLACK_MS) / intervalMs)
}

/** ceilingOf is what the handlers may start in a window of `windowMs` under `rate`: burst + rate × W. */
export function ceilingOf(rate: string, windowMs: number): number {
  const { limit, intervalMs, burst } = parseRate(rate)
  return burst + (limit * windowMs) / intervalMs
}
