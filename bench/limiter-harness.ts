import { spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { machineLine, median } from './report.js'

/**
 * The limiter benchmarks' shared machinery: key construction, the child-process
 * protocol (every measurement runs in a fresh process), and the tables they write.
 */

/** KEY_LENGTH is the length of every benchmark key: `merchant-0000001`. */
export const KEY_LENGTH = 16

/**
 * makeKeys returns `count` distinct 16-character keys `merchant-0000000`, … as flat
 * one-byte strings, decoded from one Buffer as a Kafka message key or a JSON job field
 * arrives. A key built by a template literal is a cons string instead, and costs about
 * 24 bytes more for as long as it is held (see makeConsKeys).
 */
export function makeKeys(count: number): string[] {
  const text = Buffer.allocUnsafe(count * KEY_LENGTH)
  for (let i = 0; i < count; i++) text.write(keyText(i), i * KEY_LENGTH, 'latin1')
  const keys = new Array<string>(count)
  for (let i = 0; i < count; i++) keys[i] = text.toString('latin1', i * KEY_LENGTH, (i + 1) * KEY_LENGTH)
  return keys
}

/** makeConsKeys returns the same keys as makeKeys, built by template literal (cons strings). */
export function makeConsKeys(count: number): string[] {
  const keys = new Array<string>(count)
  for (let i = 0; i < count; i++) keys[i] = keyText(i)
  return keys
}

function keyText(i: number): string {
  return `merchant-${String(i).padStart(KEY_LENGTH - 9, '0')}`
}

/**
 * randomOrder returns `length` indices below `count` from a fixed-seed xorshift32, so
 * every contender sees the same access sequence. `length` must be a power of two, so
 * the benchmark loop can wrap with a mask.
 */
export function randomOrder(count: number, length: number): Uint32Array {
  const order = new Uint32Array(length)
  let x = 0x9e3779b9
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    order[i] = (x >>> 0) % count
  }
  return order
}

/** Measurement is what one child process reports about one contender. */
export interface Measurement {
  /** value is the figure compared: decisions per CPU-second, or bytes per key. */
  value: number
  /** detail carries the figures shown beside it (granted share, best wall-clock rate). */
  detail: Record<string, number>
}

const RESULT_PREFIX = 'BENCH-RESULT '

/** childContender is the contender name when this process is a measuring child, else undefined. */
export function childContender(): string | undefined {
  const at = process.argv.indexOf('--child')
  return at < 0 ? undefined : process.argv[at + 1]
}

/**
 * reportToParent hands a child's measurement to the parent process, then ends the child
 * at once: some contenders hold timers that would keep it alive.
 */
export async function reportToParent(measurement: Measurement): Promise<never> {
  const line = `${RESULT_PREFIX}${JSON.stringify(measurement)}\n`
  await new Promise<void>((resolve) => process.stdout.write(line, () => resolve()))
  process.exit(0)
}

/** RunsOptions say how a scenario's children are spawned. */
export interface RunsOptions {
  /** file is the scenario's own path (import.meta.url); children run it with `--child <name>`. */
  file: string
  contenders: readonly string[]
  runs: number
  /** args are passed to every child after `--child <name>`. */
  args?: readonly string[]
  nodeFlags?: readonly string[]
}

/**
 * measureInChildren runs every contender `runs` times, each in a fresh process, and
 * returns the measurements by contender. The runs are interleaved (all contenders once,
 * then again, in a rotated order) so that load on a shared machine spreads over all of
 * them instead of landing on one.
 */
export async function measureInChildren(options: RunsOptions): Promise<Map<string, Measurement[]>> {
  const results = new Map<string, Measurement[]>(options.contenders.map((name) => [name, []]))
  const n = options.contenders.length
  for (let run = 0; run < options.runs; run++) {
    for (let i = 0; i < n; i++) {
      const name = options.contenders[(i + run) % n]!
      const startedMs = performance.now()
      const measurement = await measureOnce(options, name)
      results.get(name)!.push(measurement)
      const seconds = ((performance.now() - startedMs) / 1_000).toFixed(1)
      console.error(
        `  run ${run + 1}/${options.runs} ${name}: ${formatNumber(measurement.value)} (${seconds} s)`,
      )
    }
  }
  return results
}

function measureOnce(options: RunsOptions, name: string): Promise<Measurement> {
  const script = fileURLToPath(options.file)
  const args = [
    ...(options.nodeFlags ?? []),
    '--import',
    'tsx',
    script,
    '--child',
    name,
    ...(options.args ?? []),
  ]
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], env: process.env })
    let stdout = ''
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk
    })
    child.on('error', reject)
    child.on('close', (code, signal) => {
      const line = stdout.split('\n').find((l) => l.startsWith(RESULT_PREFIX))
      if (code !== 0 || line === undefined) {
        reject(new Error(`${name}: child exited with ${signal ?? code} and no result`))
        return
      }
      resolve(JSON.parse(line.slice(RESULT_PREFIX.length)) as Measurement)
    })
  })
}

/** Summary is one contender's runs reduced to what the tables show. */
export interface Summary {
  median: number
  min: number
  max: number
  /** details are the medians of each detail figure over the runs. */
  details: Record<string, number>
}

/** summarize reduces a contender's runs to median, min, max and median details. */
export function summarize(runs: readonly Measurement[]): Summary {
  const values = runs.map((r) => r.value)
  const details: Record<string, number> = {}
  for (const key of Object.keys(runs[0]?.detail ?? {})) details[key] = median(runs.map((r) => r.detail[key]!))
  return { median: median(values), min: Math.min(...values), max: Math.max(...values), details }
}

const ROOT = new URL('../', import.meta.url)

/**
 * versionOf names a package and its installed version, read from node_modules. For this
 * project it adds the commit that last changed src/limiter/, and says when the working
 * tree holds uncommitted changes there. A contender written in the benchmark itself
 * (`undefined`) has no version.
 */
export function versionOf(name: string | undefined): string {
  if (name === undefined) return 'written in bench/'
  if (name !== 'merchant-throttle') {
    return `${name} ${readJson(new URL(`node_modules/${name}/package.json`, ROOT)).version}`
  }
  const own = `${name} ${readJson(new URL('package.json', ROOT)).version}`
  const commit = git(['log', '-1', '--format=%h', '--', 'src/limiter'])
  if (commit === '') return own
  const dirty = git(['status', '--porcelain', '--', 'src/limiter']) !== ''
  return `${own} (${commit}${dirty ? ' + uncommitted changes' : ''})`
}

function readJson(url: URL): { version: string } {
  return JSON.parse(readFileSync(url, 'utf8')) as { version: string }
}

function git(args: string[]): string {
  const result = spawnSync('git', args, { cwd: fileURLToPath(ROOT), encoding: 'utf8' })
  return result.status === 0 ? result.stdout.trim() : ''
}

/** machineDescription is report.ts's machine line plus the CPU and the load when the scenario began. */
export function machineDescription(): string {
  const cpu = cpus()
  const load = loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')
  return `${machineLine()}; ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}; load average ${load} at start`
}

/** formatRatio writes a ratio with two decimals, or whole when it is large. */
export function formatRatio(ratio: number): string {
  return ratio >= 100 ? `${Math.round(ratio).toLocaleString('en-US')}×` : `${ratio.toFixed(2)}×`
}

/** formatNumber writes a figure with three significant digits and a k/M suffix. */
export function formatNumber(value: number): string {
  if (value >= 1e6) return `${trim(value / 1e6)} M`
  if (value >= 1e4) return `${trim(value / 1e3)} k`
  return trim(value)
}

function trim(value: number): string {
  if (value >= 100) return value.toFixed(0)
  if (value >= 10) return value.toFixed(1)
  return value.toFixed(2)
}

/** markdownTable renders a header row and body rows as a Markdown table. */
export function markdownTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}
