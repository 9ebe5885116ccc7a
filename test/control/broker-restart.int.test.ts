import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { ensureControlTopic } from '../../src/control/topic.js'
import { uniqueName } from '../support/services.js'
import { type ControlFixture, closeFixture, openFixture, overridesOf, startSource } from './support.js'

const execFileAsync = promisify(execFile)
const kafkaLocal = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'scripts', 'kafka-local')

// This test restarts a broker, so it runs one of its own (scripts/kafka-local with its own
// KAFKA_LOCAL_RUN folder, on a port of its own): the shared broker other tests use is never touched.
let runDir: string
let brokers: string[]
let fixture: ControlFixture | undefined

async function kafkaLocalCommand(
  command: 'start' | 'stop',
  env: Record<string, string> = {},
): Promise<string> {
  const { stdout } = await execFileAsync('bash', [kafkaLocal, command], {
    env: { ...process.env, KAFKA_LOCAL_RUN: runDir, KAFKA_LOCAL_LEASE: '', ...env },
    timeout: 170_000,
  })
  return stdout.trim()
}

beforeAll(async () => {
  runDir = await mkdtemp(join(tmpdir(), 'mt-control-broker-'))
  brokers = [await kafkaLocalCommand('start')]
}, 180_000)

afterAll(async () => {
  await closeFixture(fixture).catch((error: Error) => console.error(`closing the fixture: ${error.message}`))
  if (runDir !== undefined) {
    await kafkaLocalCommand('stop')
    await rm(runDir, { recursive: true, force: true })
  }
}, 60_000)

describe('Kafka control source across a broker restart', () => {
  it('resumes after the broker comes back and ends at the right table', async () => {
    fixture = await openFixture(brokers, uniqueName('control-restart'))
    const topic = uniqueName('control')
    await ensureControlTopic(fixture.admin, { topic })
    fixture.topics.push(topic)
    const { source, limiter } = await startSource(fixture, { topic })

    const total = 150
    const sendUntilAccepted = async (i: number): Promise<void> => {
      const merchant = `m${i % 5}`
      const value = JSON.stringify({ type: 'set', merchant, rate: `${i + 1}/s`, version: i + 1 })
      for (;;) {
        try {
          await fixture!.producer.send({ topic, acks: -1, messages: [{ key: merchant, value }] })
          return
        } catch (error) {
          // The broker is down: kafkajs has spent its retries; try again until it is back.
          await new Promise((resolve) => setTimeout(resolve, 500, error))
        }
      }
    }

    let restart: Promise<void> | undefined
    for (let i = 0; i < total; i++) {
      await sendUntilAccepted(i)
      if (i === 49) {
        await vi.waitFor(() => expect(source.stats().applied).toBe(50), { timeout: 10_000 })
        restart = (async () => {
          await kafkaLocalCommand('stop')
          await kafkaLocalCommand('start', { KAFKA_LOCAL_KEEP_DATA: '1' })
        })()
      }
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await restart

    // The latest version of each merchant: m0 was last set by change 145 (146/s), ... m4 by 149 (150/s).
    const expected = { m0: '146/1000', m1: '147/1000', m2: '148/1000', m3: '149/1000', m4: '150/1000' }
    await vi.waitFor(() => expect(overridesOf(limiter), JSON.stringify(source.stats())).toEqual(expected), {
      timeout: 60_000,
      interval: 200,
    })
    expect(source.stats().rejected).toBe(0)
    expect(source.stats().applied).toBe(total)

    // A worker starting now reads the same table from the topic.
    const fresh = await startSource(fixture, { topic })
    expect(overridesOf(fresh.limiter)).toEqual(expected)
  }, 240_000)
})
