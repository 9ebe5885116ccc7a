// npm run demo [-- --duration <s>] [-- --port <n>]
//
// One command to watch the worker throttle: brings up what is missing (Kafka from its jars
// with scripts/kafka-local, Redis with redis-server), a local merchant endpoint that answers
// some calls with 429 and Retry-After, the worker with its status page, and a producer with
// skewed traffic (a few hot merchants, many quiet ones). Part-way through it raises a hot
// merchant's rate on the control topic, which the page shows. Ctrl-C (or the end of
// --duration) stops everything the demo started, and nothing else.
import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { type AddressInfo, createServer as createNetServer } from 'node:net'
import { dirname, join, relative } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs, promisify } from 'node:util'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { Kafka, logLevel, type Producer } from 'kafkajs'
import { pino } from 'pino'
import { type ControlChange, describeChange, publishControlChange } from '../src/control/index.js'
import { parseRate } from '../src/limiter/index.js'
import { configSchema, DEVELOPMENT_SECRET } from '../src/service/config.js'
import { type RunningService, startService } from '../src/service/service.js'

const execFileAsync = promisify(execFile)
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..')
const kafkaLocal = join(repoRoot, 'scripts', 'kafka-local')

const QUEUE = 'merchant-throttle-demo'
/** CONTROL_TOPIC is this run's own: the rates start from the demo's snapshot, whatever ran before. */
const CONTROL_TOPIC = `merchant-throttle.demo-control-${Date.now().toString(36)}`
const DEFAULT_RATE = '4/s'
/** CHANGE_AFTER_S is when the demo publishes its rate change. */
const CHANGE_AFTER_S = 20
const TICK_MS = 100
/** WORKER_LOG keeps the worker's JSON log out of the terminal, where the demo reports. */
const WORKER_LOG = join(repoRoot, '.cache', 'demo', 'worker.log')

/** HOT are the merchants that send more than their rate allows, or close to it. */
const HOT = [
  { merchant: 'acme-store', rate: '20/s', offeredPerSec: 26 },
  { merchant: 'globex-shop', rate: '12/s', offeredPerSec: 14 },
  { merchant: 'initech-pay', rate: '10/s', offeredPerSec: 8 },
] as const
/**
 * OVERLOAD is a merchant whose endpoint is overloaded for `forS` seconds every `everyS`,
 * from `firstAtS` after the traffic starts: it answers 429 with Retry-After, and the worker
 * halves its rate, then restores it step by step.
 */
const OVERLOAD = { merchant: 'initech-pay', firstAtS: 8, forS: 1.5, everyS: 60, retryAfterS: 2 } as const
const QUIET = Array.from({ length: 24 }, (_, i) => ({
  merchant: `m-${1001 + i}`,
  // A long tail: a few quiet merchants send a job every second or two, most far less.
  offeredPerSec: 1.2 / (1 + i * 0.6),
}))
/** CHANGE raises the busiest merchant's rate: its backlog drains, then it runs at what it offers. */
const CHANGE = { merchant: 'acme-store', rate: '40/s' } as const

const USAGE = `usage: npm run demo [-- --duration <seconds>] [-- --port <port>]

Brings up Kafka (scripts/kafka-local) and Redis when they are not running, a local merchant
endpoint, the worker and its status page, and a producer; ${CHANGE_AFTER_S} s in, raises ${CHANGE.merchant}'s
rate to ${CHANGE.rate}. Ctrl-C stops what it started. Environment: KAFKA_BROKERS and REDIS_URL
use services of your own instead.`

interface Options {
  durationS: number | undefined
  port: number
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string' },
      port: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) return undefined
  const durationS = values.duration === undefined ? undefined : Number(values.duration)
  if (durationS !== undefined && !(Number.isFinite(durationS) && durationS > 0)) {
    throw new TypeError(
      `--duration: expected a number of seconds > 0, got ${JSON.stringify(values.duration)}`,
    )
  }
  const port = values.port === undefined ? 8080 : Number(values.port)
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new TypeError(`--port: expected a port number, got ${JSON.stringify(values.port)}`)
  }
  return { durationS, port }
}

function say(line: string): void {
  process.stdout.write(`${line}\n`)
}

/** stopRequested is set by Ctrl-C (SIGINT) or SIGTERM. */
let stopRequested = false

/** Cleanup steps run last-in first-out, each once, whatever failed before. */
const cleanups: Array<{ name: string; run: () => Promise<void> }> = []

async function cleanUp(): Promise<void> {
  while (cleanups.length > 0) {
    const step = cleanups.pop()!
    try {
      await step.run()
    } catch (error) {
      process.stderr.write(`demo: ${step.name} failed: ${(error as Error).message}\n`)
    }
  }
}

async function main(): Promise<number> {
  let options: Options | undefined
  try {
    options = parseOptions(process.argv.slice(2))
  } catch (error) {
    process.stderr.write(`demo: ${(error as Error).message}\n${USAGE}\n`)
    return 2
  }
  if (options === undefined) {
    say(USAGE)
    return 0
  }

  let wake: () => void = () => {}
  const stopped = new Promise<void>((resolve) => {
    wake = resolve
  })
  let signals = 0
  const onSignal = () => {
    signals++
    if (signals > 1) {
      process.stderr.write('demo: second signal, exiting now; some of what it started may still run\n')
      process.exit(130)
    }
    say('\nstopping…')
    stopRequested = true
    wake()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  say('merchant-throttle demo')
  const redisUrl = await bringUpRedis()
  if (stopRequested) return 0
  const brokers = await bringUpKafka()
  if (stopRequested) return 0

  const kafka = new Kafka({ clientId: 'merchant-throttle-demo', brokers, logLevel: logLevel.NOTHING })
  const admin = kafka.admin()
  await admin.connect()
  cleanups.push({ name: 'closing the Kafka admin client', run: () => admin.disconnect() })
  cleanups.push({
    name: 'deleting the demo control topic',
    run: async () => {
      if ((await admin.listTopics()).includes(CONTROL_TOPIC))
        await admin.deleteTopics({ topics: [CONTROL_TOPIC] })
    },
  })
  const producer = kafka.producer()
  await producer.connect()
  cleanups.push({ name: 'closing the control producer', run: () => producer.disconnect() })

  const endpoint = await startMerchantEndpoint()
  const queue = new Queue(QUEUE, { connection: { url: redisUrl } })
  await queue.obliterate({ force: true })
  cleanups.push({
    name: 'removing the demo queue',
    run: async () => {
      await queue.obliterate({ force: true })
      await queue.close()
    },
  })

  // The worker creates its control topic (compacted) and reads it before it takes jobs.
  const service = await startWorker(redisUrl, brokers, options.port)
  cleanups.push({ name: 'stopping the worker', run: () => service.stop() })

  // The demo's starting rates, as one snapshot, the way an operator would publish a rates file.
  await publish(producer, {
    type: 'snapshot',
    version: versionNow(),
    default: parseRate(DEFAULT_RATE),
    overrides: new Map(HOT.map((h) => [h.merchant, parseRate(h.rate)])),
  })
  for (let i = 0; i < 100 && service.status().control.applied === 0; i++) await sleep(100)

  endpoint.trafficStartedAtMs = performance.now()
  const producing = produce(queue, endpoint.url)
  cleanups.push({ name: 'stopping the producer', run: () => producing.stop() })

  say(`  traffic   ${HOT.map((h) => `${h.merchant} ${h.offeredPerSec}/s against ${h.rate}`).join(', ')};`)
  say(`            ${QUIET.length} quiet merchants at ${DEFAULT_RATE} (the default), each well under it`)
  say('')
  say(`  open ${service.url}/  (Ctrl-C stops the demo)`)
  say('')

  const startedAtMs = performance.now()
  const endAtMs =
    options.durationS === undefined ? Number.POSITIVE_INFINITY : startedAtMs + options.durationS * 1_000
  let changed = false
  let nextReportS = 5
  while (!stopRequested && performance.now() < endAtMs) {
    await Promise.race([stopped, sleep(250)])
    const elapsedS = (performance.now() - startedAtMs) / 1_000
    if (!changed && elapsedS >= CHANGE_AFTER_S && !stopRequested) {
      changed = true
      const change: ControlChange = {
        type: 'set',
        merchant: CHANGE.merchant,
        rate: parseRate(CHANGE.rate),
        version: versionNow(),
      }
      await publish(producer, change)
      say(
        `t+${Math.round(elapsedS)}s  published on ${CONTROL_TOPIC}: ${describeChange(change)} — watch ${CHANGE.merchant}'s chart`,
      )
      say(
        `        (the same with the CLI: throttlectl set ${CHANGE.merchant} ${CHANGE.rate} --topic ${CONTROL_TOPIC})`,
      )
    }
    if (elapsedS >= nextReportS) {
      nextReportS += 5
      say(`t+${Math.round(elapsedS)}s  ${report(service, endpoint)}`)
    }
  }
  if (!stopRequested) say('duration reached: stopping…')
  return 0

  async function publish(p: Producer, change: ControlChange): Promise<void> {
    await publishControlChange(p, change, { topic: CONTROL_TOPIC })
  }
}

/** versionNow is a control version as throttlectl makes them: wall-clock microseconds. */
function versionNow(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1_000)
}

/** bringUpRedis uses REDIS_URL, or what answers on 127.0.0.1:6379, or starts redis-server there. */
async function bringUpRedis(): Promise<string> {
  const fromEnv = process.env.REDIS_URL
  if (fromEnv !== undefined && fromEnv !== '') {
    say(`  redis     ${fromEnv} (REDIS_URL)`)
    return fromEnv
  }
  const url = 'redis://127.0.0.1:6379'
  if (await redisAnswers(url)) {
    say(`  redis     ${url} (already running; left running)`)
    return url
  }
  try {
    await execFileAsync('redis-server', [
      '--daemonize',
      'yes',
      '--bind',
      '127.0.0.1',
      '--port',
      '6379',
      '--save',
      '',
      '--appendonly',
      'no',
    ])
  } catch (error) {
    throw new Error(
      `nothing answers on 127.0.0.1:6379 and redis-server did not start (${(error as Error).message}); install it (apt-get install redis-server) or set REDIS_URL`,
    )
  }
  cleanups.push({
    name: 'stopping the Redis the demo started',
    run: async () => {
      const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
      // SHUTDOWN answers by closing the connection: that close, and its error, are the success.
      client.on('error', () => undefined)
      await client.connect()
      await client.shutdown('NOSAVE').catch(() => undefined)
      client.disconnect()
      say('  redis     stopped (the demo had started it)')
    },
  })
  for (let i = 0; i < 50 && !(await redisAnswers(url)); i++) await sleep(100)
  say(`  redis     ${url} (started by the demo; stopped on exit)`)
  return url
}

async function redisAnswers(url: string): Promise<boolean> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => undefined)
  try {
    await client.connect()
    return (await client.ping()) === 'PONG'
  } catch {
    return false
  } finally {
    client.disconnect()
  }
}

/**
 * bringUpKafka uses KAFKA_BROKERS, or starts (or reuses) the scripts/kafka-local broker under
 * a lease held by this process: on exit the lease is released, which stops the broker only
 * when the demo started it and no one else holds it.
 */
async function bringUpKafka(): Promise<string[]> {
  const fromEnv = process.env.KAFKA_BROKERS
  if (fromEnv !== undefined && fromEnv !== '') {
    say(`  kafka     ${fromEnv} (KAFKA_BROKERS)`)
    return fromEnv.split(',').map((b) => b.trim())
  }
  const running = await execFileAsync(kafkaLocal, ['status']).then(
    () => true,
    () => false,
  )
  if (!running) say('  kafka     starting scripts/kafka-local (a KRaft broker from Maven Central jars)…')
  const lease = String(process.pid)
  cleanups.push({
    name: 'releasing the Kafka broker',
    run: async () => {
      await execFileAsync(kafkaLocal, ['release', lease])
      if (!running) say('  kafka     released (stopped unless another run still uses it)')
    },
  })
  const { stdout } = await execFileAsync(kafkaLocal, ['start'], {
    env: { ...process.env, KAFKA_LOCAL_LEASE: lease },
  })
  const address = stdout.trim().split('\n').pop() ?? ''
  say(
    `  kafka     ${address} (${running ? 'already running; left running' : 'started by the demo; stopped on exit'})`,
  )
  return [address]
}

interface MerchantEndpoint {
  url: string
  /** trafficStartedAtMs is when the producer started (performance.now), for the overload schedule. */
  trafficStartedAtMs: number
  received: number
  refused: number
}

/**
 * startMerchantEndpoint plays every merchant's webhook endpoint on 127.0.0.1: it answers
 * 200 after 5–25 ms, except the OVERLOAD merchant's calls while it is overloaded, answered
 * 429 with Retry-After.
 */
async function startMerchantEndpoint(): Promise<MerchantEndpoint> {
  const endpoint: MerchantEndpoint = {
    url: '',
    trafficStartedAtMs: Number.POSITIVE_INFINITY,
    received: 0,
    refused: 0,
  }
  const overloaded = (merchant: string): boolean => {
    if (merchant !== OVERLOAD.merchant) return false
    const sinceS = (performance.now() - endpoint.trafficStartedAtMs) / 1_000 - OVERLOAD.firstAtS
    return sinceS >= 0 && sinceS % OVERLOAD.everyS < OVERLOAD.forS
  }
  const server: Server = createServer((request, response) => {
    request.resume()
    request.on('end', () => {
      endpoint.received++
      if (overloaded(decodeURIComponent((request.url ?? '').split('/').pop() ?? ''))) {
        endpoint.refused++
        response.writeHead(429, { 'retry-after': String(OVERLOAD.retryAfterS) }).end()
        return
      }
      setTimeout(() => response.writeHead(200).end(), 5 + Math.random() * 20)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  endpoint.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  cleanups.push({
    name: 'stopping the merchant endpoint',
    run: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  })
  say(`  merchants ${endpoint.url}/hooks/<merchant>`)
  say(
    `            ${OVERLOAD.merchant} is overloaded for ${OVERLOAD.forS} s every ${OVERLOAD.everyS} s from t+${OVERLOAD.firstAtS}s: 429, Retry-After: ${OVERLOAD.retryAfterS}`,
  )
  return endpoint
}

async function startWorker(redisUrl: string, brokers: string[], wantedPort: number): Promise<RunningService> {
  let port = wantedPort
  if (port !== 0 && !(await portIsFree(port))) {
    say(`  worker    port ${port} is taken: using a free one (choose one with --port)`)
    port = 0
  }
  const config = configSchema.parse({
    http: { host: '127.0.0.1', port },
    log: { level: 'info', pretty: 'never' },
    redis: { url: redisUrl },
    kafka: { brokers, clientId: 'merchant-throttle-demo' },
    limiter: { defaultRate: DEFAULT_RATE },
    control: { source: 'kafka', topic: CONTROL_TOPIC },
    sources: [{ kind: 'bullmq', queue: QUEUE, handler: 'webhook', concurrency: 50 }],
    webhook: { client: { allowHosts: ['127.0.0.1'] }, defaultSecret: DEVELOPMENT_SECRET },
    metrics: { merchantLabels: HOT.map((h) => h.merchant) },
    shutdown: { deadlineMs: 5_000 },
  })
  mkdirSync(dirname(WORKER_LOG), { recursive: true })
  const logger = pino({ level: 'info' }, pino.destination({ dest: WORKER_LOG, sync: true, append: false }))
  say(`  worker    logs in ${relative(process.cwd(), WORKER_LOG)}`)
  return startService(config, logger)
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createNetServer()
    probe.once('error', () => resolve(false))
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)))
  })
}

/**
 * produce adds webhook jobs every TICK_MS for the time that passed since the last tick (a
 * late timer on a busy machine does not lower the traffic): hot merchants steadily, with
 * fractions carried over, quiet ones at random with the same average.
 */
function produce(queue: Queue, endpointUrl: string): { stop(): Promise<void> } {
  const senders = [...HOT, ...QUIET]
  const carry = new Map<string, number>()
  let adding: Promise<unknown> = Promise.resolve()
  let lastTickMs = performance.now()
  const timer = setInterval(() => {
    const nowMs = performance.now()
    const elapsedS = (nowMs - lastTickMs) / 1_000
    lastTickMs = nowMs
    const jobs: Array<{ name: string; data: Record<string, unknown>; opts: Record<string, unknown> }> = []
    for (const { merchant, offeredPerSec } of senders) {
      const expected = offeredPerSec * elapsedS
      let count: number
      if (offeredPerSec >= 5) {
        const due = expected + (carry.get(merchant) ?? 0)
        count = Math.floor(due)
        carry.set(merchant, due - count)
      } else {
        count = Math.random() < expected ? 1 : 0
      }
      for (let i = 0; i < count; i++) {
        const eventId = `evt_${randomUUID()}`
        jobs.push({
          name: 'webhook',
          data: {
            merchantId: merchant,
            eventId,
            url: `${endpointUrl}/hooks/${encodeURIComponent(merchant)}`,
            payload: {
              type: 'payment.succeeded',
              id: eventId,
              amount: 1_000 + Math.floor(Math.random() * 90_000),
            },
          },
          opts: { removeOnComplete: true, removeOnFail: 1_000 },
        })
      }
    }
    if (jobs.length === 0) return
    adding = adding
      .then(() => queue.addBulk(jobs))
      .catch((error: unknown) =>
        process.stderr.write(`demo: adding jobs failed: ${(error as Error).message}\n`),
      )
  }, TICK_MS)
  return {
    async stop() {
      clearInterval(timer)
      await adding
    },
  }
}

function report(service: RunningService, endpoint: MerchantEndpoint): string {
  const status = service.status()
  const delivered = status.merchants.reduce((sum, m) => sum + m.deliveredLastMinute, 0)
  const waiting = status.merchants.reduce((sum, m) => sum + m.waiting, 0)
  const hot = HOT.map((h) => {
    const row = status.merchants.find((m) => m.merchantKey === h.merchant)
    return row === undefined ? `${h.merchant} –` : `${h.merchant} ${row.rate}, ${row.waiting} waiting`
  })
  return `${delivered} delivered in the last minute, ${waiting} waiting, ${endpoint.refused} answered 429 · ${hot.join(' · ')}`
}

let exitCode = 1
try {
  exitCode = await main()
} catch (error) {
  // Ctrl-C while a step starts (kafka-local gets the signal too) fails that step: that is the stop asked for.
  if (stopRequested) exitCode = 0
  else process.stderr.write(`demo: ${(error as Error).message}\n`)
} finally {
  await cleanUp()
}
if (exitCode === 0) say('demo stopped: everything it started is stopped.')
process.exit(exitCode)
