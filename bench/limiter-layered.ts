import { FakeClock } from '../src/limiter/clock.js'
import { KeyedLimiter } from '../src/limiter/limiter.js'
import {
  formatNumber,
  machineDescription,
  makeKeys,
  markdownTable,
  randomOrder,
  versionOf,
} from './limiter-harness.js'
import { median, writeSection } from './report.js'

/**
 * The cost of layered keys (issue 18): decisions per CPU-second for a list of two keys of
 * two windows each (`['psp-…', 'merchant-…']`, every rate `… /s, … /day`) against one key
 * of one window, 100,000 merchants under 100 parents, in one random order, with a bare
 * `Map` lookup of the same merchant keys beside them as the floor. One process holds all
 * three and alternates short rounds between them (rotating which goes first), so each
 * round of the three sees the same machine; the figures are medians of the rounds. The
 * rates are far above what the run asks, so every decision is a grant: what is measured is
 * the decision, not a refusal. Then the fair-share figures, on a fake clock.
 *
 *   node --import tsx bench/limiter-layered.ts
 */

const MERCHANTS = 100_000
const PARENTS = 100
const ORDER_LENGTH = 1 << 21
const DECISIONS = 2_000_000
const ROUNDS = 20
const PER_ROUND = DECISIONS / ROUNDS
const BATCH = 1_000
const WARM_UP_ROUNDS = 3

type Decide = (index: number, nowMs: number) => boolean
type Loop = (decide: Decide, order: Uint32Array, cursor: Uint32Array, count: number) => number

const LOOP_BODY = `
  const mask = order.length - 1
  let next = cursor[0]
  let granted = 0
  const cpuStart = process.cpuUsage()
  let nowMs = performance.now()
  for (let done = 0; done < count; done += ${BATCH}) {
    for (let i = 0; i < ${BATCH}; i++) if (decide(order[next++ & mask], nowMs)) granted++
    nowMs = performance.now()
  }
  cursor[0] = next
  if (granted !== count) throw new Error('a decision refused: the rates are meant never to bind')
  const used = process.cpuUsage(cpuStart)
  return (count * 1e6) / (used.user + used.system)
`

/** loopFor compiles the timed loop afresh per subject, so each call site sees one callee (see limiter-floor.ts). */
function loopFor(name: string): Loop {
  return new Function('decide', 'order', 'cursor', 'count', `// ${name}${LOOP_BODY}`) as Loop
}

function subjects(merchants: readonly string[]): Array<{ name: string; decide: Decide }> {
  const single = new KeyedLimiter({ rate: '1000000000/s burst 1000000000' })
  const windows = new KeyedLimiter({ rate: '1000000000/s burst 1000000000, 1000000000/day burst 1000000000' })
  const layered = new KeyedLimiter({ rate: '1000000000/s burst 1000000000, 1000000000/day burst 1000000000' })
  const parents = Array.from({ length: PARENTS }, (_, i) => `psp-${String(i).padStart(3, '0')}`)
  for (const parent of parents)
    layered.setRate(parent, '1000000000/s burst 1000000000, 1000000000/day burst 1000000000')
  // each merchant's list is built once, as a job's would be by its adapter's limitKeys
  const lists = merchants.map((merchant, i) => [parents[i % PARENTS]!, merchant] as const)
  const floor = new Map<string, number>(merchants.map((merchant, i) => [merchant, i]))
  const all: Array<{ name: string; decide: Decide }> = [
    { name: 'one key × one window', decide: (i, nowMs) => single.tryAcquireAt(merchants[i]!, 1, nowMs) },
    { name: 'one key × two windows', decide: (i, nowMs) => windows.tryAcquireAt(merchants[i]!, 1, nowMs) },
    { name: 'two keys × two windows', decide: (i, nowMs) => layered.tryAcquireAt(lists[i]!, 1, nowMs) },
    { name: 'bare Map lookup (floor)', decide: (i) => floor.get(merchants[i]!) !== undefined },
  ]
  const nowMs = performance.now()
  for (let i = 0; i < merchants.length; i++) for (const subject of all) subject.decide(i, nowMs)
  if (single.size !== MERCHANTS || layered.size !== MERCHANTS + PARENTS) throw new Error('keys not all held')
  return all
}

function measureDecisions(): { rates: number[][]; names: string[] } {
  const merchants = makeKeys(MERCHANTS)
  const order = randomOrder(MERCHANTS, ORDER_LENGTH)
  const all = subjects(merchants)
  const loops = all.map((subject) => loopFor(subject.name))
  const cursors = all.map(() => new Uint32Array(1))
  const rates: number[][] = all.map(() => [])
  for (let round = 0; round < WARM_UP_ROUNDS + ROUNDS; round++) {
    for (let k = 0; k < all.length; k++) {
      const i = (round + k) % all.length
      const rate = loops[i]!(all[i]!.decide, order, cursors[i]!, PER_ROUND)
      if (round >= WARM_UP_ROUNDS) rates[i]!.push(rate)
    }
  }
  return { rates, names: all.map((subject) => subject.name) }
}

interface FairnessRun {
  perSecond: Record<string, number>
  quietWaitMs: number[]
  shareDeferrals: number
}

/**
 * fairness runs the fair-share scenario on a fake clock: a parent at 200/s burst 10, its
 * children asking as the BullMQ adapter does (every ms, up to `asks` reservations within a
 * 1 s horizon, and after a Deferred not again before its delay), and a quiet child asking
 * once every 1.5 s.
 */
function fairness(
  children: Record<string, { asks: number; weight?: number }>,
  durationMs: number,
): FairnessRun {
  const clock = new FakeClock(0)
  const limiter = new KeyedLimiter({ rate: '1000/s burst 20', clock, horizonMs: 1_000 })
  limiter.setRate('psp', '200/s burst 10')
  for (const [key, { weight }] of Object.entries(children))
    if (weight !== undefined) limiter.setWeight(key, weight)
  const granted: Record<string, number> = Object.fromEntries(Object.keys(children).map((k) => [k, 0]))
  const nextAskMs: Record<string, number> = Object.fromEntries(Object.keys(children).map((k) => [k, 0]))
  const quietWaitMs: number[] = []
  for (let t = 0; t < durationMs; t++) {
    clock.set(t)
    for (const [key, { asks }] of Object.entries(children)) {
      if (t < nextAskMs[key]!) continue
      for (let ask = 0; ask < asks; ask++) {
        const answer = limiter.reserve(['psp', key])
        if (!answer.ok) {
          nextAskMs[key] = t + answer.delayMs
          break
        }
        if (answer.reservedAtMs >= 1_000 && answer.reservedAtMs < durationMs) granted[key]!++
      }
    }
    if (t >= 1_000 && t % 1_500 === 0) {
      const answer = limiter.reserve(['psp', `quiet-${t}`])
      quietWaitMs.push(answer.ok ? answer.delayMs : Number.NaN)
    }
  }
  const seconds = (durationMs - 1_000) / 1_000
  const perSecond = Object.fromEntries(Object.entries(granted).map(([k, n]) => [k, n / seconds]))
  return { perSecond, quietWaitMs, shareDeferrals: limiter.stats().shareDeferrals }
}

async function main(): Promise<void> {
  console.error(
    `limiter-layered: ${ROUNDS} rounds of ${PER_ROUND.toLocaleString('en-US')} decisions per subject`,
  )
  const { rates, names } = measureDecisions()
  const medians = rates.map((r) => median(r))
  const floor = medians[medians.length - 1]!
  const rows = names.map((name, i) => [
    name,
    formatNumber(medians[i]!),
    `${Math.round(Math.min(...rates[i]!) / 1e3) / 1e3} M – ${Math.round(Math.max(...rates[i]!) / 1e3) / 1e3} M`,
    `${((medians[i]! / floor) * 100).toFixed(0)} %`,
    (medians[0]! / medians[i]!).toFixed(2),
  ])
  const equal = fairness({ hot: { asks: 100 }, cold: { asks: 1 } }, 11_000)
  const weighted = fairness({ heavy: { asks: 100, weight: 2 }, light: { asks: 100 } }, 11_000)
  const alone = fairness({ solo: { asks: 100 } }, 11_000)
  const ms = (values: number[]) => values.map((v) => v.toFixed(0)).join(', ')
  const fair = [
    [
      'two children, one asking 100× as often (100 and 1 asks a ms)',
      `hot ${equal.perSecond.hot!.toFixed(1)}, cold ${equal.perSecond.cold!.toFixed(1)}`,
      ms(equal.quietWaitMs),
      String(equal.shareDeferrals),
    ],
    [
      'weights 2:1, both asking 100 a ms',
      `heavy ${weighted.perSecond.heavy!.toFixed(1)}, light ${weighted.perSecond.light!.toFixed(1)}`,
      ms(weighted.quietWaitMs),
      String(weighted.shareDeferrals),
    ],
    [
      'one child alone',
      `solo ${alone.perSecond.solo!.toFixed(1)}`,
      ms(alone.quietWaitMs),
      String(alone.shareDeferrals),
    ],
  ]
  const markdown = `## Limiter: layered keys and fair shares

${machineDescription()}.

Reproduce: \`npm run bench -- limiter-layered\`.

**The cost of the feature.** ${versionOf('merchant-throttle')}, \`tryAcquireAt(keys, 1, nowMs)\` (time read per batch of ${BATCH.toLocaleString('en-US')}), ${MERCHANTS.toLocaleString('en-US')} merchants under ${PARENTS} parents, every key held, ${DECISIONS.toLocaleString('en-US')} decisions per subject in a pseudo-random order of ${ORDER_LENGTH.toLocaleString('en-US')} indices, in one process: ${ROUNDS} rounds of ${PER_ROUND.toLocaleString('en-US')} decisions each after ${WARM_UP_ROUNDS} of warm-up, rotating which subject goes first. One key × one window is a merchant key at \`1e9/s\`; one key × two windows the same at \`1e9/s, 1e9/day\` (what the second window costs alone); two keys × two windows is \`[parent, merchant]\` with both at \`1e9/s, 1e9/day\` (each merchant's list built once, as an adapter's \`limitKeys\` would per job); the floor is \`map.get(merchant) !== undefined\`. Every decision is a grant. Decisions per CPU-second, median of the rounds:

${markdownTable(['subject', 'decisions per CPU-second (median)', 'rounds: min – max', 'of the floor', 'one key × one window ÷ this'], rows)}

A list costs its check (distinct keys), the parent's lookup (its rate id, in the same Map value as its slot, says whether it limits), a probe of each window of each key, and a charge of each; a second window costs a lookup of the slot's further windows in a side Map (so that single-window keys keep one Float64 each). The single-key, single-window path is unchanged: a string key never reaches the layered code (\`npm run bench -- limiter-floor\` measures it).

**Fair shares**, on a fake clock (no machine in it): a parent at \`200/s burst 10\` over children at \`1000/s burst 20\`, each child asking as the BullMQ adapter does (every ms, up to its asks of reservations within a 1 s horizon, and after a Deferred not again before its delay), 11 s, counted over the last 10 s by reserved time; a quiet child asks once every 1.5 s (shareLookaheadMs 250, one parent emission 5 ms):

${markdownTable(['scenario', 'granted per second', 'quiet child waits (ms)', "'parent-share' deferrals"], fair)}
`
  await writeSection('limiter-layered', markdown)
  console.log(markdown)
}

await main()
