import { parseArgs } from 'node:util'
import type { KafkaConfig } from 'kafkajs'
import { createSignatureVerifier, type SigningKey } from '../control/signing.js'
import { DEFAULT_CONTROL_TOPIC } from '../control/topic.js'
import { ConfigError, loadConfig } from '../service/config.js'
import { kafkaClientConfig } from '../service/connections.js'

/** CommandName is one of throttlectl's commands. */
export type CommandName = 'set' | 'clear' | 'snapshot' | 'get' | 'watch' | 'create-topic' | 'version' | 'help'

interface CommandSpec {
  usage: string
  summary: string
  /** options are the command's own, as [flag, meaning]; CONNECTION options come on top. */
  options: ReadonlyArray<readonly [string, string]>
  /** connects: takes the Kafka connection options (--config, --brokers, --topic). */
  connects: boolean
  /** timed: takes --timeout. */
  timed: boolean
}

const INHERITANCE = [
  '--inheritance proportional|as-is|reset',
  "how the merchant's tokens carry over to the new rate (default proportional)",
] as const
const RATE_VERSION = [
  '--rate-version N',
  'publish with this version instead of choosing one (was --version N, still taken with a warning)',
] as const

/** COMMANDS describe each command: its help text and the options it takes. */
export const COMMANDS: Readonly<Record<CommandName, CommandSpec>> = {
  set: {
    usage: 'throttlectl set <merchant|*> <rate> [options]',
    summary: "set one merchant's rate, or the default rate with '*'",
    options: [
      [
        '--max-in-flight N',
        "at most N of the merchant's jobs in flight per worker (without it: no cap of its own)",
      ],
      [
        '--weight W',
        "the key's share of its parent beside its backlogged siblings, 0.001 to 1000 (without it: 1); not for '*'",
      ],
      INHERITANCE,
      RATE_VERSION,
    ],
    connects: true,
    timed: true,
  },
  clear: {
    usage: 'throttlectl clear <merchant> [options]',
    summary: "remove a merchant's own rate: it follows the default again",
    options: [INHERITANCE, RATE_VERSION],
    connects: true,
    timed: true,
  },
  snapshot: {
    usage: 'throttlectl snapshot <file> [options]',
    summary: "replace every rate with the file's (snapshot format, as config/rates.json)",
    options: [INHERITANCE, RATE_VERSION],
    connects: true,
    timed: true,
  },
  get: {
    usage: 'throttlectl get [merchant] [options]',
    summary: 'read the topic to its end and print the rates in force (one merchant, or all)',
    options: [['--json', 'print JSON']],
    connects: true,
    timed: true,
  },
  watch: {
    usage: 'throttlectl watch [options]',
    summary: 'print changes as they arrive, until Ctrl-C',
    options: [
      ['--history', 'print what is already on the topic too'],
      ['--json', 'print JSON, one event a line'],
    ],
    connects: true,
    timed: false,
  },
  'create-topic': {
    usage: 'throttlectl create-topic [options]',
    summary: 'create the compacted control topic (nothing happens when it exists)',
    options: [['--partitions N', 'partitions of the topic (default 1)']],
    connects: true,
    timed: false,
  },
  version: {
    usage: 'throttlectl version',
    summary: "print throttlectl's version (also -V, --version)",
    options: [],
    connects: false,
    timed: false,
  },
  help: {
    usage: 'throttlectl help [command]',
    summary: "this text, or one command's (also <command> --help)",
    options: [],
    connects: false,
    timed: false,
  },
}

const CONNECTION_OPTIONS = [
  [
    '--config file.json',
    "the worker's config file (with its NODE_ENV layer and environment): its Kafka brokers, TLS and SASL, and its control.topic",
  ],
  ['--brokers host:port[,host:port]', 'Kafka bootstrap brokers (env KAFKA_BROKERS, else 127.0.0.1:9092)'],
  ['--topic name', `control topic (default ${DEFAULT_CONTROL_TOPIC})`],
] as const
const TIMEOUT_OPTION = ['--timeout ms', 'how long the command may take (default 30000)'] as const

/** columns lays out [left, text] rows: the texts aligned after the longest left, wrapped at 100 columns. */
function columns(rows: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(...rows.map(([left]) => left.length)) + 4
  return rows
    .map(([left, text]) => {
      const lines: string[] = []
      let line = ''
      for (const word of text.split(' ')) {
        if (line !== '' && width + line.length + 1 + word.length > 100) {
          lines.push(line)
          line = word
        } else line = line === '' ? word : `${line} ${word}`
      }
      lines.push(line)
      return `  ${left.padEnd(width - 2)}${lines.join(`\n${' '.repeat(width)}`)}`
    })
    .join('\n')
}

/** USAGE is what `throttlectl --help` prints. */
export const USAGE = `throttlectl: publish and inspect merchant-throttle rate changes on the Kafka control topic

Usage:
${columns((Object.keys(COMMANDS) as CommandName[]).map((name) => [COMMANDS[name].usage, COMMANDS[name].summary]))}

Rates: '5000/min', '50/s burst 10', '100/10s' (units ms, s, min, h, day), several windows '20/s burst 40, 50000/day'. '*' is the default rate.

Options of the commands that talk to Kafka:
${columns([
  ...CONNECTION_OPTIONS,
  TIMEOUT_OPTION,
  ['-h, --help', 'help; throttlectl <command> --help for one command'],
  ['-V, --version', 'print the version'],
])}

Versions: unless --rate-version is given, a change gets max(now in microseconds since the epoch,
highest version on the topic + 1), so it orders after everything already published even
when this machine's clock is behind.

Signing: MT_CONTROL_SIGNING_KEY (the secret, at least 16 bytes) signs what is published,
named by MT_CONTROL_SIGNING_KEY_ID (default "default"). get and watch check signatures
with it, and with MT_CONTROL_ACCEPTED_KEYS ("id=secret,id=secret") for keys being rotated out.

Exit codes: 0 done, 1 Kafka or runtime failure, 2 invalid command or input (also: no command).`

/** commandHelp is what `throttlectl <name> --help` prints: that command and the options it takes. */
export function commandHelp(name: CommandName): string {
  const spec = COMMANDS[name]
  const options = [
    ...spec.options,
    ...(spec.connects ? CONNECTION_OPTIONS : []),
    ...(spec.timed ? [TIMEOUT_OPTION] : []),
  ]
  const lines = [`usage: ${spec.usage}`, '', `${spec.summary[0]!.toUpperCase()}${spec.summary.slice(1)}.`]
  if (options.length > 0) lines.push('', 'Options:', columns(options))
  if (name === 'set' || name === 'clear' || name === 'snapshot') {
    lines.push('', "Signing: MT_CONTROL_SIGNING_KEY and MT_CONTROL_SIGNING_KEY_ID (see 'throttlectl help').")
  }
  return lines.join('\n')
}

/** CliCommand is one parsed throttlectl command. */
export type CliCommand =
  | { name: 'help'; command?: CommandName }
  | { name: 'version' }
  | {
      name: 'set'
      merchant: string
      rate: string
      maxInFlight?: number
      weight?: number
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

/**
 * CliParse is the outcome of parseCli: a command (with warnings to print, when any), or a
 * usage error for exit code 2, with the usage to print after it when no command was given.
 */
export type CliParse =
  | { ok: true; command: CliCommand; options: CliOptions; warnings?: string[] }
  | { ok: false; error: string; usage?: string }

const VALUE_OPTIONS = new Set([
  'config',
  'brokers',
  'topic',
  'inheritance',
  'rate-version',
  'max-in-flight',
  'weight',
  'timeout',
  'partitions',
])
const PUBLISH_COMMANDS: ReadonlySet<string> = new Set(['set', 'clear', 'snapshot'])

/** firstPositional is the command name: the first argument that is neither an option nor its value. */
function firstPositional(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') return argv[i + 1]
    if (!arg.startsWith('-')) return arg
    if (arg.startsWith('--') && !arg.includes('=') && VALUE_OPTIONS.has(arg.slice(2))) i++
  }
  return undefined
}

/**
 * legacyVersion rewrites the publish option's old spelling, `--version N` after set, clear or
 * snapshot, to `--rate-version N`, with a warning; anywhere else `--version` prints the version.
 */
function legacyVersion(argv: readonly string[]): { argv: string[]; warnings: string[] } {
  const name = firstPositional(argv)
  if (name === undefined || !PUBLISH_COMMANDS.has(name)) return { argv: [...argv], warnings: [] }
  const out: string[] = []
  let rewritten = false
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const next = argv[i + 1]
    if (arg.startsWith('--version=')) {
      out.push(`--rate-version=${arg.slice('--version='.length)}`)
      rewritten = true
    } else if (arg === '--version' && next !== undefined && !next.startsWith('--')) {
      out.push('--rate-version', next)
      rewritten = true
      i++
    } else out.push(arg)
  }
  const warnings = rewritten
    ? ['--version N is now --rate-version N; --version alone prints the version']
    : []
  return { argv: out, warnings }
}

/** refusedOption names the first option given that `name` does not take, as an error, if any. */
function refusedOption(name: CommandName, given: readonly string[]): string | undefined {
  const spec = COMMANDS[name]
  const allowed = new Set(['help', ...spec.options.map(([flag]) => flag.split(' ')[0]!.slice(2))])
  if (spec.connects) for (const option of ['config', 'brokers', 'topic']) allowed.add(option)
  if (spec.timed) allowed.add('timeout')
  const refused = given.find((option) => !allowed.has(option))
  if (refused === undefined) return undefined
  const takes = [...allowed].filter((option) => option !== 'help').map((option) => `--${option}`)
  return `${name} does not take --${refused}; it takes ${takes.length === 0 ? 'no options' : takes.join(', ')} (throttlectl ${name} --help)`
}

/**
 * parseCli reads throttlectl's arguments (without `node` and the script). It checks the
 * command's shape only; the content of a change is checked by parseControlMessage, the
 * same check the workers make, before anything is sent.
 */
export function parseCli(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): CliParse {
  const legacy = legacyVersion(argv)
  let parsed: ReturnType<typeof parseOptions>
  try {
    parsed = parseOptions(legacy.argv)
  } catch (error) {
    return { ok: false, error: (error as Error).message }
  }
  const { values, positionals } = parsed
  const [first, ...args] = positionals
  const warnings = legacy.warnings.length === 0 ? {} : { warnings: legacy.warnings }
  const bare: CliOptions = { brokers: [], topic: DEFAULT_CONTROL_TOPIC, timeoutMs: 30_000 }
  if (first === undefined) {
    if (values.help) return { ok: true, command: { name: 'help' }, options: bare }
    if (values.version) return { ok: true, command: { name: 'version' }, options: bare }
    return { ok: false, error: 'expected a command', usage: USAGE }
  }
  if (!Object.hasOwn(COMMANDS, first)) {
    return { ok: false, error: `unknown command ${JSON.stringify(first)} (try --help)` }
  }
  const name = first as CommandName
  if (name === 'help') {
    const topic = args[0]
    if (topic !== undefined && !Object.hasOwn(COMMANDS, topic)) {
      return { ok: false, error: `help: unknown command ${JSON.stringify(topic)}` }
    }
    return {
      ok: true,
      command: topic === undefined ? { name } : { name, command: topic as CommandName },
      options: bare,
    }
  }
  if (values.help) return { ok: true, command: { name: 'help', command: name }, options: bare }
  if (values.version || name === 'version') {
    if (name === 'version' && args.length > 0) return { ok: false, error: 'version: expected no arguments' }
    return { ok: true, command: { name: 'version' }, options: bare }
  }
  const refused = refusedOption(name, Object.keys(values))
  if (refused !== undefined) return { ok: false, error: refused }
  const options = connectionOptions(values, env)
  if (typeof options === 'string') return { ok: false, error: options }
  const command = commandOf(name, args, values)
  if (typeof command === 'string') return { ok: false, error: command }
  return { ok: true, command, options, ...warnings }
}

type Values = ReturnType<typeof parseOptions>['values']

/** connectionOptions are the brokers, topic, timeout and TLS/SASL settings, or the error text. */
function connectionOptions(
  values: Values,
  env: Readonly<Record<string, string | undefined>>,
): CliOptions | string {
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
      return `--config: ${error.message}`
    }
  }
  const configBrokers = fromConfig?.brokers.length ? fromConfig.brokers.join(',') : undefined
  const brokersText = values.brokers ?? configBrokers ?? env.KAFKA_BROKERS ?? '127.0.0.1:9092'
  const brokers = brokersText
    .split(',')
    .map((b) => b.trim())
    .filter((b) => b !== '')
  if (brokers.length === 0 || brokers.some((b) => !/^[^\s:]+:\d{1,5}$/.test(b))) {
    return `--brokers: expected host:port[,host:port], got ${JSON.stringify(brokersText)}`
  }
  const topic = values.topic ?? fromConfig?.topic ?? DEFAULT_CONTROL_TOPIC
  if (topic === '') return '--topic: expected a topic name, got an empty string'
  const timeoutMs = wholeNumber(values.timeout, '--timeout', 30_000, 1)
  if (typeof timeoutMs === 'string') return timeoutMs
  return {
    brokers,
    topic,
    timeoutMs,
    ...(fromConfig === undefined ? {} : { connection: fromConfig.connection }),
  }
}

/** commandOf checks a Kafka command's arguments and options, or returns the error text. */
function commandOf(
  name: Exclude<CommandName, 'help' | 'version'>,
  args: readonly string[],
  values: Values,
): CliCommand | string {
  const version =
    values['rate-version'] === undefined
      ? undefined
      : wholeNumber(values['rate-version'], '--rate-version', 0, 0)
  if (typeof version === 'string') return version
  const change = { inheritance: values.inheritance, version }
  const arity = (count: number, shape: string): string | undefined =>
    args.length === count ? undefined : `${name}: expected ${shape}, got ${args.length} argument(s)`
  switch (name) {
    case 'set': {
      const maxInFlight =
        values['max-in-flight'] === undefined
          ? undefined
          : wholeNumber(values['max-in-flight'], '--max-in-flight', 1, 1)
      if (typeof maxInFlight === 'string') return maxInFlight
      const weight = values.weight === undefined ? undefined : positiveNumber(values.weight, '--weight')
      if (typeof weight === 'string') return weight
      return (
        arity(2, '<merchant|*> <rate>') ?? {
          name,
          merchant: args[0] ?? '',
          rate: args[1] ?? '',
          ...(maxInFlight === undefined ? {} : { maxInFlight }),
          ...(weight === undefined ? {} : { weight }),
          ...change,
        }
      )
    }
    case 'clear':
      return arity(1, '<merchant>') ?? { name, merchant: args[0] ?? '', ...change }
    case 'snapshot':
      return arity(1, '<file>') ?? { name, file: args[0] ?? '', ...change }
    case 'get':
      if (args.length > 1) return `get: expected at most one merchant, got ${args.length} arguments`
      return { name, merchant: args[0], json: values.json ?? false }
    case 'watch':
      return (
        arity(0, 'no arguments') ?? { name, history: values.history ?? false, json: values.json ?? false }
      )
    case 'create-topic': {
      const partitions = wholeNumber(values.partitions, '--partitions', 1, 1)
      if (typeof partitions === 'string') return partitions
      return arity(0, 'no arguments') ?? { name, partitions }
    }
  }
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
      'rate-version': { type: 'string' },
      'max-in-flight': { type: 'string' },
      weight: { type: 'string' },
      timeout: { type: 'string' },
      partitions: { type: 'string' },
      json: { type: 'boolean' },
      history: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'V' },
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

/**
 * positiveNumber reads an option as a finite number > 0, or returns the error text; its
 * bounds are the control schema's, checked with the rest of the change.
 */
function positiveNumber(text: string, name: string): number | string {
  const value = Number(text)
  if (!/^\d+(\.\d+)?$/.test(text) || !Number.isFinite(value) || value <= 0) {
    return `${name}: expected a number > 0, got ${JSON.stringify(text)}`
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
