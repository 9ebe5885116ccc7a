import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  COMMANDS,
  commandHelp,
  keysFromEnv,
  nextControlVersion,
  parseCli,
  USAGE,
} from '../../src/cli/args.js'

const options = { brokers: ['127.0.0.1:9092'], topic: 'merchant-throttle.control', timeoutMs: 30_000 }

describe('parseCli', () => {
  it.each([
    [['set', 'm_1', '5000/min'], { name: 'set', merchant: 'm_1', rate: '5000/min' }],
    [
      ['set', '*', '1000/min', '--inheritance', 'reset', '--rate-version', '42'],
      { name: 'set', merchant: '*', rate: '1000/min', inheritance: 'reset', version: 42 },
    ],
    [
      ['set', 'm_1', '5000/min', '--max-in-flight', '5'],
      { name: 'set', merchant: 'm_1', rate: '5000/min', maxInFlight: 5 },
    ],
    [
      ['set', 'psp:adyen:m_42', '20/s', '--weight', '2.5'],
      { name: 'set', merchant: 'psp:adyen:m_42', rate: '20/s', weight: 2.5 },
    ],
    [['clear', 'm_1'], { name: 'clear', merchant: 'm_1' }],
    [['snapshot', 'config/rates.json'], { name: 'snapshot', file: 'config/rates.json' }],
    [['get'], { name: 'get', merchant: undefined, json: false }],
    [['get', 'm_1', '--json'], { name: 'get', merchant: 'm_1', json: true }],
    [['watch', '--history'], { name: 'watch', history: true, json: false }],
    [['create-topic', '--partitions', '3'], { name: 'create-topic', partitions: 3 }],
  ])('%j', (argv, command) => {
    expect(parseCli(argv, {})).toEqual({ ok: true, command, options })
  })

  it('takes brokers from --brokers, else KAFKA_BROKERS, else 127.0.0.1:9092', () => {
    expect(parseCli(['get', '--brokers', 'a:1,b:2'], { KAFKA_BROKERS: 'c:3' })).toMatchObject({
      options: { brokers: ['a:1', 'b:2'] },
    })
    expect(parseCli(['get'], { KAFKA_BROKERS: 'c:3' })).toMatchObject({ options: { brokers: ['c:3'] } })
    expect(parseCli(['get', '--topic', 't', '--timeout', '500'], {})).toMatchObject({
      options: { topic: 't', timeoutMs: 500 },
    })
  })

  it.each([
    [['set', 'm_1'], 'set: expected <merchant|*> <rate>, got 1 argument(s)'],
    [['clear'], 'clear: expected <merchant>, got 0 argument(s)'],
    [['get', 'a', 'b'], 'get: expected at most one merchant, got 2 arguments'],
    [['frobnicate'], 'unknown command "frobnicate" (try --help)'],
    [
      ['set', 'm', '1/s', '--rate-version', '-3'],
      /^Option '--rate-version' argument is ambiguous|--rate-version: expected a whole number >= 0/,
    ],
    [['set', 'm', '1/s', '--rate-version', '1.5'], '--rate-version: expected a whole number >= 0, got "1.5"'],
    [['set', 'm', '1/s', '--max-in-flight', '0'], '--max-in-flight: expected a whole number >= 1, got "0"'],
    [['set', 'm', '1/s', '--weight', '0'], '--weight: expected a number > 0, got "0"'],
    [['set', 'm', '1/s', '--weight', 'heavy'], '--weight: expected a number > 0, got "heavy"'],
    [['set', 'm', '1/s', '--weight', '1e3'], '--weight: expected a number > 0, got "1e3"'],
    [['clear', 'm', '--weight', '2'], /^clear does not take --weight;/],
    [
      ['set', 'm', '1/s', '--rate-version', '99999999999999999'],
      '--rate-version: expected a whole number >= 0, got "99999999999999999"',
    ],
    [['get', '--brokers', 'localhost'], '--brokers: expected host:port[,host:port], got "localhost"'],
    [['get', '--timeout', '0'], '--timeout: expected a whole number >= 1, got "0"'],
    [['create-topic', '--partitions', 'x'], '--partitions: expected a whole number >= 1, got "x"'],
    [['get', '--frob'], /Unknown option '--frob'/],
  ])('refuses %j', (argv, error) => {
    const parsed = parseCli(argv, {})
    expect(parsed.ok).toBe(false)
    if (parsed.ok) return
    if (typeof error === 'string') expect(parsed.error).toBe(error)
    else expect(parsed.error).toMatch(error)
  })
})

// Issue 16: `<cmd> --help` printed the global text, there was no way to print the version
// (`--version` meant "publish with this version"), no command exited 0, and options a
// command does not use were accepted silently.
describe('parseCli: help, version, no command, options a command does not take', () => {
  it.each([
    [['--help'], { name: 'help' }],
    [['-h'], { name: 'help' }],
    [['help'], { name: 'help' }],
    [['set', '--help'], { name: 'help', command: 'set' }],
    [['watch', '-h'], { name: 'help', command: 'watch' }],
    [['help', 'get'], { name: 'help', command: 'get' }],
    [['version'], { name: 'version' }],
    [['-V'], { name: 'version' }],
    [['--version'], { name: 'version' }],
    [['get', '--version'], { name: 'version' }],
  ])('%j', (argv, command) => {
    expect(parseCli(argv, {})).toMatchObject({ ok: true, command })
  })

  it('refuses to run without a command: exit 2 with the usage', () => {
    expect(parseCli([], {})).toEqual({ ok: false, error: 'expected a command', usage: USAGE })
    expect(parseCli(['--json'], {})).toMatchObject({ ok: false, error: 'expected a command' })
  })

  it('still takes the old --version N after set, clear and snapshot, with a warning', () => {
    for (const argv of [
      ['set', 'm', '1/s', '--version', '42'],
      ['clear', 'm', '--version=42'],
      ['--topic', 't', 'snapshot', 'f.json', '--version', '42'],
    ]) {
      const parsed = parseCli(argv, {})
      expect(parsed).toMatchObject({
        ok: true,
        command: { version: 42 },
        warnings: [expect.stringContaining('--rate-version')],
      })
    }
  })

  it.each([
    [
      ['get', '--history'],
      'get does not take --history; it takes --json, --config, --brokers, --topic, --timeout (throttlectl get --help)',
    ],
    [['clear', 'm', '--json'], /^clear does not take --json; it takes --inheritance, --rate-version, /],
    [['watch', '--timeout', '5'], /^watch does not take --timeout;/],
    [
      ['create-topic', '--max-in-flight', '3'],
      /^create-topic does not take --max-in-flight; it takes --partitions,/,
    ],
    [['set', 'm', '1/s', '--partitions', '3'], /^set does not take --partitions;/],
    [['get', '--rate-version', '3'], /^get does not take --rate-version;/],
    [['version', 'extra'], 'version: expected no arguments'],
    [['help', 'nope'], 'help: unknown command "nope"'],
  ])('refuses %j, naming the option and the command', (argv, error) => {
    const parsed = parseCli(argv, {})
    expect(parsed.ok).toBe(false)
    if (parsed.ok) return
    if (typeof error === 'string') expect(parsed.error).toBe(error)
    else expect(parsed.error).toMatch(error)
  })

  it('gives each command help of its own: its usage and only the options it takes', () => {
    expect(commandHelp('set')).toMatch(/^usage: throttlectl set <merchant\|\*> <rate> \[options\]\n/)
    expect(commandHelp('set')).toContain('--max-in-flight N')
    expect(commandHelp('get')).not.toContain('--max-in-flight')
    expect(commandHelp('watch')).toContain('--history')
    expect(commandHelp('watch')).not.toContain('--timeout')
    const helps = (Object.keys(COMMANDS) as Array<keyof typeof COMMANDS>).map(commandHelp)
    expect(new Set(helps).size).toBe(helps.length)
  })
})

describe('keysFromEnv', () => {
  it('reads the signing key and the keys accepted while rotating', () => {
    expect(
      keysFromEnv({
        MT_CONTROL_SIGNING_KEY: 'new-secret-0123456789',
        MT_CONTROL_SIGNING_KEY_ID: 'k2',
        MT_CONTROL_ACCEPTED_KEYS: 'k1=old-secret-0123456789=with=equals',
      }),
    ).toEqual({
      signingKey: { id: 'k2', secret: 'new-secret-0123456789' },
      acceptedKeys: [
        { id: 'k2', secret: 'new-secret-0123456789' },
        { id: 'k1', secret: 'old-secret-0123456789=with=equals' },
      ],
    })
  })

  it('names an unnamed key "default", and signs nothing without a key', () => {
    expect(keysFromEnv({ MT_CONTROL_SIGNING_KEY: 'new-secret-0123456789' })).toMatchObject({
      signingKey: { id: 'default' },
    })
    expect(keysFromEnv({})).toEqual({ signingKey: undefined, acceptedKeys: [] })
  })

  it.each([
    [{ MT_CONTROL_SIGNING_KEY: 'short' }, /at least 16 bytes/],
    [{ MT_CONTROL_ACCEPTED_KEYS: 'nosecret' }, /expected id=secret/],
    [
      {
        MT_CONTROL_SIGNING_KEY: 'new-secret-0123456789',
        MT_CONTROL_ACCEPTED_KEYS: 'default=other-secret-0123456',
      },
      /unique ids/,
    ],
  ])('refuses %j', (env, error) => {
    expect(keysFromEnv(env)).toMatch(error)
  })
})

describe('nextControlVersion', () => {
  it.each([
    // an empty topic: the wall clock in microseconds
    [undefined, 1_700_000_000_000_123.5, 1_700_000_000_000_123],
    // the topic is behind the clock
    [5, 1_700_000_000_000_000, 1_700_000_000_000_000],
    // this machine's clock is behind the topic (or a version was set by hand): one above it
    [1_800_000_000_000_000, 1_700_000_000_000_000, 1_800_000_000_000_001],
    // equal: still strictly above
    [1_700_000_000_000_000, 1_700_000_000_000_000, 1_700_000_000_000_001],
  ])('highest %s, clock %s µs -> %s', (highest, wallMicros, expected) => {
    expect(nextControlVersion(highest, wallMicros)).toBe(expected)
  })
})

describe('parseCli --config', () => {
  function configFile(config: unknown): string {
    const file = join(mkdtempSync(join(tmpdir(), 'mt-cli-')), 'worker.json')
    writeFileSync(file, JSON.stringify(config))
    return file
  }

  it("takes the worker's brokers, SASL (secret resolved), TLS and control topic", () => {
    const file = configFile({
      kafka: {
        brokers: ['127.0.0.1:9094'],
        ssl: true,
        sasl: { mechanism: 'scram-sha-512', username: 'ops', password: 'env:TEST_SASL_PASSWORD' },
      },
      control: { topic: 'rates.control' },
    })
    const parsed = parseCli(['get', '--config', file], { TEST_SASL_PASSWORD: 'hunter2-hunter2' })
    expect(parsed).toMatchObject({
      ok: true,
      options: {
        brokers: ['127.0.0.1:9094'],
        topic: 'rates.control',
        connection: {
          ssl: true,
          sasl: { mechanism: 'scram-sha-512', username: 'ops', password: 'hunter2-hunter2' },
        },
      },
    })
  })

  it('lets --brokers and --topic win over the config file', () => {
    const file = configFile({ kafka: { brokers: ['127.0.0.1:9094'] }, control: { topic: 'rates.control' } })
    expect(parseCli(['get', '--config', file, '--brokers', '127.0.0.1:1', '--topic', 't'], {})).toMatchObject(
      {
        options: { brokers: ['127.0.0.1:1'], topic: 't' },
      },
    )
  })

  it('refuses a config file with a bad field, or a secret that resolves to nothing, naming it', () => {
    expect(parseCli(['get', '--config', configFile({ kafka: { brokerz: [] } })], {})).toEqual({
      ok: false,
      error: expect.stringContaining("--config: config field 'kafka.brokerz': unknown field"),
    })
    const missing = configFile({
      kafka: {
        brokers: ['127.0.0.1:9094'],
        sasl: { mechanism: 'plain', username: 'u', password: 'env:NOPE' },
      },
    })
    expect(parseCli(['get', '--config', missing], {})).toEqual({
      ok: false,
      error: expect.stringContaining('environment variable NOPE is not set'),
    })
  })
})
