import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const fixture = fileURLToPath(new URL('../fixtures/consumer-child.ts', import.meta.url))

/** ChildLine is one handled message as the child wrote it. */
export interface ChildLine {
  partition: number
  offset: number
  merchant: string
  seq: number
}

/** startConsumerChild runs test/adapters/kafka/fixtures/consumer-child.ts with `env`. */
export function startConsumerChild(env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  })
  return child
}

/** readChildLines parses what a child wrote to its output file (a torn last line is dropped). */
export function readChildLines(path: string): ChildLine[] {
  if (!existsSync(path)) return []
  return readFileSync(path, 'utf8')
    .split('\n')
    .map((line) => line.split(' '))
    .filter((fields) => fields.length === 4 && fields[3] !== '')
    .map(([partition, offset, merchant, seq]) => ({
      partition: Number(partition),
      offset: Number(offset),
      merchant: merchant!,
      seq: Number(seq),
    }))
}

/** exited resolves once `child` has exited (at once when it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}
