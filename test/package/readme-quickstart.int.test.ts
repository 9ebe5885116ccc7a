import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Queue } from 'bullmq'
import { Kafka, logLevel } from 'kafkajs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureControlTopic } from '../../src/control/topic.js'
import { kafkaBrokers, redisUrl, uniqueName } from '../support/services.js'
import { waitFor } from '../support/wait-for.js'
import { readmeTsBlocks, repoRoot } from './readme-support.js'

// The README's two quick starts, run as written against the real Redis and broker: only the
// addresses and names change (the services are shared), and 'merchant-throttle' points at src/.
// Each must deliver every job of two merchants to a real HTTP endpoint; then it is stopped.
const [bullmqBlock, kafkaBlock] = readmeTsBlocks()
mkdirSync(join(repoRoot, '.cache'), { recursive: true })
const dir = mkdtempSync(join(repoRoot, '.cache', 'readme-quickstart-'))
const children = new Set<ChildProcess>()
const received: Array<{ body: string }> = []
let server: Server
let endpoint: string

/** runnable rewrites a quick start for this run: names unique, addresses of the test services. */
function runnable(code: string, name: string, controlTopic = ''): string {
  const redis = new URL(redisUrl())
  return code
    .replaceAll("from 'merchant-throttle'", `from ${JSON.stringify(join(repoRoot, 'src/index.ts'))}`)
    .replaceAll(
      /'deliveries(\.dead-letter)?'/g,
      (_match, suffix: string | undefined) => `'${name}${suffix ?? ''}'`,
    )
    .replaceAll(
      "{ host: '127.0.0.1', port: 6379 }",
      `{ host: '${redis.hostname}', port: ${redis.port || 6379} }`,
    )
    .replaceAll("['127.0.0.1:9092']", JSON.stringify(kafkaBrokers()))
    .replaceAll("'merchant-throttle.control'", `'${controlTopic}'`)
}

/** start runs a quick start with tsx and collects its output. */
function start(file: string, code: string): { output: () => string; child: ChildProcess } {
  writeFileSync(file, code)
  const child = spawn(process.execPath, ['--import', 'tsx', file], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.add(child)
  let output = ''
  child.stdout!.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  child.stderr!.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  return { output: () => output, child }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode === null) {
    child.kill('SIGTERM')
    await once(child, 'exit')
  }
  children.delete(child)
}

beforeAll(async () => {
  server = createServer((request, response) => {
    let body = ''
    request.on('data', (chunk: Buffer) => {
      body += chunk.toString()
    })
    request.on('end', () => {
      received.push({ body })
      response.end('ok')
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`
})

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL')
  server?.close()
  rmSync(dir, { recursive: true, force: true })
})

const JOBS = ['m_small', 'm_big'].flatMap((merchantId) => [1, 2, 3, 4, 5, 6].map((n) => ({ merchantId, n })))

describe('README quick starts', () => {
  it('BullMQ: delivers every job of both merchants', async () => {
    received.length = 0
    const name = uniqueName('readme-bullmq')
    const redis = new URL(redisUrl())
    const queue = new Queue(name, { connection: { host: redis.hostname, port: Number(redis.port || 6379) } })
    const worker = start(join(dir, 'bullmq.ts'), runnable(bullmqBlock!.code, name))
    try {
      await queue.addBulk(
        JOBS.map(({ merchantId, n }) => ({
          name: 'delivery',
          data: { merchantId, url: endpoint, body: `${merchantId} ${n}` },
        })),
      )
      await waitFor(
        'every job delivered',
        () => (worker.output().match(/^delivered /gm) ?? []).length === JOBS.length,
        30_000,
      )
      expect(received.map(({ body }) => body).sort()).toEqual(
        JOBS.map(({ merchantId, n }) => `${merchantId} ${n}`).sort(),
      )
      expect(worker.output()).not.toContain('failed')
    } finally {
      await stop(worker.child)
      await queue.obliterate({ force: true })
      await queue.close()
    }
  }, 60_000)

  it('Kafka: reads the control topic to its end, then delivers every message of both merchants', async () => {
    received.length = 0
    const name = uniqueName('readme-kafka')
    const controlTopic = uniqueName('readme-control')
    const kafka = new Kafka({ brokers: kafkaBrokers(), logLevel: logLevel.NOTHING })
    const admin = kafka.admin()
    await admin.connect()
    const producer = kafka.producer()
    await producer.connect()
    const topics = [name, `${name}.dead-letter`]
    try {
      await admin.createTopics({
        topics: topics.map((topic) => ({ topic, numPartitions: 2 })),
        waitForLeaders: true,
      })
      await ensureControlTopic(admin, { topic: controlTopic })
      // Produced before the consumer joins: the quick start's group starts at the latest offset,
      // so it is started first and the messages are sent once it has said nothing went wrong.
      const worker = start(join(dir, 'kafka.ts'), runnable(kafkaBlock!.code, name, controlTopic))
      try {
        await waitFor(
          'the consumer group to be stable',
          async () => {
            const groups = await admin.describeGroups([name])
            return groups.groups[0]?.state === 'Stable' || worker.child.exitCode !== null
          },
          45_000,
        )
        expect(worker.child.exitCode, worker.output()).toBeNull()
        await producer.send({
          topic: name,
          messages: JOBS.map(({ merchantId, n }) => ({
            key: merchantId,
            value: JSON.stringify({ url: endpoint, body: `${merchantId} ${n}` }),
          })),
        })
        await waitFor(
          'every message delivered',
          () => (worker.output().match(/^delivered for /gm) ?? []).length === JOBS.length,
          30_000,
        )
        expect(received.map(({ body }) => body).sort()).toEqual(
          JOBS.map(({ merchantId, n }) => `${merchantId} ${n}`).sort(),
        )
      } finally {
        await stop(worker.child)
      }
    } finally {
      await producer.disconnect()
      await admin.deleteTopics({ topics: [...topics, controlTopic] }).catch(() => undefined)
      await admin.disconnect()
    }
  }, 90_000)
})
