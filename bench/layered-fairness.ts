import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import {
  BINDING,
  MAIN,
  type PspEndpoint,
  runBullmq,
  runKafka,
  type Scenario,
  type Summary,
  startPspEndpoint,
  summarize,
} from '../test/support/layered-fairness.js'
import { fixed, startRedis } from './bullmq-support.js'
import { benchBrokers, benchKafka, createTopic, versionsLine as kafkaVersions } from './kafka-support.js'
import { machineLine, writeSection } from './report.js'

/**
 * Issue 18's fairness figures on real servers, for both adapters: jobs limited by
 * `['psp:acq', 'psp:acq:<merchant>']`, a loopback HTTP server standing for the PSP, and
 * what it saw (the scenario is test/support/layered-fairness.ts, which the integration
 * tests assert on). Run: `npm run bench -- layered-fairness`; BullMQ runs on a private
 * redis-server (as bench/bullmq-backlog.ts), Kafka on $KAFKA_BROKERS (as the kafka-* scenarios).
 */

type Adapter = 'BullMQ' | 'Kafka lanes'

/** Measured is a run's Summary and, on BullMQ, the Redis commands per call over the measured stretch. */
type Measured = Summary & { commandsPerCall?: number }

/**
 * measureBullmq runs the scenario against a private redis-server, so that INFO counts its
 * commands only (BullMQ's own, the throttle's, adding the traffic's jobs), over the measured
 * stretch: the backlogs are parked by then, and the calls are their promotions and the quiet jobs.
 */
async function measureBullmq(scenario: Scenario, endpoint: PspEndpoint, id: string): Promise<Measured> {
  const server = await startRedis()
  const redis = new Redis({ host: '127.0.0.1', port: server.port })
  const commands = async () => Number(/total_commands_processed:(\d+)/.exec(await redis.info('stats'))![1])
  try {
    const connection = { host: '127.0.0.1', port: server.port, maxRetriesPerRequest: null }
    const run = await runBullmq(scenario, connection, `bench-layered-${id}`, endpoint, commands)
    const calls = run.arrivals.filter((a) => a.atMs >= run.trafficFromMs && a.atMs < run.trafficToMs).length
    return { ...summarize(scenario, run), commandsPerCall: run.counted! / calls }
  } finally {
    redis.disconnect()
    await server.stop()
  }
}

async function measure(adapter: Adapter, scenario: Scenario): Promise<Measured> {
  const endpoint = await startPspEndpoint()
  const id = randomUUID().slice(0, 8)
  try {
    if (adapter === 'BullMQ') return await measureBullmq(scenario, endpoint, id)
    const kafka = benchKafka(await benchBrokers(), `bench-layered-${id}`)
    const admin = kafka.admin()
    await admin.connect()
    const topic = `bench-layered-${id}`
    await createTopic(admin, topic, 3)
    await createTopic(admin, `${topic}-dlq`, 1)
    await admin.disconnect()
    const names = { topic, deadLetterTopic: `${topic}-dlq`, groupId: `bench-layered-${id}` }
    return summarize(scenario, await runKafka(scenario, kafka, names, endpoint))
  } finally {
    await endpoint.close()
  }
}

function perSec(summary: Summary, merchants: readonly string[]): string {
  return merchants.map((m) => fixed(summary.perSec[m] ?? 0)).join(' / ')
}

const rows: string[] = []
for (const [name, scenario, limit] of [
  ['50/s over 5 at 20/s, 2 backlogged', MAIN, 'burst 50'],
  ['the same, merchant keys only', { ...MAIN, merchantKeyOnly: true }, 'burst 50'],
  ['30/s over 2 at 20/s, backlogs 100:1', BINDING, 'burst 30'],
  ['the same, merchant keys only', { ...BINDING, merchantKeyOnly: true }, 'burst 30'],
] as const) {
  const backlogged = Object.keys(scenario.backlogged)
  for (const adapter of ['BullMQ', 'Kafka lanes'] as const) {
    const summary = await measure(adapter, scenario)
    console.error(`${adapter} ${name}: ${JSON.stringify(summary)}`)
    const quiet =
      summary.quietCalls === 0 ? 'none' : `${fixed(summary.quietP50Ms, 0)} / ${fixed(summary.quietP99Ms, 0)}`
    const parent = Number(scenario.parentRate.split('/')[0])
    const commands = summary.commandsPerCall === undefined ? 'n/a' : fixed(summary.commandsPerCall)
    rows.push(
      `| ${adapter} | ${name} | ${summary.startsMaxIn1s} / ${summary.startsMaxIn5s} | ${summary.maxIn1s} (${limit} + ${parent}) | ${summary.maxIn5s} (${limit} + ${5 * parent}) | ${backlogged.join(' / ')}: ${perSec(summary, backlogged)} | ${quiet} | ${commands} |`,
    )
  }
}

await writeSection(
  'layered-fairness',
  `## Layered keys: a PSP account over its merchants, at a local PSP endpoint (both adapters)

Each job is limited by \`['psp:acq', 'psp:acq:<merchant>']\` (the adapters' \`limitKeys\`), the merchants at 20/s
(the limiter's default rate), the PSP account at its own rate. A loopback HTTP server stands for the PSP; the handler
POSTs each job to it. Backlogs are queued first and taken in (BullMQ: every job fetched once; Kafka: a call of each
backlogged merchant seen), then ${MAIN.trafficMs / 1_000} s of traffic are measured:

- **50/s over 5 at 20/s, 2 backlogged**: m-hot-a and m-hot-b with 1,500 jobs each, three quiet merchants at 1 job a second.
  Each backlogged merchant may take min(20, (50 − 3) / 2) = 20/s: its own limit binds before the account's.
- **30/s over 2 at 20/s, backlogs 100:1**: m-big with 3,000 jobs, m-small with 30 and 20 more a second; the account
  binds: ~15/s each when it is shared fairly.
- **the same, merchant keys only**: without the account's key (each job limited by its merchant's alone, as before
  issue 18): what the endpoint sees when nothing holds the account's limit, and what the key list costs.

Handler starts most: the most handler calls begun in any window of 1 s / 5 s over the whole run (what the throttle
grants). Endpoint most: the most calls the endpoint received in any window of 1 s / 5 s over the whole run (the bound,
burst + rate × W, in brackets; delivery on loopback can crowd a few more into a window than were started in it). Rates: calls a second over the measured stretch. Quiet: from queued to the endpoint, ms.
Redis commands: the commands a private redis-server processed over the measured stretch (BullMQ's own, the
throttle's, adding the traffic's jobs; the INFO reads too) per call the endpoint received in it. BullMQ: one worker, concurrency 50. Kafka: a 3-partition topic, one
consumer, default options.

${machineLine()}; BullMQ with a private Redis 7 on loopback per run; ${await kafkaVersions()}. The machine was shared
with other work (2 cores).
Command: \`KAFKA_BROKERS=$(cat /tmp/kafka-port) npm run bench -- layered-fairness\`

| adapter | scenario | handler starts most in 1 s / 5 s | endpoint most in 1 s | endpoint most in 5 s | backlogged merchants /s | quiet p50 / p99 ms | Redis commands / call |
| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |
${rows.join('\n')}

Reading it: with the account's key the endpoint stays within burst + rate × W of the account's rate in both adapters
(without it, 40/s reach an account of 30/s), and when the account binds the two merchants get about half each though
one holds 100× the other's backlog. On BullMQ a quiet merchant waits longer beside the backlogs when the account's key
is there: the backlogged merchants' grants through the account run up to the limiter's share lookahead (250 ms)
ahead of it, and a quiet merchant's call takes the account's next slot after them (waited in the process, within the
200 ms lead); Kafka lanes reserve only their head, so the account is never held that far ahead. The Redis commands
per call are BullMQ's (fetch, moves, polling at concurrency 50) and the throttle's; a key list costs more of them
(compare each scenario with its merchant-keys-only row): the limiter grants a list at the merchant's own time, or
defers a merchant past its share, instead of reserving a horizon ahead, so the backlog promotes fewer jobs per call
(see the README's BullMQ adapter, limit keys).`,
)
console.error('wrote the layered-fairness section of docs/benchmarks.md')
