import type { ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type TestServer } from '../handlers/support.js'
import { redisUrl, uniqueName } from '../support/services.js'
import { waitFor } from '../support/wait-for.js'
import { type WorkerConfigFiles, writeWorkerConfig } from '../support/worker-config.js'
import { startWorkerProcess } from '../support/worker-process.js'

const SECRET = 'whsec_bWFpbi10ZXN0LXNlY3JldC0zMi1ieXRlcy1sb25nISEhIQ=='

function startWorker(configFile: string) {
  return startWorkerProcess(configFile, { REDIS_URL: redisUrl(), MT_LOG_LEVEL: 'info' })
}

// The worker as operators run it: a process started from src/service/main.ts, stopped with
// SIGTERM under load. It must exit 0 within the deadline, and every job must be done or
// still queued for the next worker: nothing lost, nothing half-done left unaccounted.

describe('worker process (main.ts)', () => {
  let merchants: TestServer
  let connection: Redis
  let queue: Queue
  let files: WorkerConfigFiles
  const queueName = uniqueName('main-webhooks')
  const children: ChildProcess[] = []

  beforeAll(async () => {
    merchants = await startServer('127.0.0.1', (_request, response) => {
      setTimeout(() => response.end('ok'), 200)
    })
    files = writeWorkerConfig(
      {
        sources: [{ kind: 'bullmq', queue: queueName, handler: 'webhook', concurrency: 20 }],
        webhook: { defaultSecret: SECRET },
        shutdown: { deadlineMs: 5_000 },
      },
      { rates: { type: 'snapshot', version: 1, default: '40/s' } },
    )
    connection = new Redis(redisUrl(), { maxRetriesPerRequest: null })
    queue = new Queue(queueName, { connection })
  })

  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL')
    await queue?.obliterate({ force: true })
    await queue?.close()
    await connection?.quit()
    await merchants?.close()
  })

  it('stops on SIGTERM under load with exit 0, and the next worker finishes the rest: nothing lost', async () => {
    const total = 200
    await queue.addBulk(
      Array.from({ length: total }, (_, i) => ({
        name: 'webhook',
        data: {
          merchantId: `m${i % 4}`,
          eventId: `evt_${i}`,
          url: `${merchants.origin}/hook`,
          payload: { i },
        },
      })),
    )
    const first = startWorker(files.configFile)
    children.push(first.child)
    await waitFor('the first deliveries', () => merchants.requests.length >= 30, 60_000)
    const signalledAt = Date.now()
    first.child.kill('SIGTERM')
    const code = await first.exited()
    const stoppedInMs = Date.now() - signalledAt
    expect(code, first.output()).toBe(0)
    expect(stoppedInMs).toBeLessThan(5_000 + 3_000)
    expect(first.output()).toContain('"msg":"stopped"')

    const afterStop = await queue.getJobCounts(
      'completed',
      'failed',
      'active',
      'waiting',
      'delayed',
      'prioritized',
    )
    expect(afterStop.failed).toBe(0)
    expect(afterStop.active).toBe(0)
    expect(Object.values(afterStop).reduce((sum, n) => sum + n, 0)).toBe(total)
    expect(afterStop.completed).toBeLessThan(total)

    const second = startWorker(files.configFile)
    children.push(second.child)
    await waitFor(
      'every job completed',
      async () => (await queue.getJobCounts('completed')).completed === total,
      60_000,
    )
    second.child.kill('SIGTERM')
    expect(await second.exited()).toBe(0)

    const delivered = merchants.requests.map((r) => JSON.parse(r.body).i as number)
    expect(new Set(delivered).size).toBe(total)
    // graceful: jobs in flight at SIGTERM finished there, so none was delivered twice
    expect(delivered.length).toBe(total)
  })

  it('exits 78 with a message naming the field when the config is wrong', async () => {
    writeFileSync(join(files.dir, 'bad.json'), JSON.stringify({ http: { port: 'eighty' } }))
    const worker = startWorker(join(files.dir, 'bad.json'))
    children.push(worker.child)
    const code = await worker.exited()
    expect(code).toBe(78)
    expect(worker.output()).toContain("config field 'http.port'")
  })
})
