import { readFileSync } from 'node:fs'
import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls'
import { Redis, type RedisOptions } from 'ioredis'
import kafkajs, {
  Kafka,
  type KafkaConfig,
  type KafkaJSConnectionError,
  type LogEntry,
  logLevel,
  type SASLOptions,
} from 'kafkajs'
import type { Logger } from 'pino'
import { ConfigError, ConnectionError } from '../errors.js'
import { backoffMs } from '../limiter/backoff.js'
import type { Config } from './config.js'
import { resolveSecret } from './secrets.js'

type TlsConfig = Exclude<Config['kafka']['ssl'], boolean>

/** Connections are the worker's clients of Kafka and Redis, built from the config. */
export interface Connections {
  /** kafka is the one kafkajs client the control source and Kafka sources share; undefined without brokers. */
  readonly kafka: Kafka | undefined
  /** redisAddress is where Redis is, as `redis[s]://host:port[/db]`: no credentials, safe to log. */
  readonly redisAddress: string
  /** redis opens a new Redis connection for BullMQ (no per-request retry limit, as its workers need). */
  redis(): Redis
  /**
   * check connects once to each service named and fails fast with a ConnectionError that
   * names the address, the user and (Kafka) the SASL mechanism, instead of the clients
   * retrying for ever in the background.
   */
  check(services: { kafka: boolean; redis: boolean }): Promise<void>
}

/**
 * createConnections reads the TLS files and resolves the secrets of `config.kafka` and
 * `config.redis` (a ConfigError names the field when one cannot be read), and returns the
 * clients. Nothing connects until check() or the first use.
 */
export function createConnections(
  config: Pick<Config, 'kafka' | 'redis'>,
  logger: Logger,
  env: NodeJS.ProcessEnv = process.env,
): Connections {
  const kafkaConfig = config.kafka.brokers.length > 0 ? kafkaClientConfig(config.kafka, env) : undefined
  const redisOptions = redisClientOptions(config.redis, env)
  const redisAddress = describeRedis(redisOptions)
  const kafkaLogger = logger.child({ component: 'kafkajs' })
  const kafka =
    kafkaConfig === undefined
      ? undefined
      : new Kafka({ ...kafkaConfig, logLevel: logLevel.WARN, logCreator: kafkaLogCreator(kafkaLogger) })
  if (
    config.kafka.sasl?.mechanism === 'plain' &&
    config.kafka.ssl === false &&
    config.kafka.brokers.length > 0
  ) {
    logger.warn(
      { component: 'connections' },
      'kafka.sasl uses PLAIN without kafka.ssl: the password crosses the network in clear text',
    )
  }
  return {
    kafka,
    redisAddress,
    redis: () => new Redis({ ...redisOptions, maxRetriesPerRequest: null }),
    async check(services) {
      if (services.redis) await checkRedis(redisOptions, redisAddress, config.redis.connectTimeoutMs)
      if (services.kafka && kafkaConfig !== undefined) {
        await checkKafka(kafkaConfig, config.kafka, kafkaLogger)
      }
    },
  }
}

/**
 * kafkaClientConfig turns `config.kafka` into kafkajs's client options: brokers, TLS
 * (files read), SASL (password resolved) and timeouts. Logging is left to the caller.
 */
export function kafkaClientConfig(
  config: Config['kafka'],
  env: NodeJS.ProcessEnv = process.env,
): KafkaConfig {
  const sasl: SASLOptions | undefined =
    config.sasl === undefined
      ? undefined
      : ({
          mechanism: config.sasl.mechanism,
          username: config.sasl.username,
          password: resolveSecret(config.sasl.password, 'kafka.sasl.password', env),
        } as SASLOptions)
  return {
    clientId: config.clientId,
    brokers: config.brokers,
    ssl: typeof config.ssl === 'boolean' ? config.ssl : tlsOptionsOf(config.ssl, 'kafka.ssl', env),
    ...(sasl === undefined ? {} : { sasl }),
    connectionTimeout: config.connectionTimeoutMs,
    authenticationTimeout: config.authenticationTimeoutMs,
  }
}

/**
 * redisClientOptions turns `config.redis` into ioredis options. TLS is on for a rediss://
 * URL or when `tls` is set. `username` and `password` win over credentials in the URL.
 */
export function redisClientOptions(
  config: Config['redis'],
  env: NodeJS.ProcessEnv = process.env,
): RedisOptions {
  const url = new URL(config.url)
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0
  if (!Number.isInteger(db) || db < 0) {
    throw new ConfigError(
      `config field 'redis.url': expected a database number after the host, got ${url.pathname}`,
    )
  }
  const urlUser = decodeURIComponent(url.username)
  const urlPassword = decodeURIComponent(url.password)
  const username = config.username ?? (urlUser === '' ? undefined : urlUser)
  const password =
    config.password !== undefined
      ? resolveSecret(config.password, 'redis.password', env)
      : urlPassword === ''
        ? undefined
        : urlPassword
  const useTls = url.protocol === 'rediss:' || config.tls !== undefined
  return {
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port === '' ? 6379 : Number(url.port),
    db,
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password }),
    ...(useTls ? { tls: config.tls === undefined ? {} : tlsOptionsOf(config.tls, 'redis.tls', env) } : {}),
    connectTimeout: config.connectTimeoutMs,
  }
}

/** describeRedis is `redis[s]://host:port[/db]` of ioredis options: never the credentials. */
export function describeRedis(options: RedisOptions): string {
  const host = options.host?.includes(':') ? `[${options.host}]` : options.host
  return `${options.tls ? 'rediss' : 'redis'}://${host}:${options.port}${options.db ? `/${options.db}` : ''}`
}

function tlsOptionsOf(tls: TlsConfig, field: string, env: NodeJS.ProcessEnv): TlsConnectionOptions {
  return {
    rejectUnauthorized: tls.rejectUnauthorized,
    ...(tls.ca === undefined ? {} : { ca: readPem(tls.ca, `${field}.ca`, env) }),
    ...(tls.cert === undefined ? {} : { cert: readPem(tls.cert, `${field}.cert`, env) }),
    ...(tls.key === undefined ? {} : { key: readPem(tls.key, `${field}.key`, env) }),
    ...(tls.servername === undefined ? {} : { servername: tls.servername }),
  }
}

/**
 * readPem reads PEM text given as `env:NAME`, `file:/path`, the PEM itself, or a plain file
 * path. A file that cannot be read or holds no PEM is a ConfigError naming `field`.
 */
function readPem(value: string, field: string, env: NodeJS.ProcessEnv): string {
  let pem: string
  if (value.startsWith('env:') || value.startsWith('file:')) {
    pem = resolveSecret(value, field, env)
  } else if (value.trimStart().startsWith('-----BEGIN')) {
    pem = value
  } else {
    try {
      pem = readFileSync(value, 'utf8')
    } catch (error) {
      throw new ConfigError(
        `config field '${field}': cannot read ${value}: ${(error as NodeJS.ErrnoException).code}`,
      )
    }
  }
  if (!pem.includes('-----BEGIN')) {
    throw new ConfigError(`config field '${field}': expected PEM text (-----BEGIN ...), got something else`)
  }
  return pem
}

/**
 * checkRedis opens one connection that never retries, logs in and sends PING. ioredis
 * reports a refused login only as an 'error' event (the connect promise just says the
 * connection closed), so the last such event is what gets explained.
 */
async function checkRedis(options: RedisOptions, address: string, timeoutMs: number): Promise<void> {
  const probe = new Redis({
    ...options,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    commandTimeout: timeoutMs,
  })
  let lastError: Error | undefined
  probe.on('error', (error: Error) => {
    lastError = error
  })
  let timer: NodeJS.Timeout | undefined
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
  })
  try {
    await Promise.race([probe.connect().then(() => probe.ping()), timedOut])
  } catch (error) {
    throw redisError(lastError ?? (error as Error), address, options.username ?? 'default')
  } finally {
    clearTimeout(timer)
    probe.disconnect()
  }
}

// kafkajs is CommonJS and spreads its error classes into its exports, which Node cannot
// name for an ES module import: they are reached through the default export.
const { KafkaJSNumberOfRetriesExceeded, KafkaJSSASLAuthenticationError } = kafkajs
/** KafkaJSConnectionClosedError is exported by kafkajs 2.2.4 but missing from its types. */
const { KafkaJSConnectionClosedError } = kafkajs as unknown as {
  KafkaJSConnectionClosedError: typeof KafkaJSConnectionError
}

const TLS_ERROR_CODES = /^(CERT_|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO_|ERR_TLS_|ERR_SSL_|HOSTNAME_MISMATCH)/

function isTlsError(error: { code?: unknown; message: string }): boolean {
  return (
    (typeof error.code === 'string' && TLS_ERROR_CODES.test(error.code)) ||
    /certificate|secure TLS connection|SSL routines|wrong version number/i.test(error.message)
  )
}

/**
 * redisError explains a failed check. Only the message of the ioredis error is kept: its
 * `command.args` would hold the AUTH password.
 */
function redisError(error: Error & { code?: unknown }, address: string, user: string): ConnectionError {
  const message = error.message
  if (/^(WRONGPASS|NOAUTH)/.test(message)) {
    const hint = message.startsWith('NOAUTH')
      ? 'it requires a password: set redis.password'
      : 'check redis.username and redis.password'
    return new ConnectionError(
      'redis',
      address,
      'authentication',
      `Redis at ${address} refused user '${user}' (${hint}): ${message}`,
    )
  }
  if (/NOPERM/.test(message)) {
    return new ConnectionError(
      'redis',
      address,
      'authorization',
      `Redis at ${address}: user '${user}' may not run what the worker needs (see the README's Redis ACL): ${message}`,
    )
  }
  if (isTlsError(error)) {
    return new ConnectionError(
      'redis',
      address,
      'tls',
      `TLS to Redis at ${address} failed (check redis.tls.ca, and that the port speaks TLS): ${message}`,
    )
  }
  if (message === CLOSED_BY_SERVER || error.code === 'ECONNRESET') {
    return new ConnectionError(
      'redis',
      address,
      'protocol',
      `Redis at ${address} hung up before answering (${address.startsWith('rediss:') ? 'a TLS client on a plain port?' : 'a plain client on a TLS port? use rediss://'}): ${message}`,
    )
  }
  return new ConnectionError(
    'redis',
    address,
    'unreachable',
    `cannot connect to Redis at ${address} as user '${user}': ${message}`,
  )
}

/** CLOSED_BY_SERVER is ioredis's word for a connection that ended without an error of its own. */
const CLOSED_BY_SERVER = 'Connection is closed.'

/** KAFKA_CHECK_ATTEMPTS is how often the start-up check tries a broker that cannot be reached. */
const KAFKA_CHECK_ATTEMPTS = 5

/**
 * checkKafka connects an admin client of its own, which logs in to a bootstrap broker and
 * reads the cluster's metadata. A broker that cannot be reached is tried again (up to
 * KAFKA_CHECK_ATTEMPTS, 300 ms doubling); a refused login or a failed TLS handshake ends the
 * check at once, where kafkajs's own retries would spend ten seconds on it. The probe's
 * kafkajs log goes to debug, after noting which broker an error came from: a SASL error
 * does not say.
 */
async function checkKafka(clientConfig: KafkaConfig, config: Config['kafka'], logger: Logger): Promise<void> {
  let failedBroker: string | undefined
  const probe = new Kafka({
    ...clientConfig,
    retry: { retries: 0 },
    logLevel: logLevel.ERROR,
    logCreator:
      () =>
      ({ log }: LogEntry) => {
        const { message, ...extra } = log
        if (typeof extra.broker === 'string') failedBroker = extra.broker
        logger.debug(extra, `start-up check: ${message}`)
      },
  })
  for (let attempt = 1; ; attempt++) {
    const admin = probe.admin()
    try {
      await admin.connect()
      await admin.describeCluster()
      return
    } catch (error) {
      const failure = kafkaError(error as KafkaJsError, failedBroker ?? config.brokers.join(','), config)
      if (failure.reason !== 'unreachable' || attempt >= KAFKA_CHECK_ATTEMPTS) throw failure
      logger.debug({ attempt, err: failure }, 'start-up check: Kafka not reachable yet')
      await new Promise((resolve) => setTimeout(resolve, backoffMs(attempt, { baseMs: 300, jitter: 0 })))
    } finally {
      await admin.disconnect()
    }
  }
}

interface KafkaJsError extends Error {
  type?: string
  broker?: string
  host?: string
  port?: number
  code?: unknown
  cause?: KafkaJsError
}

function kafkaError(error: KafkaJsError, fallbackBroker: string, config: Config['kafka']): ConnectionError {
  // KafkaJSNumberOfRetriesExceeded wraps the last attempt's error.
  const root =
    error instanceof KafkaJSNumberOfRetriesExceeded && error.cause !== undefined ? error.cause : error
  const broker =
    root.broker ??
    (root.host !== undefined && root.port !== undefined ? `${root.host}:${root.port}` : fallbackBroker)
  const mechanism = config.sasl?.mechanism.toUpperCase()
  const login = config.sasl === undefined ? 'no SASL' : `SASL ${mechanism} as user '${config.sasl.username}'`
  if (root instanceof KafkaJSSASLAuthenticationError) {
    return new ConnectionError(
      'kafka',
      broker,
      'authentication',
      `Kafka broker ${broker} refused ${login} (check kafka.sasl.username and kafka.sasl.password): ${root.message}`,
    )
  }
  if (root.type === 'UNSUPPORTED_SASL_MECHANISM') {
    return new ConnectionError(
      'kafka',
      broker,
      'authentication',
      `Kafka broker ${broker} does not accept SASL ${mechanism} (check kafka.sasl.mechanism): ${root.message}`,
    )
  }
  if (root.type === 'SASL_AUTHENTICATION_FAILED' || root.type === 'CLUSTER_AUTHORIZATION_FAILED') {
    return new ConnectionError(
      'kafka',
      broker,
      root.type === 'SASL_AUTHENTICATION_FAILED' ? 'authentication' : 'authorization',
      `Kafka broker ${broker} refused ${login}: ${root.message}`,
    )
  }
  if (isTlsError(root)) {
    return new ConnectionError(
      'kafka',
      broker,
      'tls',
      `TLS to Kafka broker ${broker} failed (check kafka.ssl and kafka.ssl.ca, and that the listener speaks TLS): ${root.message}`,
    )
  }
  if (root instanceof KafkaJSConnectionClosedError) {
    return new ConnectionError(
      'kafka',
      broker,
      'protocol',
      `Kafka broker ${broker} closed the connection with ${login}${config.ssl === false ? ' and no TLS' : ''} (does the listener expect SASL or TLS? see kafka.sasl and kafka.ssl): ${root.message}`,
    )
  }
  return new ConnectionError(
    'kafka',
    broker,
    'unreachable',
    `cannot connect to Kafka broker ${broker} with ${login}${config.ssl === false ? '' : ' over TLS'}: ${root.message}`,
  )
}

function kafkaLogCreator(logger: Logger) {
  return () =>
    ({ level, log }: LogEntry) => {
      const { message, ...extra } = log
      if (level <= logLevel.ERROR) logger.error(extra, message)
      else if (level === logLevel.WARN) logger.warn(extra, message)
      else logger.debug(extra, message)
    }
}
