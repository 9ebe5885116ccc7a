import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import type { ConnectionOptions, Queue } from 'bullmq'
import { Redis } from 'ioredis'

/**
 * Shared by the bench/bullmq-*.ts scenarios: where Redis is (REDIS_URL, default the local
 * one; loopback only), the versions a section states, and queue cleanup.
 */

/** REDIS_URL is the Redis the BullMQ benchmarks use: $REDIS_URL or redis://127.0.0.1:6379. */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

/** connection returns BullMQ connection options for REDIS_URL, refusing any host but loopback. */
export function connection(): ConnectionOptions {
  const url = new URL(REDIS_URL)
  const host = url.hostname.replace(/^\[|\]$/g, '')
  if (!(host === 'localhost' || host === '::1' || host.startsWith('127.'))) {
    throw new TypeError(
      `benchmarks run on loopback only: expected REDIS_URL on 127.0.0.0/8 or ::1, got ${host}`,
    )
  }
  return { host, port: Number(url.port || 6379), maxRetriesPerRequest: null }
}

/** versionsLine names the versions a BullMQ benchmark ran with. */
export async function versionsLine(): Promise<string> {
  const bullmq = JSON.parse(
    await readFile(new URL('../node_modules/bullmq/package.json', import.meta.url), 'utf8'),
  ) as { version: string }
  const redis = new Redis(REDIS_URL)
  const info = await redis.info('server')
  redis.disconnect()
  const redisVersion = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown'
  return `BullMQ ${bullmq.version}, Redis ${redisVersion} on loopback`
}

/** dropQueue removes a benchmark queue and its jobs, then closes it. */
export async function dropQueue(queue: Queue): Promise<void> {
  await queue.obliterate({ force: true })
  await queue.close()
}

/** fixed formats a number with `digits` decimals. */
export function fixed(value: number, digits = 1): string {
  return value.toFixed(digits)
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/**
 * startRedis runs a private redis-server on a free loopback port (no persistence), so that
 * INFO counts a benchmark's commands only; stop() ends it and removes its directory.
 */
export async function startRedis(): Promise<{ port: number; stop(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'mt-bench-redis-'))
  const port = await freePort()
  const server: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  )
  for (let i = 0; i < 100; i++) {
    const pong = await promisify(execFile)('redis-cli', ['-p', String(port), 'ping']).then(
      (r) => r.stdout.trim(),
      () => '',
    )
    if (pong === 'PONG') break
    await sleep(50)
  }
  return {
    port,
    stop: async () => {
      server.kill('SIGTERM')
      await new Promise((resolve) => server.once('exit', resolve))
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
