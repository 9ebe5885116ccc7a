import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * `npm run bench [-- name…]` runs benchmark scenarios one after another, each in a fresh
 * `node --import tsx` process, and each scenario writes its own section of
 * docs/benchmarks.md. With no names it runs every scenario in bench/: each `.ts` file
 * that writes a section (calls `writeSection`), other than dot-files and the shared
 * `*-support.ts` modules. A name is a scenario's file name with or without `.ts`, or a
 * prefix ending in `*` (`'limiter-*'`).
 *
 * It starts no services: scenarios that need Redis or Kafka (bullmq-*, kafka-*,
 * control-*) find them as the tests do, through the environment, which is passed on
 * unchanged. A failed scenario does not stop the others; the exit code reports it.
 */

const BENCH_DIR = fileURLToPath(new URL('./', import.meta.url))

function isScenario(file: string): boolean {
  if (!file.endsWith('.ts') || file.startsWith('.') || file.endsWith('-support.ts')) return false
  if (file === 'report.ts' || file === 'run.ts') return false
  return readFileSync(`${BENCH_DIR}${file}`, 'utf8').includes('writeSection(')
}

function scenarioFiles(): string[] {
  return readdirSync(BENCH_DIR).filter(isScenario).sort()
}

function select(all: readonly string[], names: readonly string[]): string[] {
  if (names.length === 0) return [...all]
  const chosen: string[] = []
  for (const name of names) {
    const matches = name.endsWith('*')
      ? all.filter((file) => file.startsWith(name.slice(0, -1)))
      : all.filter((file) => file === name || file === `${name}.ts`)
    if (matches.length === 0) {
      throw new TypeError(
        `expected a scenario among ${all.map((f) => f.slice(0, -3)).join(', ')}, got ${name}`,
      )
    }
    for (const file of matches) if (!chosen.includes(file)) chosen.push(file)
  }
  return chosen
}

function runScenario(file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', `${BENCH_DIR}${file}`], {
      stdio: 'inherit',
      env: process.env,
    })
    child.on('error', reject)
    child.on('close', (code, signal) => resolve(signal === null ? (code ?? 1) : 1))
  })
}

const files = select(scenarioFiles(), process.argv.slice(2))
const failed: string[] = []
for (const file of files) {
  const startedMs = performance.now()
  console.error(`\n▶ bench/${file}`)
  const code = await runScenario(file)
  const seconds = ((performance.now() - startedMs) / 1_000).toFixed(0)
  console.error(
    `${code === 0 ? '✓' : '✗'} bench/${file} (${seconds} s${code === 0 ? '' : `, exit code ${code}`})`,
  )
  if (code !== 0) failed.push(file)
}
if (failed.length > 0) {
  console.error(`\n${failed.length} of ${files.length} scenarios failed: ${failed.join(', ')}`)
  console.error(
    'Scenarios that need Redis or Kafka read their addresses from the environment; run.ts starts none.',
  )
  process.exitCode = 1
}
