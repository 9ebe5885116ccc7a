import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

// The `merchant-throttle` command (package.json bin → dist/service/main.js): issue 16 found
// no worker command in the package and no way to ask the worker its version.
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'))

function worker(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'src/service/main.ts', ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 20_000,
  })
}

describe('merchant-throttle (the worker command)', () => {
  it('is the bin beside throttlectl', () => {
    expect(pkg.bin).toEqual({
      'merchant-throttle': './dist/service/main.js',
      throttlectl: './dist/cli/throttlectl.js',
    })
  })

  it.each([['--version'], ['-V']])('%s prints the package version and exits 0', (flag) => {
    const run = worker(flag)
    expect(run.status).toBe(0)
    expect(run.stdout).toBe(`merchant-throttle ${pkg.version}\n`)
  })

  it('--help prints its usage, options and exit codes', () => {
    const run = worker('--help')
    expect(run.status).toBe(0)
    expect(run.stdout).toMatch(/^usage: merchant-throttle \[--config <file.json>\]/)
    expect(run.stdout).toContain('-V, --version')
    expect(run.stdout).toContain('78 bad config')
  })

  it('refuses an unknown option with exit 2, naming it', () => {
    const run = worker('--rate', '5/s')
    expect(run.status).toBe(2)
    expect(run.stderr).toContain("Unknown option '--rate'")
  })
})
