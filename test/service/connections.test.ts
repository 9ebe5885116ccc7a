import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { ConfigError, configSchema } from '../../src/service/config.js'
import {
  createConnections,
  describeRedis,
  kafkaClientConfig,
  redisClientOptions,
} from '../../src/service/connections.js'

// How config.kafka and config.redis become kafkajs and ioredis options: secrets resolved
// from env:/file:, PEM read from files, TLS switched on by rediss:// or tls, and the
// address used in messages never carrying a credential. No server is contacted here;
// test/service/security-*.int.test.ts connect for real.

const PEM = '-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n'
const KEY = '-----BEGIN PRIVATE KEY-----\nMIIEtest\n-----END PRIVATE KEY-----\n'

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'mt-connections-'))
}

const kafkaOf = (kafka: Record<string, unknown>) =>
  configSchema.parse({ kafka: { brokers: ['b1:9093'], ...kafka } }).kafka
const redisOf = (redis: Record<string, unknown>) => configSchema.parse({ redis }).redis

describe('kafkaClientConfig', () => {
  it('defaults to no TLS, no SASL, and the configured timeouts', () => {
    expect(kafkaClientConfig(kafkaOf({}))).toEqual({
      clientId: 'merchant-throttle',
      brokers: ['b1:9093'],
      ssl: false,
      connectionTimeout: 5_000,
      authenticationTimeout: 10_000,
    })
  })

  it('passes SASL with the password resolved from env:, and ssl: true as is', () => {
    const config = kafkaClientConfig(
      kafkaOf({
        ssl: true,
        sasl: { mechanism: 'scram-sha-512', username: 'svc', password: 'env:KAFKA_PW' },
        connectionTimeoutMs: 1_500,
      }),
      { KAFKA_PW: 'pw-from-env' },
    )
    expect(config).toMatchObject({
      ssl: true,
      sasl: { mechanism: 'scram-sha-512', username: 'svc', password: 'pw-from-env' },
      connectionTimeout: 1_500,
    })
  })

  it('reads ca from a file path, cert from file:, key from env:, keeps rejectUnauthorized and servername', () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'ca.pem'), PEM)
    writeFileSync(join(dir, 'client.pem'), PEM)
    const config = kafkaClientConfig(
      kafkaOf({
        ssl: {
          ca: join(dir, 'ca.pem'),
          cert: `file:${join(dir, 'client.pem')}`,
          key: 'env:CLIENT_KEY',
          servername: 'kafka.internal',
        },
      }),
      { CLIENT_KEY: KEY },
    )
    expect(config.ssl).toEqual({
      rejectUnauthorized: true,
      ca: PEM,
      cert: PEM.trimEnd(),
      key: KEY,
      servername: 'kafka.internal',
    })
  })

  it('takes PEM text written inline', () => {
    expect(kafkaClientConfig(kafkaOf({ ssl: { ca: PEM, rejectUnauthorized: false } })).ssl).toEqual({
      rejectUnauthorized: false,
      ca: PEM,
    })
  })

  it('names the field, never the secret, when a reference resolves to nothing', () => {
    const config = kafkaOf({ sasl: { mechanism: 'plain', username: 'svc', password: 'env:MISSING_PW' } })
    expect(() => kafkaClientConfig(config, {})).toThrow(
      new ConfigError("config field 'kafka.sasl.password': environment variable MISSING_PW is not set"),
    )
  })

  it('refuses a CA file that cannot be read, and one that holds no PEM, naming the field', () => {
    expect(() => kafkaClientConfig(kafkaOf({ ssl: { ca: '/nonexistent/ca.pem' } }))).toThrow(
      /^config field 'kafka\.ssl\.ca': cannot read \/nonexistent\/ca\.pem: ENOENT$/,
    )
    const dir = tempDir()
    writeFileSync(join(dir, 'not-pem.txt'), 'hello')
    expect(() => kafkaClientConfig(kafkaOf({ ssl: { ca: join(dir, 'not-pem.txt') } }))).toThrow(
      /^config field 'kafka\.ssl\.ca': expected PEM text/,
    )
  })
})

describe('config schema: kafka and redis', () => {
  it('refuses a client certificate without its key, an unknown mechanism and a non-Redis URL', () => {
    expect(configSchema.safeParse({ kafka: { ssl: { cert: PEM } } }).success).toBe(false)
    expect(
      configSchema.safeParse({ kafka: { sasl: { mechanism: 'gssapi', username: 'u', password: 'p' } } })
        .success,
    ).toBe(false)
    expect(configSchema.safeParse({ redis: { url: 'http://127.0.0.1:6379' } }).success).toBe(false)
    expect(configSchema.safeParse({ redis: { url: '127.0.0.1:6379' } }).success).toBe(false)
  })
})

describe('redisClientOptions', () => {
  it('turns a redis:// URL into host, port and db, without TLS', () => {
    expect(redisClientOptions(redisOf({ url: 'redis://10.1.2.3:6380/2' }))).toEqual({
      host: '10.1.2.3',
      port: 6380,
      db: 2,
      connectTimeout: 10_000,
    })
  })

  it('switches TLS on for rediss:// (system CAs) and for a tls section with redis://', () => {
    expect(redisClientOptions(redisOf({ url: 'rediss://cache.internal' })).tls).toEqual({})
    expect(redisClientOptions(redisOf({ url: 'redis://cache.internal', tls: { ca: PEM } })).tls).toEqual({
      rejectUnauthorized: true,
      ca: PEM,
    })
  })

  it('resolves the password reference and lets username/password win over credentials in the URL', () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'redis-pw'), 'pw-from-file\n')
    expect(
      redisClientOptions(
        redisOf({
          url: 'redis://urluser:urlpass@[::1]:6379',
          username: 'app',
          password: `file:${join(dir, 'redis-pw')}`,
        }),
      ),
    ).toMatchObject({ host: '::1', username: 'app', password: 'pw-from-file' })
    expect(redisClientOptions(redisOf({ url: 'redis://urluser:p%40ss@127.0.0.1' }))).toMatchObject({
      username: 'urluser',
      password: 'p@ss',
    })
  })

  it('refuses a database that is not a number', () => {
    expect(() => redisClientOptions(redisOf({ url: 'redis://127.0.0.1/x' }))).toThrow(
      /^config field 'redis\.url': expected a database number/,
    )
  })
})

describe('describeRedis', () => {
  it('says scheme, host, port and db, never the credentials', () => {
    const options = redisClientOptions(redisOf({ url: 'rediss://user:hunter2@[::1]:6380/3' }))
    expect(describeRedis(options)).toBe('rediss://[::1]:6380/3')
    expect(describeRedis(redisClientOptions(redisOf({ url: 'redis://127.0.0.1' })))).toBe(
      'redis://127.0.0.1:6379',
    )
  })
})

describe('createConnections', () => {
  it('has no Kafka client without brokers, and warns when PLAIN would send the password in clear', () => {
    const lines: string[] = []
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) })
    const config = configSchema.parse({})
    expect(createConnections(config, logger).kafka).toBeUndefined()
    expect(lines).toEqual([])

    const plain = configSchema.parse({
      kafka: { brokers: ['127.0.0.1:9092'], sasl: { mechanism: 'plain', username: 'u', password: 'env:PW' } },
      redis: { url: 'redis://127.0.0.1:6379' },
    })
    const connections = createConnections(plain, logger, { PW: 'plain-secret' })
    expect(connections.kafka).toBeDefined()
    expect(connections.redisAddress).toBe('redis://127.0.0.1:6379')
    expect(lines.join('')).toContain('PLAIN without kafka.ssl')
    expect(lines.join('')).not.toContain('plain-secret')
  })
})

describe("README's production configuration", () => {
  it('is a valid config with TLS + SCRAM Kafka and TLS + ACL-user Redis, every secret a reference', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
    const section = readme.slice(readme.indexOf('### A production configuration'))
    const json = section.slice(
      section.indexOf('```json\n') + 8,
      section.indexOf('\n```', section.indexOf('```json')),
    )
    const config = configSchema.parse(JSON.parse(json))
    expect(config.kafka).toMatchObject({
      ssl: { rejectUnauthorized: true },
      sasl: { mechanism: 'scram-sha-512' },
    })
    expect(config.redis).toMatchObject({ url: expect.stringMatching(/^rediss:\/\//), username: 'mt-worker' })
    for (const secret of [
      config.kafka.sasl?.password,
      config.redis.password,
      config.http.authToken,
      config.webhook.defaultSecret,
    ]) {
      expect(secret).toMatch(/^(env|file):/)
    }
  })
})
