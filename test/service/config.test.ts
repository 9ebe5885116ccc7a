import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { describe, expect, it } from 'vitest'
import { ConfigError, configSchema, DEFAULT_CONFIG_DIR, loadConfig } from '../../src/service/config.js'
import { configReference } from '../../src/service/config-docs.js'
import { configSchemaJson } from '../../src/service/config-schema.js'

function configDir(files: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'mt-config-'))
  for (const [name, value] of Object.entries(files)) {
    writeFileSync(join(dir, name), typeof value === 'string' ? value : JSON.stringify(value))
  }
  return dir
}

function catchConfigError(load: () => unknown): ConfigError {
  try {
    load()
  } catch (error) {
    if (error instanceof ConfigError) return error
    throw error
  }
  throw new Error('expected a ConfigError, got a config')
}

describe('loadConfig', () => {
  it('gives the documented local defaults from config/default.json', () => {
    const config = loadConfig({ env: {} })
    expect(config.http).toEqual({ host: '127.0.0.1', port: 8080 })
    expect(config.redis.url).toBe('redis://127.0.0.1:6379')
    expect(config.kafka.brokers).toEqual([])
    expect(config.control).toMatchObject({ source: 'auto', file: join(DEFAULT_CONFIG_DIR, 'rates.json') })
    expect(config.sources).toEqual([
      expect.objectContaining({
        kind: 'bullmq',
        queue: 'webhooks',
        handler: 'webhook',
        keyField: 'merchantId',
      }),
    ])
  })

  it("fills an empty config from the schema's field defaults, each stated once", () => {
    const config = loadConfig({ configDir: configDir({ 'default.json': {} }), env: {} })
    const client = { connectTimeoutMs: 5_000, timeoutMs: 10_000, maxResponseBytes: 65_536, allowHosts: [] }
    expect(config.webhook).toEqual({ client, secrets: {} })
    expect(config.psp).toEqual({ client, endpoints: {} })
    expect(config.http).toEqual({ host: '127.0.0.1', port: 8080 })
    expect(config.kafka).toEqual({
      brokers: [],
      clientId: 'merchant-throttle',
      ssl: false,
      connectionTimeoutMs: 5_000,
      authenticationTimeoutMs: 10_000,
    })
    expect(config.breaker).toEqual({
      failureThreshold: 5,
      windowMs: 30_000,
      coolDownMs: 5_000,
      maxCoolDownMs: 300_000,
    })
    expect(config.shutdown).toEqual({ deadlineMs: 15_000 })
  })

  it('overlays NODE_ENV, then --config, then the environment', () => {
    const dir = configDir({
      'default.json': { http: { port: 1000 }, limiter: { defaultRate: '10/s' } },
      'staging.json': { http: { port: 2000 }, log: { level: 'debug' } },
      'extra.json': { http: { port: 3000 } },
    })
    const config = loadConfig({
      configDir: dir,
      file: join(dir, 'extra.json'),
      env: { NODE_ENV: 'staging', MT_HTTP_PORT: '4000', KAFKA_BROKERS: '127.0.0.1:9092, 127.0.0.1:9093' },
    })
    expect(config.http.port).toBe(4000)
    expect(config.log.level).toBe('debug')
    expect(config.limiter.defaultRate).toBe('10/s')
    expect(config.kafka.brokers).toEqual(['127.0.0.1:9092', '127.0.0.1:9093'])
  })

  it.each([
    [{ http: { prot: 80 } }, "config field 'http.prot': unknown field"],
    [{ surprise: true }, "config field 'surprise': unknown field"],
    [{ http: { port: 'eighty' } }, "config field 'http.port'"],
    [{ http: { port: 70_000 } }, "config field 'http.port'"],
    [
      { limiter: { defaultRate: 'lots' } },
      "config field 'limiter.defaultRate': expected a rate like '1000/min'",
    ],
    // parseRate's reason, not a generic one: the bound, and with several windows which one
    [
      { limiter: { defaultRate: '0/s' } },
      'config field \'limiter.defaultRate\': expected a finite limit above 0, got "0/s"',
    ],
    [
      { limiter: { defaultRate: '20/s, 0/day' } },
      'config field \'limiter.defaultRate\': window 2 of 2: expected a finite limit above 0, got " 0/day"',
    ],
    [{ sources: [{ kind: 'sqs', queue: 'q' }] }, "config field 'sources.0.kind'"],
    [
      { sources: [{ kind: 'bullmq', queue: 'q', handler: 'webhook', concurency: 5 }] },
      "config field 'sources.0.concurency': unknown field",
    ],
    [{ log: { level: 'loud' } }, "config field 'log.level'"],
  ])('refuses %j with a message naming the field', (extra, message) => {
    const dir = configDir({ 'default.json': {}, 'bad.json': extra })
    expect(() => loadConfig({ configDir: dir, file: join(dir, 'bad.json'), env: {} })).toThrow(ConfigError)
    expect(() => loadConfig({ configDir: dir, file: join(dir, 'bad.json'), env: {} })).toThrow(message)
  })

  it('reports every problem at once, each with its field and layer', () => {
    const dir = configDir({
      'default.json': {},
      'bad.json': { http: { port: 'eighty', prot: 1 }, log: { level: 'loud' }, surprise: true },
    })
    const error = catchConfigError(() =>
      loadConfig({ configDir: dir, file: join(dir, 'bad.json'), env: { MT_MAX_KEYS: 'many' } }),
    )
    expect(error.problems).toEqual([
      'environment variable MT_MAX_KEYS: expected a number, got "many"',
      expect.stringMatching(/^config field 'http\.port': .*\(from .*bad\.json\)$/),
      expect.stringMatching(/^config field 'http\.prot': unknown field/),
      expect.stringMatching(/^config field 'log\.level': /),
      expect.stringMatching(/^config field 'surprise': unknown field/),
    ])
    expect(error.message).toMatch(/^5 problems in the configuration:\n- environment variable MT_MAX_KEYS/)
  })

  it('checks module handlers with the rest: the path is given, exists, and only with handler module', () => {
    const dir = configDir({ 'default.json': {}, 'handler.mjs': 'export default async () => {}' })
    const sources = [
      { kind: 'bullmq', queue: 'no-path', handler: 'module' },
      { kind: 'kafka', topic: 't', groupId: 'g', handler: 'module', module: join(dir, 'missing.mjs') },
      { kind: 'bullmq', queue: 'stray', handler: 'webhook', module: join(dir, 'handler.mjs') },
      { kind: 'bullmq', queue: 'fine', handler: 'module', module: join(dir, 'handler.mjs') },
    ]
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ sources }))
    const error = catchConfigError(() => loadConfig({ configDir: dir, file: join(dir, 'bad.json'), env: {} }))
    expect(error.problems).toEqual([
      expect.stringMatching(/^config field 'sources\.0\.module': handler 'module' needs 'module'/),
      expect.stringMatching(
        /^config field 'sources\.1\.module': handler module .*missing\.mjs does not exist/,
      ),
      expect.stringMatching(/^config field 'sources\.2\.module': only read with handler 'module'/),
    ])
  })

  it('takes key templates on both kinds of source, and names the source and template of a bad one', () => {
    const dir = configDir({ 'default.json': {} })
    const keys = ['psp:{psp}', 'psp:{psp}:{merchant}']
    const good = [
      { kind: 'bullmq', queue: 'payments', handler: 'webhook', keys },
      { kind: 'kafka', topic: 'calls', groupId: 'g', handler: 'webhook', keys },
    ]
    writeFileSync(join(dir, 'good.json'), JSON.stringify({ sources: good }))
    const config = loadConfig({ configDir: dir, file: join(dir, 'good.json'), env: {} })
    expect(config.sources.map((source) => source.keys)).toEqual([keys, keys])
    const bad = [
      { kind: 'bullmq', queue: 'payments', handler: 'webhook', keys: ['psp:{psp', 'psp:{psp}:{merchant}'] },
      { kind: 'kafka', topic: 'calls', groupId: 'g', handler: 'webhook', keys: ['psp {psp}'] },
      { kind: 'bullmq', queue: 'twice', handler: 'webhook', keys: ['{merchant}', '{merchant}'] },
      { kind: 'bullmq', queue: 'none', handler: 'webhook', keys: [] },
    ]
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ sources: bad }))
    const error = catchConfigError(() => loadConfig({ configDir: dir, file: join(dir, 'bad.json'), env: {} }))
    const from = ` (from ${join(dir, 'bad.json')})`
    expect(error.problems).toEqual([
      `config field 'sources.0.keys': source 'bullmq:payments': template 'psp:{psp': '{' without '}'${from}`,
      `config field 'sources.1.keys': source 'kafka:calls': template 'psp {psp}': text 'psp ' has characters outside [A-Za-z0-9-_.:@/+=]${from}`,
      `config field 'sources.2.keys': source 'bullmq:twice': template '{merchant}' is listed twice${from}`,
      `config field 'sources.3.keys': source 'bullmq:none': expected 1 to 4 templates, got 0${from}`,
    ])
  })

  it('resolves a relative module handler path against the directory of the config file naming it, not the working directory', () => {
    const dir = configDir({
      'default.json': {
        sources: [{ kind: 'bullmq', queue: 'q', handler: 'module', module: 'default-handler.mjs' }],
      },
      'default-handler.mjs': 'export default async () => {}',
    })
    const other = configDir({
      'extra.json': {
        sources: [{ kind: 'kafka', topic: 't', groupId: 'g', handler: 'module', module: './handlers/h.mjs' }],
      },
    })
    mkdirSync(join(other, 'handlers'))
    writeFileSync(join(other, 'handlers', 'h.mjs'), 'export default async () => {}')
    // Neither file is in the working directory, so only anchoring to the config file finds them.
    expect(existsSync(resolve('default-handler.mjs')) || existsSync(resolve('handlers/h.mjs'))).toBe(false)

    expect(loadConfig({ configDir: dir, env: {} }).sources[0]?.module).toBe(join(dir, 'default-handler.mjs'))
    const config = loadConfig({ configDir: dir, file: join(other, 'extra.json'), env: {} })
    expect(config.sources.map((source) => source.module)).toEqual([join(other, 'handlers', 'h.mjs')])
  })

  it('names the anchored path of a relative module handler that does not exist', () => {
    const dir = configDir({
      'default.json': { sources: [{ kind: 'bullmq', queue: 'q', handler: 'module', module: 'gone.mjs' }] },
    })
    expect(catchConfigError(() => loadConfig({ configDir: dir, env: {} })).problems).toEqual([
      `config field 'sources.0.module': handler module ${join(dir, 'gone.mjs')} does not exist (from ${join(dir, 'default.json')})`,
    ])
  })

  it('says which layer a bad field came from', () => {
    const dir = configDir({ 'default.json': {} })
    expect(() => loadConfig({ configDir: dir, env: { MT_HTTP_PORT: '99999' } })).toThrow('(from environment)')
    expect(() => loadConfig({ configDir: dir, env: { MT_HTTP_PORT: 'abc' } })).toThrow(
      'environment variable MT_HTTP_PORT: expected a number, got "abc"',
    )
  })

  it('refuses a file that is not JSON or not an object', () => {
    const dir = configDir({ 'default.json': {}, 'broken.json': '{ http: ', 'list.json': '[]' })
    expect(() => loadConfig({ configDir: dir, file: join(dir, 'broken.json'), env: {} })).toThrow(
      /is not valid JSON/,
    )
    expect(() => loadConfig({ configDir: dir, file: join(dir, 'list.json'), env: {} })).toThrow(
      /expected a JSON object/,
    )
    expect(() => loadConfig({ configDir: dir, file: join(dir, 'missing.json'), env: {} })).toThrow(
      /cannot read config file/,
    )
  })

  it('gives a BullMQ source the backlog timings and a Kafka source its parking topic, each default stated once', () => {
    const config = loadConfig({
      configDir: configDir({
        'default.json': {
          sources: [
            { kind: 'bullmq', queue: 'q', handler: 'webhook' },
            { kind: 'kafka', topic: 't', groupId: 'g', handler: 'webhook' },
          ],
        },
      }),
      env: {},
    })
    expect(config.sources[0]).toMatchObject({ horizonMs: 1_000, lateToleranceMs: 250, safetyNetMs: 900_000 })
    expect(config.sources[0]).not.toHaveProperty('reservationKey')
    expect(config.sources[1]).toMatchObject({
      parking: { enabled: true, partitionsPerSource: 16 },
      maxBufferedBytes: 64 * 1024 * 1024,
    })
    expect(config.sources[1]).not.toHaveProperty('maxBufferedPerMerchant')
    expect(config.sources[1]).not.toHaveProperty('parking.topic')
  })

  it('refuses backlog and parking fields out of their bounds, naming each', () => {
    const error = catchConfigError(() =>
      loadConfig({
        configDir: configDir({
          'default.json': {
            sources: [
              { kind: 'bullmq', queue: 'q', handler: 'webhook', horizonMs: 0, reservationKey: '' },
              {
                kind: 'kafka',
                topic: 't',
                groupId: 'g',
                handler: 'webhook',
                parking: { partitionsPerSource: 0, partitions: 16 },
                maxBufferedBytes: 100,
              },
            ],
          },
        }),
        env: {},
      }),
    )
    const text = error.problems.join('\n')
    for (const field of [
      'sources.0.horizonMs',
      'sources.0.reservationKey',
      'sources.1.parking.partitionsPerSource',
      'sources.1.parking.partitions',
      'sources.1.maxBufferedBytes',
    ]) {
      expect(text).toContain(`config field '${field}'`)
    }
  })

  it('refuses to start in production with the development webhook secret', () => {
    expect(() => loadConfig({ env: { NODE_ENV: 'production' } })).toThrow(
      "config field 'webhook.defaultSecret': the development secret",
    )
    const config = loadConfig({
      env: {
        NODE_ENV: 'production',
        MT_WEBHOOK_DEFAULT_SECRET: 'whsec_cHJvZHVjdGlvbi1zZWNyZXQtMzItYnl0ZXMtbG9uZyE=',
      },
    })
    expect(config.webhook.client.httpsOnly).toBe(true)
    expect(config.webhook.client.allowHosts).toEqual([])
  })
})

describe('config/default.json', () => {
  it("states no field the schema's default already gives (each default stated once)", () => {
    const stated = JSON.parse(readFileSync(join(DEFAULT_CONFIG_DIR, 'default.json'), 'utf8')) as unknown
    const repeats = leafPaths(stated).filter((path) => {
      const parsed = configSchema.safeParse(withoutPath(stated, path))
      return parsed.success && isDeepStrictEqual(valueAt(parsed.data, path), valueAt(stated, path))
    })
    expect(repeats.map((path) => path.join('.'))).toEqual([])
  })

  it('with config/production.json on top, loads for production once a real secret is given', () => {
    const config = loadConfig({
      env: { NODE_ENV: 'production', MT_WEBHOOK_DEFAULT_SECRET: 'env:MT_TEST_UNUSED' },
    })
    expect(config.log.pretty).toBe('never')
    expect(config.psp.client).toMatchObject({ allowHosts: [], httpsOnly: true, timeoutMs: 10_000 })
    expect(config.sources).toEqual([
      {
        kind: 'bullmq',
        queue: 'webhooks',
        handler: 'webhook',
        concurrency: 50,
        keyField: 'merchantId',
        instances: 1,
        attempts: 8,
        horizonMs: 1_000,
        lateToleranceMs: 250,
        safetyNetMs: 900_000,
      },
    ])
  })
})

type Path = Array<string | number>

function leafPaths(value: unknown, path: Path = []): Path[] {
  // A list of values (allowHosts, brokers) is one field; a list of objects (sources) is looked into.
  const isObject = (item: unknown): item is Record<string, unknown> =>
    item !== null && typeof item === 'object' && !Array.isArray(item)
  if (Array.isArray(value)) {
    return value.some(isObject) ? value.flatMap((item, i) => leafPaths(item, [...path, i])) : [path]
  }
  if (isObject(value) && Object.keys(value).length > 0) {
    return Object.entries(value).flatMap(([key, item]) => leafPaths(item, [...path, key]))
  }
  return [path]
}

function valueAt(value: unknown, path: Path): unknown {
  return path.reduce<unknown>(
    (node, key) => (node as Record<string | number, unknown> | undefined)?.[key],
    value,
  )
}

function withoutPath(value: unknown, path: Path): unknown {
  const copy = structuredClone(value)
  const parent = valueAt(copy, path.slice(0, -1)) as Record<string | number, unknown>
  delete parent[path[path.length - 1] as string | number]
  return copy
}

describe('config/schema.json', () => {
  it('is generated from the schema the worker validates with (npm run config:schema)', () => {
    const committed = JSON.parse(readFileSync(join(DEFAULT_CONFIG_DIR, 'schema.json'), 'utf8'))
    expect(committed).toEqual(JSON.parse(JSON.stringify(configSchemaJson())))
  })
})

describe('README configuration reference', () => {
  it('lists every field as the schema has it (npm run config:schema)', () => {
    const readme = readFileSync(join(DEFAULT_CONFIG_DIR, '..', 'README.md'), 'utf8')
    expect(readme).toContain(`<!-- config-reference -->\n${configReference()}\n<!-- /config-reference -->`)
  })
})
