import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { Kafka, type KafkaConfig, logLevel } from 'kafkajs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConnectionError } from '../../src/errors.js'
import { createLogger } from '../../src/service/logger.js'
import { type RunningService, startService } from '../../src/service/service.js'
import { startServer, type TestServer } from '../handlers/support.js'
import { uniqueName } from '../support/services.js'
import { waitFor } from '../support/wait-for.js'
import { loadWorkerConfig } from '../support/worker-config.js'
import { startWorkerProcess } from '../support/worker-process.js'

// Kafka as production runs it: SASL/SCRAM logins, and TLS with a private CA. A broker of this
// test's own (scripts/kafka-local with KAFKA_LOCAL_RUN in a temp folder and KAFKA_TLS=1: a
// SASL_PLAINTEXT and a SASL_SSL listener, SCRAM-SHA-256/512 user mt / mt-secret, a throwaway
// CA in <run>/tls/ca.pem), stopped in afterAll. The shared broker of the other tests is never
// touched. Only 127.0.0.1.

const KAFKA_LOCAL = fileURLToPath(new URL('../../scripts/kafka-local', import.meta.url))
const SASL_USER = 'mt'
const SASL_PASSWORD = 'mt-secret'
const WRONG_PASSWORD = 'not-the-scram-Jw82Qe'
const PASSWORD_ENV = 'MT_TEST_KAFKA_PASSWORD'
const SECRET = 'whsec_c2VjdXJpdHkta2Fma2EtdGVzdC1zZWNyZXQtMzJieXRlcyE='

/** kafkaLocal runs scripts/kafka-local for the private broker and returns its stdout. */
function kafkaLocal(runDir: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [KAFKA_LOCAL, ...args], {
      env: { ...process.env, KAFKA_LOCAL_RUN: runDir, KAFKA_TLS: '1', KAFKA_LOCAL_LEASE: '' },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let stdout = ''
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    child.on('error', reject)
    child.on('close', (code) =>
      code === 0
        ? resolve(stdout.trim())
        : reject(new Error(`scripts/kafka-local ${args.join(' ')} exited ${code}`)),
    )
  })
}

function startLoggerCapture() {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(chunk.toString('utf8'))
      callback()
    },
  })
  return { logger: createLogger({ level: 'trace', pretty: 'never' }, stream), text: () => lines.join('') }
}

describe('Kafka with SASL/SCRAM and TLS (a private kafka-local broker on loopback)', () => {
  let dir: string
  let runDir: string
  let saslBroker: string
  let tlsBroker: string
  let caFile: string
  let merchants: TestServer
  let started = false
  const captured = startLoggerCapture()
  const services: RunningService[] = []

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mt-security-kafka-'))
    runDir = join(dir, 'kafka')
    await kafkaLocal(runDir, ['start'])
    started = true
    saslBroker = await kafkaLocal(runDir, ['brokers', '--sasl'])
    tlsBroker = await kafkaLocal(runDir, ['brokers', '--tls'])
    caFile = join(runDir, 'tls', 'ca.pem')
    merchants = await startServer('127.0.0.1')
    process.env[PASSWORD_ENV] = SASL_PASSWORD
  })

  afterAll(async () => {
    for (const service of services) await service.stop()
    await merchants?.close()
    if (started) await kafkaLocal(runDir, ['stop'])
    rmSync(dir, { recursive: true, force: true })
    delete process.env[PASSWORD_ENV]
  })

  function workerConfig(kafka: Record<string, unknown>, sources: unknown[] = []) {
    return loadWorkerConfig(
      {
        kafka: { clientId: uniqueName('sec-kafka'), ...kafka },
        control: { source: 'kafka', topic: uniqueName('sec-control') },
        sources,
        webhook: { defaultSecret: SECRET },
        shutdown: { deadlineMs: 2_000 },
      },
      { env: {} },
    ).config
  }

  /** deliverOne starts a worker with a Kafka control source and a Kafka source, produces one webhook and waits for it. */
  async function deliverOne(kafka: Record<string, unknown>, client: KafkaConfig): Promise<void> {
    const topic = uniqueName('sec-jobs')
    const producerClient = new Kafka({ ...client, clientId: 'sec-test', logLevel: logLevel.NOTHING })
    const admin = producerClient.admin()
    await admin.connect()
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true })
    await admin.disconnect()
    const service = await startService(
      workerConfig(kafka, [{ kind: 'kafka', topic, groupId: uniqueName('sec-group'), handler: 'webhook' }]),
      captured.logger,
    )
    services.push(service)
    expect(service.readiness().ready).toBe(true)
    const path = `/${uniqueName('m')}/hooks`
    const producer = producerClient.producer()
    await producer.connect()
    try {
      await producer.send({
        topic,
        messages: [
          {
            key: 'm_kafka',
            value: JSON.stringify({
              merchantId: 'm_kafka',
              eventId: uniqueName('evt'),
              url: `${merchants.origin}${path}`,
              payload: { type: 'payment.succeeded' },
            }),
          },
        ],
      })
    } finally {
      await producer.disconnect()
    }
    await waitFor(`delivery to ${path}`, () => merchants.requests.some((r) => r.path === path), 30_000)
  }

  it('SASL_PLAINTEXT with SCRAM-SHA-512: the worker reads its control topic and delivers from a Kafka source', async () => {
    await deliverOne(
      {
        brokers: [saslBroker],
        sasl: { mechanism: 'scram-sha-512', username: SASL_USER, password: `env:${PASSWORD_ENV}` },
      },
      {
        brokers: [saslBroker],
        sasl: { mechanism: 'scram-sha-512', username: SASL_USER, password: SASL_PASSWORD },
      },
    )
  })

  it("SASL_SSL (TLS verified against the broker's private CA) with SCRAM-SHA-256: the worker delivers", async () => {
    writeFileSync(join(dir, 'kafka-password'), SASL_PASSWORD)
    await deliverOne(
      {
        brokers: [tlsBroker],
        ssl: { ca: caFile },
        sasl: {
          mechanism: 'scram-sha-256',
          username: SASL_USER,
          password: `file:${join(dir, 'kafka-password')}`,
        },
      },
      {
        brokers: [tlsBroker],
        ssl: { ca: [readFileSync(caFile, 'utf8')] },
        sasl: { mechanism: 'scram-sha-256', username: SASL_USER, password: SASL_PASSWORD },
      },
    )
  })

  it('a wrong password stops start-up with a ConnectionError naming the broker, the mechanism and the user, never the password', async () => {
    process.env.MT_TEST_KAFKA_WRONG = WRONG_PASSWORD
    try {
      const error = await startService(
        workerConfig({
          brokers: [tlsBroker],
          ssl: { ca: caFile },
          sasl: { mechanism: 'scram-sha-512', username: SASL_USER, password: 'env:MT_TEST_KAFKA_WRONG' },
        }),
        captured.logger,
      ).catch((thrown: unknown) => thrown)
      expect(error).toBeInstanceOf(ConnectionError)
      expect(error).toMatchObject({ service: 'kafka', reason: 'authentication', address: tlsBroker })
      const message = (error as Error).message
      expect(message).toContain(`Kafka broker ${tlsBroker} refused SASL SCRAM-SHA-512 as user '${SASL_USER}'`)
      // kafkajs's own words are kept
      expect(message).toMatch(/SASL SCRAM SHA512 authentication failed/)
      expect(message).not.toContain(WRONG_PASSWORD)
    } finally {
      delete process.env.MT_TEST_KAFKA_WRONG
    }
  })

  it('the worker process (main.ts) exits 1 on a wrong Kafka password, naming broker, mechanism and user, not the password', async () => {
    const configFile = join(dir, 'wrong-password.json')
    writeFileSync(
      configFile,
      JSON.stringify({
        http: { port: 0 },
        kafka: {
          brokers: [saslBroker],
          sasl: { mechanism: 'scram-sha-256', username: SASL_USER, password: 'env:MT_TEST_KAFKA_WRONG' },
        },
        control: { source: 'kafka', topic: uniqueName('sec-control') },
        sources: [],
      }),
    )
    const worker = startWorkerProcess(configFile, {
      KAFKA_BROKERS: saslBroker,
      MT_TEST_KAFKA_WRONG: WRONG_PASSWORD,
      MT_LOG_LEVEL: 'trace',
    })
    const code = await worker.exited()
    const output = worker.output()
    expect(code).toBe(1)
    expect(output).toContain(`Kafka broker ${saslBroker} refused SASL SCRAM-SHA-256 as user '${SASL_USER}'`)
    expect(output).not.toContain(WRONG_PASSWORD)
  })

  it('a mechanism the broker does not enable (PLAIN): a ConnectionError saying so', async () => {
    const error = await startService(
      workerConfig({
        brokers: [saslBroker],
        sasl: { mechanism: 'plain', username: SASL_USER, password: `env:${PASSWORD_ENV}` },
      }),
      captured.logger,
    ).catch((thrown: unknown) => thrown)
    expect(error).toBeInstanceOf(ConnectionError)
    expect((error as Error).message).toContain(`Kafka broker ${saslBroker} does not accept SASL PLAIN`)
  })

  it('TLS without the private CA: a TLS ConnectionError at once (the certificate is not trusted)', async () => {
    const error = await startService(
      workerConfig({
        brokers: [tlsBroker],
        ssl: true,
        sasl: { mechanism: 'scram-sha-512', username: SASL_USER, password: `env:${PASSWORD_ENV}` },
      }),
      captured.logger,
    ).catch((thrown: unknown) => thrown)
    expect(error).toBeInstanceOf(ConnectionError)
    expect(error).toMatchObject({ reason: 'tls', address: tlsBroker })
    expect((error as Error).message).toMatch(/^TLS to Kafka broker .* failed .*certificate/)
  })

  it('no SASL against the SASL listener: the broker hangs up, and the error points at kafka.sasl', async () => {
    const error = await startService(workerConfig({ brokers: [saslBroker] }), captured.logger).catch(
      (thrown: unknown) => thrown,
    )
    expect(error).toBeInstanceOf(ConnectionError)
    expect(error).toMatchObject({ reason: 'protocol', address: saslBroker })
    expect((error as Error).message).toContain('kafka.sasl')
  })

  it('logs of every start above, failed or not, hold no password', () => {
    const text = captured.text()
    expect(text).toContain('worker started')
    expect(text).not.toContain(SASL_PASSWORD)
    expect(text).not.toContain(WRONG_PASSWORD)
  })
})
