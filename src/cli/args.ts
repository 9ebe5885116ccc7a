import { parseArgs } from 'node:util'
import type { KafkaConfig } from 'kafkajs'
import { createSignatureVerifier, type SigningKey } from '../control/signing.js'
import { DEFAULT_CONTROL_TOPIC } from '../control/topic.js'
import { ConfigError, loadConfig } from '../service/config.js'
import { kafkaClientConfig } from '../service/connections.js'

/** USAGE is what `throttlectl --help` prints. */
export const USAGE = `throttlectl: publish and inspect merchant-throttle rate changes on the Kafka control topic

Usage:
  throttlectl set <merchant|*> <rate> [--max-in-flight N] [--inheritance proportional|as-is|reset] [--version N]
  throttlectl clear <merchant> [--inheritance ...] [--version N]
  throttlectl snapshot <file> [--version N]     replace every rate with the file's (snapshot format)
  throttlectl get [merchant] [--json]           read the topic to its end and print the rates in force
  throttlectl watch [--history] [--json]        print changes as they arrive, until Ctrl-C
  throttlectl create-topic [--partitions N]     create the compacted control topic

Rates: '5000/min', '50/s burst 10', '100/10s' (units ms, s, min, h). '*' is the default rate.

Options:
  --config file.json               the worker's config file (with its NODE_ENV layer and environment):
                                   its Kafka brokers, TLS and SASL, and its control.topic
  --brokers host:port[,host:port]  Kafka bootstrap brokers (env KAFKA_BROKERS, else 127.0.0.1:9092)
  --topic name                     control topic (default ${DEFAULT_CONTROL_TOPIC})
  --version N                      publish with this version instead of choosing one
  --max-in-flight N                set: at most N of the merchant's jobs in flight per worker
                                   (without it, the merchant has no cap of its own)
  --timeout ms                     how long get, set, clear and snapshot may take (default 30000)
  -h, --help                       this text

Versions: unless --version is given, a change gets max(now in microseconds since the epoch,
highest version on the topic + 1), so it orders after everything already published even
when this machine's clock is behind.

Signing: MT_CONTROL_SIGNING_KEY (the secret, at least 16 bytes) signs what is published,
named by MT_CONTROL_SIGNING_KEY_ID (default "default"). get and watch check signatures
with it, and with MT_CONTROL_ACCEPTED_KEYS ("id=secret,id=secret") for keys being rotated out.

Exit codes: 0 done, 1 Kafka or runtime failure, 2 invalid command or input.`

/** CliCommand is one parsed throttlectl command. */
export type CliCommand =
  | { name: 'help' }
  | {
      name: 'set'
      merchant: string
      rate: string
      maxInFlight?: number
      inheritance?: string
      version?: number
    }
  | { name: 'clear'; merchant: string; inheritance?: string; version?: number }
  | { name: 'snapshot'; file: string; inheritance?: string; version?: number }
  | { name: 'get'; merchant?: string; json: boolean }
  | { name: 'watch'; history: boolean; json: boolean }
  | { name: 'create-topic'; partitions: number }

/** CliOptions are the options every command shares. */
export interface CliOptions {
  brokers: string[]
  topic: string
  timeoutMs: number
  /** connection: TLS, SASL and timeouts from the worker's config file (--config). */
  connection?: Pick<KafkaConfig, 'ssl' | 'sasl' | 'connectionTimeout' | 'authenticationTimeout'>
}

/** CliParse is the outcome of parseCli: a command, or a usage error for exit code 2. */
export type CliParse = { ok: true; command: CliCommand; options: CliOptions } | { ok: false; error: string }

/**
 * parseCli reads throttlectl's arguments (without `node` and the script). It checks the
 * command's shape only; the content of a change is checked by parseControlMessage, the
 * same check the workers make, before anything is sent.
 */
export function parseCli(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): CliParse {
  let parsed: ReturnType<typeof parseOptions>
  try {
    parsed = parseOptions(argv)
  } catch (error) {
    return { ok: false, error: (error as Error).message }
  }
  const { values, positionals } = parsed
  let fromConfig: { brokers: string[]; topic: string; connection: CliOptions['connection'] } | undefined
  if (values.config !== undefined) {
    try {
      const config = loadConfig({ file: values.config, env: { ...env } })
      const { ssl, sasl, connectionTimeout, authenticationTimeout } = kafkaClientConfig(config.kafka, {
        ...env,
      })
      fromConfig = {
        brokers: config.kafka.brokers,
        topic: config.control.topic,
        connection: {
          ssl,
          ...(sasl === undefined ? {} : { sasl }),
          connectionTimeout,
          authenticationTimeout,
        },
      }
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error
      return { ok: false, error: `--config: ${error.message}` }
    }
  }
  const configBrokers = fromConfig?.brokers.length ? fromConfig.brokers.join(',') : undefined
  const brokersText = values.brokers ?? configBrokers ?? env.KAFKA_BROKERS ?? '127.0.0.1:9092'
  const brokers = brokersText
    .split(',')
    .map((b) => b.trim())
    .filter((b) => b !== '')
  if (brokers.length === 0 || brokers.some((b) => !/^[^\s:]+:\d{1,5}$/.test(b))) {
    return {
      ok: false,
      error: `--brokers: expected host:port[,host:port], got ${JSON.stringify(brokersText)}`,
    }
  }
  const topic = values.topic ?? fromConfig?.topic ?? DEFAULT_CONTROL_TOPIC
  if (topic === '') return { ok: false, error: '--topic: expected a topic name, got an empty string' }
  const timeoutMs = wholeNumber(values.timeout, '--timeout', 30_000, 1)
  if (typeof timeoutMs === 'string') return { ok: false, error: timeoutMs }
  const options: CliOptions = {
    brokers,
    topic,
    timeoutMs,
    ...(fromConfig === undefined ? {} : { connection: fromConfig.connection }),
  }
  const [name, ...args] = positionals
  if (values.help || name === undefined || name === 'help')
    return { ok: true, command: { name: 'help' }, options }

  const version = values.version === undefined ? undefined : wholeNumber(values.version, '--version', 0, 0)
  if (typeof version === 'string') return { ok: false, error: version }
  const change = { inheritance: values.inheritance, version }
  const arity = (count: number, shape: string): string | undefined =>
    args.length === count ? undefined : `${name}: expected ${shape}, got ${args.length} argument(s)`
  let command: CliCommand
  let error: string | undefined
  switch (name) {
    case 'set': {
      error = arity(2, '<merchant|*> <rate>')
      const maxInFlight =
        values['max-in-flight'] === undefined
          ? undefined
          : wholeNumber(values['max-in-flight'], '--max-in-flight', 1, 1)
      if (typeof maxInFlight === 'string') return { ok: false, error: maxInFlight }
      command = {
        name,
        merchant: args[0] ?? '',
        rate: args[1] ?? '',
        ...(maxInFlight === undefined ? {} : { maxInFlight }),
        ...change,
      }
      break
    }
    case 'clear':
      error = arity(1, '<merchant>')
      command = { name, merchant: args[0] ?? '', ...change }
      break
    case 'snapshot':
      error = arity(1, '<file>')
      command = { name, file: args[0] ?? '', ...change }
      break
    case 'get':
      error =
        args.length <= 1 ? undefined : `get: expected at most one merchant, got ${args.length} arguments`
      command = { name, merchant: args[0], json: values.json ?? false }
      break
    case 'watch':
      error = arity(0, 'no arguments')
      command = { name, history: values.history ?? false, json: values.json ?? false }
      break
    case 'create-topic': {
      error = arity(0, 'no arguments')
      const partitions = wholeNumber(values.partitions, '--partitions', 1, 1)
      if (typeof partitions === 'string') return { ok: false, error: partitions }
      command = { name, partitions }
      break
    }
    default:
      return { ok: false, error: `unknown command ${JSON.stringify(name)} (try --help)` }
  }
  if (error !== undefined) return { ok: false, error }
  return { ok: true, command, options }
}

function parseOptions(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string' },
      brokers: { type: 'string' },
      topic: { type: 'string' },
      inheritance: { type: 'string' },
      version: { type: 'string' },
      'max-in-flight': { type: 'string' },
      timeout: { type: 'string' },
      partitions: { type: 'string' },
      json: { type: 'boolean' },
      history: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
}

/** wholeNumber reads an option as a safe integer >= min, or returns the error text. */
function wholeNumber(text: string | undefined, name: string, fallback: number, min: number): number | string {
  if (text === undefined) return fallback
  const value = Number(text)
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) {
    return `${name}: expected a whole number >= ${min}, got ${JSON.stringify(text)}`
  }
  return value
}

/** CliKeys are the signing key (to publish with) and every key accepted when reading. */
export interface CliKeys {
  signingKey: SigningKey | undefined
  acceptedKeys: SigningKey[]
}

/**
 * keysFromEnv reads MT_CONTROL_SIGNING_KEY / MT_CONTROL_SIGNING_KEY_ID and
 * MT_CONTROL_ACCEPTED_KEYS (`id=secret,id=secret`), or returns the error text.
 */
export function keysFromEnv(env: Readonly<Record<string, string | undefined>>): CliKeys | string {
  const secret = env.MT_CONTROL_SIGNING_KEY
  const signingKey =
    secret === undefined || secret === ''
      ? undefined
      : { id: env.MT_CONTROL_SIGNING_KEY_ID || 'default', secret }
  const acceptedKeys: SigningKey[] = signingKey === undefined ? [] : [signingKey]
  for (const entry of (env.MT_CONTROL_ACCEPTED_KEYS ?? '').split(',')) {
    if (entry.trim() === '') continue
    const at = entry.indexOf('=')
    if (at <= 0 || at === entry.length - 1) {
      return 'MT_CONTROL_ACCEPTED_KEYS: expected id=secret[,id=secret], got an entry without both'
    }
    acceptedKeys.push({ id: entry.slice(0, at).trim(), secret: entry.slice(at + 1) })
  }
  try {
    createSignatureVerifier(acceptedKeys)
  } catch (error) {
    return (error as Error).message
  }
  return { signingKey, acceptedKeys }
}

/**
 * nextControlVersion is the version throttlectl publishes with: the wall clock in
 * microseconds since the epoch (about 1.7e15 today, exact in a double until the year
 * 2255), or one above the highest version already on the topic when that is higher.
 * Microseconds keep two operators' changes in the same millisecond apart; reading the
 * topic keeps a change from an operator whose clock is behind from being ignored.
 */
export function nextControlVersion(highestOnTopic: number | undefined, wallNowMicros: number): number {
  const wall = Math.floor(wallNowMicros)
  return highestOnTopic === undefined || highestOnTopic < wall ? wall : highestOnTopic + 1
}
