import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Admin, Producer } from 'kafkajs'
import { afterAll, beforeAll } from 'vitest'
import { kafkaClient } from './kafka.js'

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

/** ChildHarness is what a test that kills consumer children needs: clients, the children, a folder. */
export interface ChildHarness {
  admin: Admin
  producer: Producer
  /** children are killed with SIGKILL and awaited after the file's tests. */
  children: ChildProcess[]
  /** dir is a temporary folder for the children's output, removed after the file's tests. */
  dir: string
}

/** useChildHarness connects an admin and a producer before the file's tests and cleans up after. */
export function useChildHarness(clientId: string, dirPrefix: string): ChildHarness {
  const harness = { children: [], dir: mkdtempSync(join(tmpdir(), dirPrefix)) } as unknown as ChildHarness
  beforeAll(async () => {
    const kafka = kafkaClient(clientId)
    harness.admin = kafka.admin()
    harness.producer = kafka.producer()
    await Promise.all([harness.admin.connect(), harness.producer.connect()])
  })
  afterAll(async () => {
    for (const child of harness.children) child.kill('SIGKILL')
    await Promise.all(harness.children.map(exited))
    await Promise.all([harness.admin?.disconnect(), harness.producer?.disconnect()])
    rmSync(harness.dir, { recursive: true, force: true })
  })
  return harness
}
