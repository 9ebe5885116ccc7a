import { contender } from './limiter-contenders.js'
import {
  childContender,
  formatNumber,
  machineDescription,
  makeKeys,
  markdownTable,
  measureInChildren,
  randomOrder,
  reportToParent,
  versionOf,
} from './limiter-harness.js'
import { median, writeSection } from './report.js'

/**
 * merchant-throttle as a share of the floor: a bare `Map<string, number>` lookup of the
 * same 100,000 keys, drawn in the same random order of 2,097,152 indices. Separate
 * processes on a shared machine differ by more than the two do (one process finds the
 * cache its neighbours left, the next does not), so here one process holds both and
 * alternates short windows between them: each pair of windows sees the same machine,
 * and the figure is the median of the per-pair ratios.
 *
 *   node --import tsx bench/limiter-floor.ts
 */

const KEY_COUNT = 100_000
const ORDER_LENGTH = 1 << 21
const RUNS = 3
const PAIRS = 24
const WINDOW_MS = 50
const WARM_UP_MS = 300
const BATCH = 1_000
const TARGET_OF_FLOOR = 0.7
const SUBJECTS = ['merchant-throttle-batch', 'map-lookup-floor'] as const

type Decide = (key: string, nowMs: number) => boolean

/** cpuRate makes decisions for `durationMs`, continuing the sequence at `cursor[0]`, and returns decisions per CPU-second. */
function cpuRate(
  decide: Decide,
  keys: readonly string[],
  order: Uint32Array,
  cursor: Uint32Array,
  durationMs: number,
) {
  const mask = order.length - 1
  let next = cursor[0]!
  let decisions = 0
  const cpuStart = process.cpuUsage()
  const endMs = performance.now() + durationMs
  let nowMs = performance.now()
  do {
    for (let i = 0; i < BATCH; i++) decide(keys[order[next++ & mask]!]!, nowMs)
    decisions += BATCH
    nowMs = performance.now()
  } while (nowMs < endMs)
  cursor[0] = next
  const used = process.cpuUsage(cpuStart)
  return (decisions * 1e6) / (used.user + used.system)
}

/**
 * layoutCeiling is the same data layout written bare: the key's slot from a Map, one
 * Float64 arrival time per slot, a fixed rate. No limiter can beat its own layout, so
 * its share of the floor is the ceiling this design can reach.
 */
function layoutCeiling(keys: readonly string[]): Decide {
  const slots = new Map<string, number>()
  const arrivalMs = new Float64Array(keys.length)
  const nowMs = performance.now()
  for (const key of keys) {
    slots.set(key, slots.size)
    arrivalMs[slots.size - 1] = nowMs
  }
  return (key, now) => {
    const slot = slots.get(key)
    if (slot === undefined) return false
    const tat = arrivalMs[slot]!
    const next = (tat > now ? tat : now) + 1e-6
    if (next - now > 1_000) return false
    arrivalMs[slot] = next
    return true
  }
}

async function measureChild(): Promise<never> {
  const keys = makeKeys(KEY_COUNT)
  const order = randomOrder(KEY_COUNT, ORDER_LENGTH)
  const [ours, floor] = SUBJECTS.map((name) => {
    const subject = contender(name)
    const nowMs = performance.now()
    for (const key of keys) subject.decide!(key, nowMs)
    if (subject.size() !== KEY_COUNT) throw new Error(`${name}: holds ${subject.size()} keys`)
    return subject.decide!
  })
  const deciders = [ours!, layoutCeiling(keys), floor!]
  // each walks the same sequence from the same place
  const cursors = deciders.map(() => new Uint32Array(1))
  for (let i = 0; i < deciders.length; i++) cpuRate(deciders[i]!, keys, order, cursors[i]!, WARM_UP_MS)
  const rates: number[][] = deciders.map(() => [])
  const oursShares: number[] = []
  const layoutShares: number[] = []
  for (let round = 0; round < PAIRS; round++) {
    // rotate which goes first, so none always inherits another's cache
    const rate = [0, 0, 0]
    for (let k = 0; k < deciders.length; k++) {
      const i = (round + k) % deciders.length
      rate[i] = cpuRate(deciders[i]!, keys, order, cursors[i]!, WINDOW_MS)
      rates[i]!.push(rate[i]!)
    }
    oursShares.push(rate[0]! / rate[2]!)
    layoutShares.push(rate[1]! / rate[2]!)
  }
  return reportToParent({
    value: median(oursShares),
    detail: {
      layoutShare: median(layoutShares),
      ours: median(rates[0]!),
      layout: median(rates[1]!),
      floor: median(rates[2]!),
    },
  })
}

async function main(): Promise<void> {
  console.error(`limiter-floor: ${RUNS} processes × ${PAIRS} pairs of ${WINDOW_MS} ms windows`)
  const results = await measureInChildren({ file: import.meta.url, contenders: ['paired'], runs: RUNS })
  const runs = results.get('paired')!
  const percent = (r: number) => `${(r * 100).toFixed(0)} %`
  const rows = runs.map((run, i) => [
    String(i + 1),
    formatNumber(run.detail.ours!),
    formatNumber(run.detail.layout!),
    formatNumber(run.detail.floor!),
    `**${percent(run.value)}**`,
    percent(run.detail.layoutShare!),
  ])
  const share = median(runs.map((run) => run.value))
  const ceiling = median(runs.map((run) => run.detail.layoutShare!))
  const markdown = `## Limiter: share of a bare Map lookup, 100,000 keys in random order

${machineDescription()}.

Reproduce: \`npm run bench -- limiter-floor\`.

One process holds merchant-throttle (${versionOf('merchant-throttle')}, \`limiter.tryAcquireAt(key, 1, nowMs)\`, time read per batch of ${BATCH.toLocaleString('en-US')}) and a bare \`Map<string, number>\` of the same ${KEY_COUNT.toLocaleString('en-US')} keys (\`map.get(key) !== undefined\`), both given every key first. Both walk the same pseudo-random sequence of ${ORDER_LENGTH.toLocaleString('en-US')} key indices (no short sequence that keeps part of the table in cache), after ${WARM_UP_MS} ms of warm-up each, in ${PAIRS} rounds of ${WINDOW_MS} ms windows, rotating which goes first. Beside them runs the limiter's data layout written bare (a Map from key to slot, one Float64 arrival time per slot, a fixed rate, nothing else): no limiter beats its own layout, so its share is the ceiling of this design. The figure is the median of the per-round ratios of decisions per CPU-second: separate processes on this shared machine (see the load average) differ from one another by more than these do, while windows 50 ms apart see the same machine. ${RUNS} processes, one row each; the rates are the medians of a process's windows.

${markdownTable(['process', 'merchant-throttle, decisions per CPU-second', 'its layout bare, per CPU-second', 'bare Map lookup (floor), per CPU-second', 'merchant-throttle ÷ floor, median of rounds', 'layout bare ÷ floor'], rows)}

**Target: at least ${percent(TARGET_OF_FLOOR)} of the floor.** Median over the processes: **${percent(share)}, ${share >= TARGET_OF_FLOOR ? 'met' : 'not met'}**; the layout written bare reaches ${percent(ceiling)}. A decision is the Map lookup (the key's slot, or its slot and own rate id in the same number) and one Float64 (the bucket's arrival time): one cache line touched after the Map, and a few comparisons.`
  await writeSection('limiter-floor', markdown)
  console.log(markdown)
}

if (childContender() !== undefined) await measureChild()
else await main()
