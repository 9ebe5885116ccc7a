import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

// throttlectl as an operator runs it, for what needs no broker: exit codes and where text goes.
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const { version } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'))

function throttlectl(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/throttlectl.ts', ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    env: { ...process.env, KAFKA_BROKERS: '127.0.0.1:1' },
    timeout: 20_000,
  })
}

describe('throttlectl', () => {
  it('exits 2 without a command, with the usage on stderr', () => {
    const run = throttlectl()
    expect(run.status).toBe(2)
    expect(run.stdout).toBe('')
    expect(run.stderr).toMatch(/^throttlectl: expected a command\n\nthrottlectl: publish and inspect/)
  })

  it.each([['version'], ['-V'], ['--version']])('%s prints the version and exits 0', (arg) => {
    expect(throttlectl(arg)).toMatchObject({ status: 0, stdout: `throttlectl ${version}\n` })
  })

  it('prints the help of one command for <command> --help', () => {
    const run = throttlectl('create-topic', '--help')
    expect(run.status).toBe(0)
    expect(run.stdout).toMatch(/^usage: throttlectl create-topic \[options\]\n/)
    expect(run.stdout).toContain('--partitions N')
  })

  it('refuses an option the command does not take with exit 2, before connecting', () => {
    const run = throttlectl('watch', '--timeout', '5')
    expect(run.status).toBe(2)
    expect(run.stderr).toMatch(/^throttlectl: watch does not take --timeout;/)
  })

  it('warns on the old --version N of a publish command and goes on with it', () => {
    const run = throttlectl('set', 'm_1', '5/s', '--version', '7', '--timeout', '1000')
    expect(run.stderr).toContain('throttlectl: warning: --version N is now --rate-version N')
    expect(run.status).toBe(1) // it went on, and found no broker at 127.0.0.1:1
  })
})
