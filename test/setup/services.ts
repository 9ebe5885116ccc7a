// Global setup of the vitest project `integration`: resolves one real Kafka broker and one real
// Redis for the whole run and hands their addresses to the tests (test/support/services.ts).
//
// Each service is resolved in this order:
//   1. the environment: KAFKA_BROKERS (host:port[,host:port]) / REDIS_URL (redis://...);
//   2. a working Docker engine: testcontainers (Kafka in KRaft mode, Redis 7);
//   3. this machine: scripts/kafka-local (a KRaft broker from Maven Central jars, held with a lease
//      so that concurrent runs share it and the last one stops it; one started by hand stays up)
//      and the Redis on 127.0.0.1:6379, started with redis-server when installed but not running.
// MT_TEST_SERVICES=local skips the Docker step; MT_TEST_SERVICES=docker requires it.
// When nothing works the setup fails with what to install or set: no test is ever skipped.
import { execFile, spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import type { TestProject } from 'vitest/node'

const execFileAsync = promisify(execFile)
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const kafkaLocal = join(repoRoot, 'scripts', 'kafka-local')
const localRedisUrl = 'redis://127.0.0.1:6379'
const dockerCheckTimeoutMs = 5_000
const redisStartTimeoutMs = 10_000

type Teardown = () => Promise<void>

interface Resolved {
  /** address is the bootstrap list (Kafka) or the URL (Redis) the tests use. */
  address: string
  /** source says where the address came from, for the run's log. */
  source: string
  /** teardown undoes what the setup started; absent when it started nothing. */
  teardown?: Teardown
}

function log(message: string): void {
  console.error(`[test services] ${message}`)
}

function secondsSince(startedAtMs: number): string {
  return `${((performance.now() - startedAtMs) / 1000).toFixed(1)} s`
}

/** dockerEngineWorks is true when `docker info` reaches an engine within dockerCheckTimeoutMs. */
async function dockerEngineWorks(): Promise<boolean> {
  try {
    await execFileAsync('docker', ['info', '--format', '{{.ServerVersion}}'], {
      timeout: dockerCheckTimeoutMs,
    })
    return true
  } catch {
    return false
  }
}

async function kafkaFromDocker(): Promise<Resolved> {
  const { KafkaContainer } = await import('@testcontainers/kafka')
  const image = process.env.MT_TEST_KAFKA_IMAGE ?? 'confluentinc/cp-kafka:7.9.0'
  const startedAtMs = performance.now()
  const container = await new KafkaContainer(image).withKraft().start()
  const address = `${container.getHost()}:${container.getMappedPort(9093)}`
  return {
    address,
    source: `testcontainers ${image} (KRaft), started in ${secondsSince(startedAtMs)}`,
    teardown: async () => {
      await container.stop()
    },
  }
}

async function redisFromDocker(): Promise<Resolved> {
  const { RedisContainer } = await import('@testcontainers/redis')
  const image = process.env.MT_TEST_REDIS_IMAGE ?? 'redis:7'
  const startedAtMs = performance.now()
  const container = await new RedisContainer(image).start()
  return {
    address: container.getConnectionUrl(),
    source: `testcontainers ${image}, started in ${secondsSince(startedAtMs)}`,
    teardown: async () => {
      await container.stop()
    },
  }
}

/** runKafkaLocal runs scripts/kafka-local; its progress goes to this process's stderr, its stdout is returned. */
function runKafkaLocal(args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [kafkaLocal, ...args], {
      cwd: repoRoot,
      // The lease lets several test runs share one broker: the last one to release it stops it.
      env: { ...process.env, KAFKA_LOCAL_LEASE: String(process.pid) },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let stdout = ''
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk
    })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code: code ?? 1, stdout: stdout.trim() }))
  })
}

async function kafkaFromLocalBroker(): Promise<Resolved> {
  const startedAtMs = performance.now()
  const started = await runKafkaLocal(['start'])
  if (started.code !== 0 || started.stdout === '') {
    throw new Error(`scripts/kafka-local start failed (exit ${started.code}; its messages are above)`)
  }
  return {
    address: started.stdout,
    // KAFKA_VERSION picks the broker (CI runs the Kafka suites on the default Kafka 4 and on 3.9.1).
    source: `scripts/kafka-local, Kafka ${process.env.KAFKA_VERSION ?? 'default version'} (Maven Central jars; started or reused as logged above), ready in ${secondsSince(startedAtMs)}`,
    teardown: async () => {
      const released = await runKafkaLocal(['release', String(process.pid)])
      if (released.code !== 0) log(`scripts/kafka-local release exited ${released.code}`)
    },
  }
}

/** pingRedis is true when the Redis at url answers PING. */
async function pingRedis(url: string): Promise<boolean> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 1_000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  })
  client.on('error', () => undefined) // a refused connection is an answer here, reported by connect()
  try {
    await client.connect()
    return (await client.ping()) === 'PONG'
  } catch {
    return false
  } finally {
    client.disconnect()
  }
}

async function commandExists(name: string): Promise<boolean> {
  try {
    await execFileAsync('sh', ['-c', `command -v ${name}`])
    return true
  } catch {
    return false
  }
}

async function redisFromLocalServer(): Promise<Resolved> {
  if (await pingRedis(localRedisUrl)) {
    return { address: localRedisUrl, source: 'the Redis already running on 127.0.0.1:6379' }
  }
  if (!(await commandExists('redis-server'))) {
    throw new Error('no Redis answers on 127.0.0.1:6379 and redis-server is not on PATH')
  }
  const startedAtMs = performance.now()
  await execFileAsync('redis-server', [
    '--daemonize',
    'yes',
    '--bind',
    '127.0.0.1',
    '--port',
    '6379',
    '--save',
    '',
    '--appendonly',
    'no',
  ])
  while (!(await pingRedis(localRedisUrl))) {
    if (performance.now() - startedAtMs > redisStartTimeoutMs) {
      throw new Error(
        `redis-server was started but 127.0.0.1:6379 did not answer PING within ${redisStartTimeoutMs} ms`,
      )
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return {
    address: localRedisUrl,
    source: `redis-server on 127.0.0.1:6379, started here in ${secondsSince(startedAtMs)}`,
    teardown: async () => {
      const client = new Redis(localRedisUrl, { maxRetriesPerRequest: 0, retryStrategy: () => null })
      client.on('error', () => undefined) // the connection drops by design when the server shuts down
      // SHUTDOWN has no reply: the server closes the connection, so the command rejects by design;
      // whether the server is gone is checked just below.
      await client.shutdown('NOSAVE').catch(() => 'connection closed')
      client.disconnect()
      if (await pingRedis(localRedisUrl))
        throw new Error('the redis-server started for the tests did not shut down')
    },
  }
}

/** resolveService picks the first source that works, in the order the file's comment gives. */
async function resolveService(
  name: 'Kafka' | 'Redis',
  envValue: string | undefined,
  useDocker: () => Promise<boolean>,
  fromDocker: () => Promise<Resolved>,
  fromLocal: () => Promise<Resolved>,
): Promise<Resolved> {
  if (envValue !== undefined && envValue.trim() !== '') {
    return { address: envValue.trim(), source: 'the environment' }
  }
  if (await useDocker()) return fromDocker()
  try {
    return await fromLocal()
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error)
    const hint =
      name === 'Kafka'
        ? 'Set KAFKA_BROKERS=host:port, or start a Docker engine (testcontainers), or install Java 17+ and Maven ' +
          '(apt-get install openjdk-17-jdk-headless maven) so scripts/kafka-local can run a broker from Maven Central jars.'
        : 'Set REDIS_URL=redis://host:port, or start a Docker engine (testcontainers), or install redis-server (apt-get install redis-server).'
    throw new Error(`integration tests need a real ${name} and none could be had: ${reason}.\n${hint}`)
  }
}

export default async function setup({ provide }: TestProject): Promise<() => Promise<void>> {
  const mode = process.env.MT_TEST_SERVICES ?? 'auto'
  if (!['auto', 'docker', 'local'].includes(mode)) {
    throw new TypeError(`expected MT_TEST_SERVICES to be auto, docker or local, got ${mode}`)
  }
  let dockerAnswer: Promise<boolean> | undefined
  const useDocker = async (): Promise<boolean> => {
    if (mode === 'local') return false
    dockerAnswer ??= dockerEngineWorks()
    const works = await dockerAnswer
    if (!works && mode === 'docker') {
      throw new Error(
        'MT_TEST_SERVICES=docker but `docker info` reaches no Docker engine: start one, or unset it',
      )
    }
    return works
  }

  const teardowns: Teardown[] = []
  const teardown = async (): Promise<void> => {
    for (const undo of teardowns.reverse()) await undo()
  }
  try {
    const redis = await resolveService(
      'Redis',
      process.env.REDIS_URL,
      useDocker,
      redisFromDocker,
      redisFromLocalServer,
    )
    if (redis.teardown) teardowns.push(redis.teardown)
    log(`Redis ${redis.address} from ${redis.source}`)

    const kafka = await resolveService(
      'Kafka',
      process.env.KAFKA_BROKERS,
      useDocker,
      kafkaFromDocker,
      kafkaFromLocalBroker,
    )
    if (kafka.teardown) teardowns.push(kafka.teardown)
    log(`Kafka ${kafka.address} from ${kafka.source}`)

    provide('kafkaBrokers', kafka.address)
    provide('redisUrl', redis.address)
    process.env.KAFKA_BROKERS = kafka.address
    process.env.REDIS_URL = redis.address
  } catch (error) {
    await teardown()
    throw error
  }
  return teardown
}
