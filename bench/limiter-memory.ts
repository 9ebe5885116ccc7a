import { type Contender, contender } from './limiter-contenders.js'
import {
  childContender,
  formatRatio,
  machineDescription,
  makeConsKeys,
  makeKeys,
  markdownTable,
  measureInChildren,
  reportToParent,
  type Summary,
  summarize,
  versionOf,
} from './limiter-harness.js'
import { writeSection } from './report.js'

/**
 * Heap bytes per key: what each limiter holds for a million keys, key strings included.
 * Each row runs in a fresh process with `--expose-gc`: take heapUsed + arrayBuffers after
 * a full GC, make the keys, decide once on each (which creates its state), drop the key
 * list, collect again, and divide the growth by the number of keys.
 *
 *   node --import tsx bench/limiter-memory.ts
 */

/** Row is one line of the table: a contender, how many keys it holds, how they were built. */
interface Row {
  contender: string
  label: string
  keyCount: number
  /** consKeys builds the keys by template literal (cons strings) instead of decoding them from a Buffer. */
  consKeys: boolean
}

const MILLION = 1_000_000
/** BOTTLENECK_KEYS is fewer: each Bottleneck limiter holds a heartbeat timer and several KB. */
const BOTTLENECK_KEYS = 10_000

const ROWS: Readonly<Record<string, Row>> = {
  'merchant-throttle': {
    contender: 'merchant-throttle-batch',
    label: 'merchant-throttle KeyedLimiter',
    keyCount: MILLION,
    consKeys: false,
  },
  'keys-alone': {
    contender: 'keys-alone',
    label: '`Map<string, number>`: the keys alone',
    keyCount: MILLION,
    consKeys: false,
  },
  'keys-alone-cons': {
    contender: 'keys-alone',
    label: '`Map<string, number>`, keys built by template literal (cons strings)',
    keyCount: MILLION,
    consKeys: true,
  },
  'plain-map-bucket': {
    contender: 'plain-map-bucket',
    label: 'plain `Map<string, {tokens, last}>` token bucket',
    keyCount: MILLION,
    consKeys: false,
  },
  'limiter-token-bucket': {
    contender: 'limiter-token-bucket',
    label: 'limiter TokenBucket, one per key in a Map',
    keyCount: MILLION,
    consKeys: false,
  },
  'limiter-rate-limiter': {
    contender: 'limiter-rate-limiter',
    label: 'limiter RateLimiter, one per key in a Map',
    keyCount: MILLION,
    consKeys: false,
  },
  'rate-limiter-flexible': {
    contender: 'rate-limiter-flexible',
    label: 'rate-limiter-flexible RateLimiterMemory',
    keyCount: MILLION,
    consKeys: false,
  },
  'bottleneck-group': {
    contender: 'bottleneck-group',
    label: 'bottleneck Group',
    keyCount: BOTTLENECK_KEYS,
    consKeys: false,
  },
}

const RUNS = 3
/** TARGET_OVER_KEYS is issue 15's bound at a million keys: a multiple of the keys alone, key strings included. */
const TARGET_OVER_KEYS = 1.2

function heapBytes(): number {
  const usage = process.memoryUsage()
  return usage.heapUsed + usage.arrayBuffers
}

/** collect runs full collections until freed ArrayBuffer memory has been returned too. */
async function collect(gc: () => void): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
}

async function fill(subject: Contender, keys: readonly string[]): Promise<void> {
  if (subject.decide !== undefined) {
    const nowMs = performance.now()
    for (const key of keys) subject.decide(key, nowMs)
    return
  }
  for (let from = 0; from < keys.length; from += 1_000) {
    await Promise.all(keys.slice(from, from + 1_000).map((key) => subject.decideAsync!(key)))
  }
}

async function measureChild(row: Row): Promise<never> {
  const gc = globalThis.gc
  if (gc === undefined) throw new Error('limiter-memory: run the child with node --expose-gc')
  const subject = contender(row.contender)
  await collect(gc)
  const before = heapBytes()
  let keys: string[] | undefined = row.consKeys ? makeConsKeys(row.keyCount) : makeKeys(row.keyCount)
  await fill(subject, keys)
  keys = undefined
  await collect(gc)
  const after = heapBytes()
  const held = subject.size()
  if (held !== row.keyCount) throw new Error(`${row.contender}: holds ${held} keys, expected ${row.keyCount}`)
  return reportToParent({ value: (after - before) / row.keyCount, detail: {} })
}

const HEADER = [
  'contender',
  'version',
  'keys held',
  'bytes per key, median',
  `min – max of ${RUNS} runs`,
  '÷ keys alone',
  '÷ merchant-throttle',
]

function section(summaries: Map<string, Summary>, versions: Map<string, string>): string {
  const bytes = (name: string) => summaries.get(name)!.median
  const own = bytes('merchant-throttle')
  const keysAlone = bytes('keys-alone')
  const rows = Object.entries(ROWS).map(([name, row]) => {
    const s = summaries.get(name)!
    return [
      row.label,
      versions.get(name)!,
      row.keyCount.toLocaleString('en-US'),
      `**${s.median.toFixed(1)}**`,
      `${s.min.toFixed(1)} – ${s.max.toFixed(1)}`,
      formatRatio(s.median / keysAlone),
      formatRatio(s.median / own),
    ]
  })
  const met = own / keysAlone <= TARGET_OVER_KEYS
  return `## Limiter: heap bytes per key at 1,000,000 keys

${machineDescription()}.

Reproduce: \`npm run bench -- limiter-memory\` (it starts its children with \`node --expose-gc\`).

Every row ran in a fresh process, ${RUNS} times, interleaved. A run collects garbage and reads \`heapUsed + arrayBuffers\`, builds the keys, gives each one state by deciding once on it (at a rate that never binds), drops its own list of keys, collects again and reads again: the growth divided by the keys held is the figure, so the key strings and the structure that finds them are counted, and nothing else the process holds. Keys are the 16-character \`merchant-0000000\`… decoded from a Buffer, as a Kafka message key or a JSON field arrives: flat one-byte strings, built the same way for every contender. Built by template literal instead, the same keys are cons strings, which stay larger for as long as they are held (the cons-string row). Bottleneck holds ${BOTTLENECK_KEYS.toLocaleString('en-US')} keys only: every key is a Bottleneck instance with its own 250 ms heartbeat timer, several KB each.

${markdownTable(HEADER, rows)}

**Target: at most ${TARGET_OVER_KEYS}× the keys alone, key strings included.** merchant-throttle: ${own.toFixed(1)} bytes per key, ${(own / keysAlone).toFixed(2)}× the keys alone (${keysAlone.toFixed(1)}): **${met ? 'met' : 'not met'}**. Its state beside the key and the Map entry is one Float64 per slot (8 bytes, the bucket's arrival time) in a typed array that grows by doubling up to \`maxKeys\` (1,000,000 by default, reached exactly here); the id of a key's own rate, when it has one, rides in the Map value beside the slot.

How the peers hold keys: \`limiter\` is one TokenBucket (or RateLimiter, which wraps a TokenBucket) object per key, each with its own request queue; rate-limiter-flexible keeps a record per key and a \`setTimeout\` that deletes it when its window ends (here with an empty key prefix; the default \`rlflx\` prefix stores a second, longer string per key); bottleneck keeps a whole limiter per key.`
}

const child = childContender()
if (child !== undefined) {
  const row = ROWS[child]
  if (row === undefined)
    throw new TypeError(`expected a row among ${Object.keys(ROWS).join(', ')}, got ${child}`)
  await measureChild(row)
} else {
  console.error(`limiter-memory: ${Object.keys(ROWS).length} rows × ${RUNS} runs`)
  const versions = new Map(
    Object.entries(ROWS).map(([name, row]) => [name, versionOf(contender(row.contender).packageName)]),
  )
  const results = await measureInChildren({
    file: import.meta.url,
    contenders: Object.keys(ROWS),
    runs: RUNS,
    nodeFlags: ['--expose-gc'],
  })
  const summaries = new Map([...results].map(([name, runs]) => [name, summarize(runs)]))
  const markdown = section(summaries, versions)
  await writeSection('limiter-memory', markdown)
  console.log(markdown)
}
