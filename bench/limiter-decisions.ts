import { type Contender, contender, IN_FLIGHT, RATE_PER_SEC } from './limiter-contenders.js'
import {
  childContender,
  formatNumber,
  formatRatio,
  type Measurement,
  machineDescription,
  makeKeys,
  markdownTable,
  measureInChildren,
  randomOrder,
  reportToParent,
  type Summary,
  summarize,
  versionOf,
} from './limiter-harness.js'
import { median, writeSection } from './report.js'

/**
 * Decisions per second: how many take-a-token-or-not answers each limiter gives, on one
 * hot key and on 100,000 keys in random order. Every contender runs in a fresh process
 * (no JIT state shared between them), three times, interleaved.
 *
 *   node --import tsx bench/limiter-decisions.ts [hot-key|100k-keys]
 */

/** Scenario is one key population the decisions are measured on. */
interface Scenario {
  section: string
  title: string
  keyCount: number
  /** contenders by name, in table order; merchant-throttle's batch form first (the ratios' base). */
  contenders: readonly string[]
}

const ALL = [
  'merchant-throttle-batch',
  'merchant-throttle-clock',
  'map-lookup-floor',
  'plain-map-bucket',
  'limiter-token-bucket',
  'limiter-rate-limiter',
  'rate-limiter-flexible',
  'rate-limiter-flexible-in-flight',
  'bottleneck-group',
  'bottleneck-group-in-flight',
]

const SCENARIOS: Readonly<Record<string, Scenario>> = {
  'hot-key': {
    section: 'limiter-hot-key',
    title: 'Limiter: decisions per second, one hot key',
    keyCount: 1,
    contenders: ALL,
  },
  '100k-keys': {
    section: 'limiter-100k-keys',
    title: 'Limiter: decisions per second, 100,000 keys in random order',
    keyCount: 100_000,
    contenders: ALL,
  },
}

const RUNS = 5
const WARM_UP_MS = 300
/**
 * WINDOWS of WINDOW_MS each are measured per run. The figure compared is decisions per
 * second of CPU time used by the process, which other processes on a shared machine
 * cannot stretch; the wall-clock rate of the best window is shown beside it.
 */
const WINDOWS = 5
const WINDOW_MS = 200
/** BATCH is how many synchronous decisions share one clock reading (as an adapter's batch does). */
const BATCH = 1_000
/**
 * ORDER_LENGTH is the length of the precomputed random access sequence (a power of two):
 * 2,097,152 indices, so that a run's decisions, about as many, never go round a short
 * sequence that keeps part of the table in cache.
 */
const ORDER_LENGTH = 1 << 21

/** Window is what one measured stretch of decisions counted. */
interface Window {
  decisions: number
  granted: number
  wallMs: number
  cpuMs: number
}

/** Driver makes decisions for a while, continuing the access sequence where it left off. */
type Driver = (durationMs: number) => Window | Promise<Window>

function cpuMsSince(start: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(start)
  return (used.user + used.system) / 1_000
}

function syncDriver(
  decide: (key: string, nowMs: number) => boolean,
  keys: readonly string[],
  order: Uint32Array,
): Driver {
  const mask = order.length - 1
  let next = 0
  return (durationMs) => {
    let decisions = 0
    let granted = 0
    const cpuStart = process.cpuUsage()
    const startMs = performance.now()
    const endMs = startMs + durationMs
    let nowMs = startMs
    do {
      for (let i = 0; i < BATCH; i++) {
        if (decide(keys[order[next++ & mask]!]!, nowMs)) granted++
      }
      decisions += BATCH
      nowMs = performance.now()
    } while (nowMs < endMs)
    return { decisions, granted, wallMs: nowMs - startMs, cpuMs: cpuMsSince(cpuStart) }
  }
}

function asyncDriver(
  decide: (key: string) => Promise<boolean>,
  inFlight: number,
  keys: readonly string[],
  order: Uint32Array,
): Driver {
  const mask = order.length - 1
  let next = 0
  const answers = new Array<Promise<boolean>>(inFlight)
  return async (durationMs) => {
    let decisions = 0
    let granted = 0
    const cpuStart = process.cpuUsage()
    const startMs = performance.now()
    const endMs = startMs + durationMs
    let nowMs = startMs
    do {
      if (inFlight === 1) {
        if (await decide(keys[order[next++ & mask]!]!)) granted++
      } else {
        for (let i = 0; i < inFlight; i++) answers[i] = decide(keys[order[next++ & mask]!]!)
        for (const answer of await Promise.all(answers)) if (answer) granted++
      }
      decisions += inFlight
      nowMs = performance.now()
    } while (nowMs < endMs)
    return { decisions, granted, wallMs: nowMs - startMs, cpuMs: cpuMsSince(cpuStart) }
  }
}

/** prefill gives every key its state, so the measurement is of decisions, not of admissions. */
async function prefill(subject: Contender, keys: readonly string[]): Promise<void> {
  if (subject.decide !== undefined) {
    const nowMs = performance.now()
    for (const key of keys) subject.decide(key, nowMs)
    return
  }
  for (let from = 0; from < keys.length; from += 1_000) {
    await Promise.all(keys.slice(from, from + 1_000).map((key) => subject.decideAsync!(key)))
  }
}

async function measureChild(scenario: Scenario, name: string): Promise<never> {
  const subject = contender(name)
  const keys = makeKeys(scenario.keyCount)
  const order =
    scenario.keyCount === 1 ? new Uint32Array(ORDER_LENGTH) : randomOrder(keys.length, ORDER_LENGTH)
  if (subject.prefills) await prefill(subject, keys)
  const drive =
    subject.decide !== undefined
      ? syncDriver(subject.decide, keys, order)
      : asyncDriver(subject.decideAsync!, subject.inFlight ?? 1, keys, order)
  await drive(WARM_UP_MS)
  const total = { decisions: 0, granted: 0, cpuMs: 0 }
  let bestWallRate = 0
  for (let window = 0; window < WINDOWS; window++) {
    const counts = await drive(WINDOW_MS)
    bestWallRate = Math.max(bestWallRate, (counts.decisions * 1_000) / counts.wallMs)
    total.decisions += counts.decisions
    total.granted += counts.granted
    total.cpuMs += counts.cpuMs
  }
  const held = subject.size()
  if (subject.prefills ? held !== scenario.keyCount : held > scenario.keyCount) {
    throw new Error(`${name}: holds ${held} keys, expected ${scenario.keyCount}`)
  }
  return reportToParent({
    value: (total.decisions * 1_000) / total.cpuMs,
    detail: {
      bestWallRate,
      grantedShare: total.granted / total.decisions,
    },
  })
}

const HEADER = [
  'contender',
  'version',
  'one decision',
  'decisions per CPU-second, median',
  `min – max of ${RUNS} runs`,
  'per wall-clock second, best window, median',
  'granted',
  'merchant-throttle (batch) ÷ this',
]

/** TARGET_OVER_PEER is how many times the fastest peer's rate merchant-throttle keeps on one hot key. */
const TARGET_OVER_PEER = 3
/** TARGET_OF_FLOOR is the fraction of a bare Map lookup's rate merchant-throttle keeps on 100,000 keys. */
const TARGET_OF_FLOOR = 0.7

/** floorShare is the median over runs of merchant-throttle's rate ÷ the floor's in the same run (adjacent processes). */
function floorShare(results: Map<string, Measurement[]>): { median: number; min: number; max: number } {
  const ours = results.get('merchant-throttle-batch')!
  const floor = results.get('map-lookup-floor')!
  const shares = ours.map((m, run) => m.value / floor[run]!.value).sort((a, b) => a - b)
  return { median: median(shares), min: shares[0]!, max: shares[shares.length - 1]! }
}

function section(
  name: string,
  scenario: Scenario,
  results: Map<string, Measurement[]>,
  summaries: Map<string, Summary>,
  versions: Map<string, string>,
  clockNs: number,
): string {
  const cpuRate = (contenderName: string) => summaries.get(contenderName)!.median
  const wallRate = (contenderName: string) => summaries.get(contenderName)!.details.bestWallRate!
  const base = cpuRate('merchant-throttle-batch')
  const rows = scenario.contenders.map((contenderName) => {
    const subject = contender(contenderName)
    const s = summaries.get(contenderName)!
    const granted = s.details.grantedShare!
    return [
      subject.label,
      versions.get(contenderName)!,
      subject.call,
      `**${formatNumber(s.median)}**`,
      `${formatNumber(s.min)} – ${formatNumber(s.max)}`,
      formatNumber(s.details.bestWallRate!),
      granted === 1 ? 'all' : `${(granted * 100).toFixed(2)} %`,
      formatRatio(base / s.median),
    ]
  })
  const fastestBy = (rate: (n: string) => number) =>
    scenario.contenders
      .filter((contenderName) => contender(contenderName).peer)
      .reduce((a, b) => (rate(a) >= rate(b) ? a : b))
  const fastest = fastestBy(cpuRate)
  const fastestWall = fastestBy(wallRate)
  const ratio = base / cpuRate(fastest)
  const wallRatio = wallRate('merchant-throttle-batch') / wallRate(fastestWall)
  const clockRatio = cpuRate('merchant-throttle-clock') / cpuRate(fastest)
  const plainRatio = base / cpuRate('plain-map-bucket')
  const many = scenario.keyCount > 1
  const notPrefilled = [
    ...new Set(
      scenario.contenders.filter((n) => !contender(n).prefills).map((n) => contender(n).packageName),
    ),
  ]
  const share = floorShare(results)
  const percent = (r: number) => `${(r * 100).toFixed(0)} %`
  const overPeer = `${ratio.toFixed(2)}×, ${ratio >= TARGET_OVER_PEER ? 'met' : 'not met'}`
  const ofFloor = `${percent(share.median)} (${percent(share.min)} – ${percent(share.max)} over the runs), ${share.median >= TARGET_OF_FLOOR ? 'met' : 'not met'}`
  const target = many
    ? `**Target: at least ${percent(TARGET_OF_FLOOR)} of a bare \`Map<string, number>\` lookup of the same keys.** merchant-throttle with time read per batch, as a share of the floor in the same run (each run's two adjacent processes, median of ${RUNS}): **${ofFloor}**. Against the fastest peer (${contender(fastest).label}, ${formatNumber(cpuRate(fastest))}/s): ${ratio.toFixed(2)}×.`
    : `**Target: at least ${TARGET_OVER_PEER}× the fastest peer.** Fastest peer per CPU-second: ${contender(fastest).label}, ${formatNumber(cpuRate(fastest))}/s; merchant-throttle with time read per batch: **${overPeer}**. As a share of a bare \`Map\` lookup of the key in the same run: ${percent(share.median)}.`
  return `## ${scenario.title}

${machineDescription()}. One \`performance.now()\` reading costs ${clockNs.toFixed(0)} ns of CPU here.

Reproduce: \`npm run bench -- limiter-decisions\` (this table alone: \`node --import tsx bench/limiter-decisions.ts ${name}\`).

Every contender ran in a fresh process, ${RUNS} times, interleaved with the others. A run gives ${many ? `each of the ${scenario.keyCount.toLocaleString('en-US')} keys` : 'the key'} its state first (16-character flat strings \`merchant-0000000\`…${many && notPrefilled.length > 0 ? `; except ${notPrefilled.join(' and ')}, see below` : ''}), warms up for ${WARM_UP_MS} ms, then makes decisions ${many ? `on keys drawn from a fixed pseudo-random sequence of ${ORDER_LENGTH.toLocaleString('en-US')} indices ` : ''}for ${WINDOWS} windows of ${WINDOW_MS} ms. The machine is shared with other test runs (see the load average), so the figure compared is decisions per second of CPU time the measuring process used, which waiting for a core does not stretch; the wall-clock rate of each run's best window is shown beside it. The rate is ${RATE_PER_SEC.toLocaleString('en-US')}/s per key for every contender, so no limit binds and every decision counts, granted or not ("granted" says how many were). Synchronous contenders decide in batches of ${BATCH.toLocaleString('en-US')} with one \`performance.now()\` reading per batch, passed to those whose API takes the time; the others read the clock on every call, as their users get them.

${markdownTable(HEADER, rows)}

${target} Per wall-clock second (best windows; fastest peer ${contender(fastestWall).label}): ${wallRatio.toFixed(2)}×. Reading the clock on every call (\`tryAcquire\`): ${clockRatio.toFixed(2)}× the fastest peer per CPU-second. Against the hand-written \`Map\` bucket, which has no skew guard, no per-key rates and no bound on keys: ${plainRatio.toFixed(2)}×.

How the peers were driven: \`limiter\` reads \`performance.now()\` inside every call and rate-limiter-flexible \`Date.now()\`; neither takes the time as an argument. rate-limiter-flexible's RateLimiterMemory is a fixed window, not a token bucket (here ${(RATE_PER_SEC * 60).toLocaleString('en-US')} points per 60 s, with an empty key prefix, its fastest configuration); it answers through a promise that rejects when refused. Bottleneck schedules jobs rather than answering yes or no, and never refuses: a decision is one awaited no-op job, and every job passes through a timer, so its wall-clock rate mostly measures timers (its CPU-second rate is what a decision costs the process); the rows with ${IN_FLIGHT} in flight issue that many calls and await them together.${many ? ` Bottleneck's keys were not given state first: ${scenario.keyCount.toLocaleString('en-US')} Bottleneck limiters, each with a 250 ms heartbeat timer, took minutes and 2 GB to create, so its decisions here include creating a limiter for most keys.` : ''}`
}

/** clockReadNs is the CPU cost of one performance.now() call in ns, over a million calls. */
function clockReadNs(): number {
  const calls = 1_000_000
  const start = process.cpuUsage()
  for (let i = 0; i < calls; i++) performance.now()
  const used = process.cpuUsage(start)
  return ((used.user + used.system) * 1_000) / calls
}

async function runScenario(name: string, scenario: Scenario): Promise<void> {
  console.error(`${scenario.section}: ${scenario.contenders.length} contenders × ${RUNS} runs`)
  const versions = new Map(scenario.contenders.map((n) => [n, versionOf(contender(n).packageName)]))
  const clockNs = clockReadNs()
  const results = await measureInChildren({
    file: import.meta.url,
    contenders: scenario.contenders,
    runs: RUNS,
    args: ['--scenario', scenario.section],
  })
  const summaries = new Map([...results].map(([name, runs]) => [name, summarize(runs)]))
  const markdown = section(name, scenario, results, summaries, versions, clockNs)
  await writeSection(scenario.section, markdown)
  console.log(markdown)
}

const child = childContender()
if (child !== undefined) {
  const at = process.argv.indexOf('--scenario')
  const scenario = Object.values(SCENARIOS).find((s) => s.section === process.argv[at + 1])!
  await measureChild(scenario, child)
} else {
  const chosen = process.argv.slice(2)
  for (const name of chosen.length === 0 ? Object.keys(SCENARIOS) : chosen) {
    const scenario = SCENARIOS[name]
    if (scenario === undefined) {
      throw new TypeError(`expected a scenario among ${Object.keys(SCENARIOS).join(', ')}, got ${name}`)
    }
    await runScenario(name, scenario)
  }
}
