import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { Queue } from 'bullmq'
import { Redis, type RedisOptions } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { ConnectionError } from '../../src/errors.js'
import { createLogger } from '../../src/service/logger.js'
import { type RunningService, startService } from '../../src/service/service.js'
import { closedPort, startServer, type TestServer } from '../handlers/support.js'
import { uniqueName } from '../support/services.js'
import { waitFor } from '../support/wait-for.js'
import { loadWorkerConfig, writeWorkerConfig } from '../support/worker-config.js'
import { startWorkerProcess } from '../support/worker-process.js'

// Redis as production runs it: a password (requirepass), an ACL user limited to BullMQ's
// keys, TLS with a private CA. A redis-server of this test's own on two free loopback ports
// (plain and TLS), with a throwaway CA made by openssl; killed in afterAll. The shared Redis
// of the other tests is never touched.

const SECRET = 'whsec_c2VjdXJpdHktcmVkaXMtdGVzdC1zZWNyZXQtMzJieXRlcyE='
const DEFAULT_PASSWORD = 'requirepass-Kq8vX2'
const WORKER_PASSWORD = 'acl-worker-Zt41pB'
const WRONG_PASSWORD = 'wrong-guess-Hn5sW9'
const ROTATED_PASSWORD = 'rotated-Lm3cV7'
const PASSWORD_ENV = 'MT_TEST_REDIS_PASSWORD'
const TOKEN_ENV = 'MT_TEST_STATUS_TOKEN'
const STATUS_TOKEN = 'status-token-Ry6dU0'

/** startLoggerCapture is the worker's own logger (its redaction included) at trace level, into memory. */
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

/** makeCertificates writes ca.pem and a server key and certificate for 127.0.0.1 into dir. */
function makeCertificates(dir: string): void {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
  openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=mt test CA',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
  )
  openssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=127.0.0.1',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
  )
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n')
  openssl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '1',
    '-extfile',
    'server.ext',
    '-out',
    'server.crt',
  )
}

describe('Redis with a password, an ACL user and TLS (a private redis-server on loopback)', () => {
  let dir: string
  let redisServer: ChildProcess
  let port: number
  let tlsPort: number
  let admin: Redis
  let merchants: TestServer
  const captured = startLoggerCapture()
  const services: RunningService[] = []

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mt-security-redis-'))
    makeCertificates(dir)
    port = await closedPort()
    tlsPort = await closedPort()
    redisServer = spawn(
      'redis-server',
      [
        '--bind',
        '127.0.0.1',
        '--port',
        String(port),
        '--tls-port',
        String(tlsPort),
        '--tls-cert-file',
        join(dir, 'server.crt'),
        '--tls-key-file',
        join(dir, 'server.key'),
        '--tls-ca-cert-file',
        join(dir, 'ca.pem'),
        '--tls-auth-clients',
        'no',
        '--requirepass',
        DEFAULT_PASSWORD,
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let serverLog = ''
    redisServer.stdout!.on('data', (chunk: Buffer) => {
      serverLog += chunk.toString()
    })
    let spawnError: Error | undefined
    redisServer.on('error', (error) => {
      spawnError = error
    })
    admin = new Redis({ host: '127.0.0.1', port, password: DEFAULT_PASSWORD, lazyConnect: true })
    admin.on('error', () => undefined) // refused until the server listens; waitFor below retries
    await waitFor(
      'the private redis-server',
      async () => {
        if (spawnError !== undefined) {
          throw new Error(`these tests run redis-server (7+, built with TLS): ${spawnError.message}`)
        }
        if (redisServer.exitCode !== null) throw new Error(`redis-server exited: ${serverLog}`)
        return (await admin.ping().catch(() => 'not yet')) === 'PONG'
      },
      10_000,
    )
    // The worker's user: BullMQ's keys only, no dangerous commands except INFO (BullMQ reads the version).
    await admin.call(
      'ACL',
      'SETUSER',
      'mt-worker',
      'on',
      `>${WORKER_PASSWORD}`,
      '~bull:*',
      '&*',
      '+@all',
      '-@dangerous',
      '+info',
    )
    writeFileSync(join(dir, 'worker-password'), `${WORKER_PASSWORD}\n`)
    merchants = await startServer('127.0.0.1')
    process.env[PASSWORD_ENV] = DEFAULT_PASSWORD
    process.env[TOKEN_ENV] = STATUS_TOKEN
  })

  afterAll(async () => {
    for (const service of services) await service.stop()
    await merchants?.close()
    admin?.disconnect()
    if (redisServer !== undefined && redisServer.exitCode === null) {
      redisServer.kill('SIGTERM')
      await once(redisServer, 'exit')
    }
    rmSync(dir, { recursive: true, force: true })
    delete process.env[PASSWORD_ENV]
    delete process.env[TOKEN_ENV]
  })

  function workerConfig(redis: Record<string, unknown>, queueName: string) {
    return loadWorkerConfig(
      {
        http: { authToken: `env:${TOKEN_ENV}` },
        redis,
        sources: [{ kind: 'bullmq', queue: queueName, handler: 'webhook', concurrency: 5, attempts: 2 }],
        webhook: { defaultSecret: SECRET },
        shutdown: { deadlineMs: 2_000 },
      },
      { rates: { type: 'snapshot', version: 1, default: '50/s' }, env: {} },
    ).config
  }

  /** deliverOne starts a worker with `redis`, queues one webhook through `producer` and waits until the merchant has it. */
  async function deliverOne(redis: Record<string, unknown>, producer: RedisOptions): Promise<RunningService> {
    const queueName = uniqueName('sec-redis')
    const service = await startService(workerConfig(redis, queueName), captured.logger)
    services.push(service)
    const connection = new Redis({ ...producer, maxRetriesPerRequest: null })
    const queue = new Queue(queueName, { connection })
    try {
      const path = `/${uniqueName('m')}/hooks`
      await queue.add('webhook', {
        merchantId: 'm_secure',
        eventId: uniqueName('evt'),
        url: `${merchants.origin}${path}`,
        payload: { type: 'payment.succeeded' },
      })
      await waitFor(
        `delivery to ${path}`,
        async () => merchants.requests.some((r) => r.path === path),
        20_000,
      )
      await waitFor('completion', async () => (await queue.getJobCounts('completed')).completed === 1, 5_000)
      expect(service.readiness().ready).toBe(true)
      await queue.obliterate({ force: true })
    } finally {
      await queue.close()
      await connection.quit()
    }
    return service
  }

  it('delivers a webhook through a Redis with requirepass (default user, password from env:)', async () => {
    const service = await deliverOne(
      { url: `redis://127.0.0.1:${port}`, password: `env:${PASSWORD_ENV}` },
      { host: '127.0.0.1', port, password: DEFAULT_PASSWORD },
    )
    // http.authToken is a secret reference too: the token is its value, not the reference
    const statusWith = async (token: string) =>
      (await fetch(`${service.url}/status.json`, { headers: { authorization: `Bearer ${token}` } })).status
    expect(await statusWith(STATUS_TOKEN)).toBe(200)
    expect(await statusWith(`env:${TOKEN_ENV}`)).toBe(401)
  })

  it('delivers a webhook as an ACL user limited to bull:* keys, over TLS with the private CA (rediss://, password from file:)', async () => {
    await deliverOne(
      {
        url: `rediss://127.0.0.1:${tlsPort}`,
        username: 'mt-worker',
        password: `file:${join(dir, 'worker-password')}`,
        tls: { ca: join(dir, 'ca.pem') },
      },
      {
        host: '127.0.0.1',
        port: tlsPort,
        username: 'mt-worker',
        password: WORKER_PASSWORD,
        tls: { ca: readFileSync(join(dir, 'ca.pem')) },
      },
    )
  })

  it('a wrong password stops start-up with a ConnectionError naming the address and the user, never the password', async () => {
    process.env.MT_TEST_REDIS_WRONG = WRONG_PASSWORD
    try {
      const error = await startService(
        workerConfig(
          {
            url: `rediss://127.0.0.1:${tlsPort}`,
            username: 'mt-worker',
            password: 'env:MT_TEST_REDIS_WRONG',
            tls: { ca: join(dir, 'ca.pem') },
          },
          uniqueName('sec-redis'),
        ),
        captured.logger,
      ).then(
        () => undefined,
        (thrown: unknown) => thrown,
      )
      expect(error).toBeInstanceOf(ConnectionError)
      expect(error).toMatchObject({
        service: 'redis',
        reason: 'authentication',
        address: `rediss://127.0.0.1:${tlsPort}`,
      })
      const message = (error as Error).message
      expect(message).toContain(`rediss://127.0.0.1:${tlsPort}`)
      expect(message).toContain("user 'mt-worker'")
      expect(message).toContain('WRONGPASS')
      expect(message).not.toContain(WRONG_PASSWORD)
      expect(JSON.stringify(error)).not.toContain(WRONG_PASSWORD)
    } finally {
      delete process.env.MT_TEST_REDIS_WRONG
    }
  })

  it('no password against requirepass: a ConnectionError that says a password is needed', async () => {
    await expect(
      startService(
        workerConfig({ url: `redis://127.0.0.1:${port}` }, uniqueName('sec-redis')),
        captured.logger,
      ),
    ).rejects.toThrow(
      new RegExp(
        `^Redis at redis://127\\.0\\.0\\.1:${port} refused user 'default' \\(it requires a password: set redis\\.password\\): NOAUTH`,
      ),
    )
  })

  it('rediss:// without the private CA: a TLS ConnectionError (the certificate is not trusted)', async () => {
    const error = await startService(
      workerConfig(
        { url: `rediss://127.0.0.1:${tlsPort}`, password: `env:${PASSWORD_ENV}` },
        uniqueName('sec-redis'),
      ),
      captured.logger,
    ).catch((thrown: unknown) => thrown)
    expect(error).toBeInstanceOf(ConnectionError)
    expect(error).toMatchObject({ reason: 'tls' })
    expect((error as Error).message).toMatch(
      /^TLS to Redis at rediss:\/\/127\.0\.0\.1:\d+ failed .*certificate/,
    )
  })

  it('a plain redis:// client on the TLS port: the server hangs up, and the error says to use rediss://', async () => {
    const error = await startService(
      workerConfig(
        { url: `redis://127.0.0.1:${tlsPort}`, password: `env:${PASSWORD_ENV}`, connectTimeoutMs: 3_000 },
        uniqueName('sec-redis'),
      ),
      captured.logger,
    ).catch((thrown: unknown) => thrown)
    expect(error).toBeInstanceOf(ConnectionError)
    expect((error as Error).message).toContain(`redis://127.0.0.1:${tlsPort}`)
    expect(error).toMatchObject({ reason: 'protocol' })
    expect((error as Error).message).toContain('use rediss://')
  })

  it('the worker process (main.ts) exits 1 on a wrong password and says where and as whom, not the password', async () => {
    const { configFile } = writeWorkerConfig({
      redis: { password: 'env:MT_TEST_REDIS_WRONG' },
      sources: [{ kind: 'bullmq', queue: uniqueName('sec-redis'), handler: 'webhook' }],
      webhook: { defaultSecret: SECRET },
    })
    const worker = startWorkerProcess(configFile, {
      REDIS_URL: `redis://127.0.0.1:${port}`,
      MT_TEST_REDIS_WRONG: WRONG_PASSWORD,
      MT_LOG_LEVEL: 'trace',
    })
    const code = await worker.exited()
    const output = worker.output()
    expect(code).toBe(1)
    expect(output).toContain(`Redis at redis://127.0.0.1:${port} refused user 'default'`)
    expect(output).toContain('WRONGPASS')
    expect(output).not.toContain(WRONG_PASSWORD)
  })

  it('a password rotated under a running worker: its reconnect failures are logged without the password, and it recovers', async () => {
    const queueName = uniqueName('sec-redis')
    const service = await startService(
      workerConfig(
        {
          url: `redis://127.0.0.1:${port}`,
          username: 'mt-worker',
          password: `file:${join(dir, 'worker-password')}`,
        },
        queueName,
      ),
      captured.logger,
    )
    services.push(service)
    const before = captured.text().length
    const printed = vi.spyOn(console, 'error')
    await admin.call('ACL', 'SETUSER', 'mt-worker', 'resetpass', `>${ROTATED_PASSWORD}`)
    await admin.call('CLIENT', 'KILL', 'USER', 'mt-worker')
    try {
      // ioredis sends AUTH with the old password again and again; each refusal reaches the log.
      await waitFor(
        'a logged WRONGPASS',
        async () => captured.text().slice(before).includes('WRONGPASS'),
        10_000,
      )
      const logged = captured.text().slice(before)
      expect(logged).not.toContain(WORKER_PASSWORD)
      expect(logged).toContain('[redacted]')
      // BullMQ prints an error that nobody listens for to stderr, command.args and all
      expect(
        JSON.stringify(printed.mock.calls, (_key, value) =>
          value instanceof Error ? { ...value, message: value.message } : value,
        ),
      ).not.toContain(WORKER_PASSWORD)
    } finally {
      printed.mockRestore()
      await admin.call('ACL', 'SETUSER', 'mt-worker', 'resetpass', `>${WORKER_PASSWORD}`)
    }
    await waitFor('the worker to reconnect', async () => service.readiness().ready, 15_000)
  })

  it('logs of every start above, failed or not, hold no password', () => {
    const text = captured.text()
    expect(text).toContain('worker started')
    for (const password of [
      DEFAULT_PASSWORD,
      WORKER_PASSWORD,
      WRONG_PASSWORD,
      ROTATED_PASSWORD,
      STATUS_TOKEN,
    ]) {
      expect(text).not.toContain(password)
    }
  })
})
