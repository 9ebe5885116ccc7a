#!/usr/bin/env node
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { Kafka, logLevel } from 'kafkajs'
import { pino } from 'pino'
import { createKafkaControlSource, type KafkaControlSource } from '../control/kafka-source.js'
import { describeChange } from '../control/log.js'
import { type ControlChange, parseControlMessage } from '../control/schema.js'
import type { ControlEvent, ControlTable, RateEntry } from '../control/state.js'
import { ensureControlTopic, publishControlChange } from '../control/topic.js'
import { formatRate } from '../limiter/index.js'
import {
  type CliCommand,
  type CliKeys,
  type CliOptions,
  commandHelp,
  keysFromEnv,
  nextControlVersion,
  parseCli,
  USAGE,
} from './args.js'

/** UsageError is a bad command or bad input: exit code 2, nothing was sent. */
class UsageError extends Error {}

type Publish = Extract<CliCommand, { name: 'set' | 'clear' | 'snapshot' }>

async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCli(argv, env)
  if (!parsed.ok) {
    const code = fail(2, parsed.error)
    if (parsed.usage !== undefined) process.stderr.write(`\n${parsed.usage}\n`)
    return code
  }
  for (const warning of parsed.warnings ?? []) process.stderr.write(`throttlectl: warning: ${warning}\n`)
  const { command, options } = parsed
  if (command.name === 'help') {
    process.stdout.write(`${command.command === undefined ? USAGE : commandHelp(command.command)}\n`)
    return 0
  }
  if (command.name === 'version') {
    process.stdout.write(`throttlectl ${packageVersion()}\n`)
    return 0
  }
  const keys = keysFromEnv(env)
  if (typeof keys === 'string') return fail(2, keys)
  try {
    switch (command.name) {
      case 'set':
      case 'clear':
      case 'snapshot':
        return await publish(command, options, keys)
      case 'get':
        return await get(command, options, keys)
      case 'watch':
        return await watch(command, options, keys)
      case 'create-topic':
        return await createTopic(command.partitions, options)
    }
  } catch (error) {
    if (error instanceof UsageError) return fail(2, error.message)
    return fail(1, (error as Error).message)
  }
}

/** packageVersion is the package's version, from the package.json two folders up (src/ and dist/ alike). */
function packageVersion(): string {
  const file = new URL('../../package.json', import.meta.url)
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version
}

function fail(code: number, message: string): number {
  process.stderr.write(`throttlectl: ${message}\n`)
  return code
}

function kafkaFor(options: CliOptions): Kafka {
  return new Kafka({
    clientId: 'throttlectl',
    brokers: options.brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 3_000,
    retry: { retries: 3 },
    ...options.connection,
  })
}

/** withTimeout fails `work` after timeoutMs with a message saying what did not finish. */
async function withTimeout<T>(work: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${timeoutMs} ms`)), timeoutMs)
  })
  try {
    return await Promise.race([work, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** readTopic reads the control topic to its high-water marks; the caller stops the source. */
async function readTopic(kafka: Kafka, options: CliOptions, keys: CliKeys): Promise<KafkaControlSource> {
  const source = createKafkaControlSource({
    kafka,
    topic: options.topic,
    signingKeys: keys.acceptedKeys,
    groupIdPrefix: 'throttlectl',
    logger: pino({ level: 'error' }, process.stderr),
  })
  try {
    await withTimeout(
      source.start().then(() => source.ready),
      options.timeoutMs,
      `reading ${options.topic} to its end`,
    )
  } catch (error) {
    await source.stop()
    throw error
  }
  return source
}

/** changeOf validates what the command says with the workers' own check, version aside. */
async function changeOf(command: Publish, version: number): Promise<ControlChange> {
  const inheritance = command.inheritance === undefined ? {} : { inheritance: command.inheritance }
  let message: unknown
  switch (command.name) {
    case 'set':
      message = {
        type: 'set',
        merchant: command.merchant,
        rate: command.rate,
        ...(command.maxInFlight === undefined ? {} : { maxInFlight: command.maxInFlight }),
        ...(command.weight === undefined ? {} : { weight: command.weight }),
        version,
        ...inheritance,
      }
      break
    case 'clear':
      message = { type: 'clear', merchant: command.merchant, version, ...inheritance }
      break
    case 'snapshot': {
      let content: unknown
      try {
        content = JSON.parse(await readFile(command.file, 'utf8'))
      } catch (error) {
        throw new UsageError(`${command.file}: ${(error as Error).message}`)
      }
      if (content === null || typeof content !== 'object' || Array.isArray(content)) {
        throw new UsageError(`${command.file}: expected a snapshot object`)
      }
      // The file's own version (config/rates.json has one) is replaced: this one orders on the topic.
      message = { type: 'snapshot', ...content, version, ...inheritance }
      break
    }
  }
  const parsed = parseControlMessage(JSON.stringify(message))
  if (!parsed.ok) throw new UsageError(`invalid ${command.name}: ${parsed.error}`)
  return parsed.change
}

async function publish(command: Publish, options: CliOptions, keys: CliKeys): Promise<number> {
  // Checked before connecting, with a placeholder version: a bad change never reaches Kafka.
  await changeOf(command, command.version ?? 0)
  const kafka = kafkaFor(options)
  let version = command.version
  if (version === undefined) {
    const source = await readTopic(kafka, options, keys)
    const highest = source.state.maxVersion()
    await source.stop()
    version = nextControlVersion(highest, (performance.timeOrigin + performance.now()) * 1_000)
  } else {
    await assertTopicExists(kafka, options)
  }
  const change = await changeOf(command, version)
  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  try {
    await withTimeout(
      publishControlChange(producer, change, { topic: options.topic, signingKey: keys.signingKey }),
      options.timeoutMs,
      `publishing to ${options.topic}`,
    )
  } finally {
    await producer.disconnect()
  }
  const signed = keys.signingKey === undefined ? 'unsigned' : `signed with key ${keys.signingKey.id}`
  process.stdout.write(`published ${describeChange(change)} to ${options.topic} (${signed})\n`)
  return 0
}

async function assertTopicExists(kafka: Kafka, options: CliOptions): Promise<void> {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const topics = await admin.listTopics()
    if (!topics.includes(options.topic)) {
      throw new Error(`topic ${options.topic} does not exist; create it with: throttlectl create-topic`)
    }
  } finally {
    await admin.disconnect()
  }
}

async function get(
  command: Extract<CliCommand, { name: 'get' }>,
  options: CliOptions,
  keys: CliKeys,
): Promise<number> {
  if (command.merchant !== undefined && command.merchant !== '*') {
    const probe = parseControlMessage(
      JSON.stringify({ type: 'clear', merchant: command.merchant, version: 0 }),
    )
    if (!probe.ok) throw new UsageError(`get: ${probe.error}`)
  }
  const source = await readTopic(kafkaFor(options), options, keys)
  const table = source.table()
  const stats = source.stats()
  const merchantVersion =
    command.merchant === undefined ? undefined : source.state.versionOf(command.merchant)
  await source.stop()
  if (command.json) {
    const entry = command.merchant === undefined ? undefined : lookup(table, command.merchant)
    const body =
      command.merchant === undefined
        ? { topic: options.topic, ...table, stats }
        : {
            merchant: command.merchant,
            override: entry ?? null,
            weight: table.weights.find((w) => w.merchant === command.merchant)?.weight ?? null,
            default: table.default ?? null,
            version: merchantVersion ?? null,
          }
    process.stdout.write(`${JSON.stringify(body, null, 2)}\n`)
    return 0
  }
  const signatures = keys.acceptedKeys.length === 0 ? 'signatures not checked' : 'signatures checked'
  const defaultText =
    table.default === undefined
      ? "the service's configured default"
      : `${formatRate(table.default.rate)} ${entryText(table.default)}`
  if (command.merchant === undefined) {
    const lines = [
      `${options.topic}: ${stats.applied} applied, ${stats.stale} stale, ${stats.rejected} rejected records (${signatures})`,
      `default  ${defaultText}`,
      ...table.overrides.map((o) => `${o.merchant}  ${formatRate(o.rate)} ${entryText(o)}`),
      ...table.weights.map((w) => `${w.merchant}  weight ${w.weight} ${entryText(w)}`),
    ]
    if (table.snapshotVersion !== undefined) lines.push(`snapshot version ${table.snapshotVersion}`)
    if (table.overrides.length === 0) lines.push('no overrides')
    process.stdout.write(`${lines.join('\n')}\n`)
    return 0
  }
  const entry = lookup(table, command.merchant)
  const text =
    entry !== undefined
      ? `${formatRate(entry.rate)} ${entryText(entry)}`
      : `no override: the default applies, ${defaultText}${merchantVersion === undefined ? '' : ` (last change version ${merchantVersion})`}`
  const weight = table.weights.find((w) => w.merchant === command.merchant)
  const weightText = weight === undefined ? '' : `, weight ${weight.weight}`
  process.stdout.write(`${command.merchant}  ${text}${weightText}\n`)
  return 0
}

function lookup(table: ControlTable, merchant: string): RateEntry | undefined {
  if (merchant === '*') return table.default
  return table.overrides.find((o) => o.merchant === merchant)
}

function entryText(entry: Pick<RateEntry, 'version' | 'changedAtMs'>): string {
  return `(version ${entry.version}, applied ${new Date(entry.changedAtMs).toISOString()})`
}

async function watch(
  command: Extract<CliCommand, { name: 'watch' }>,
  options: CliOptions,
  keys: CliKeys,
): Promise<number> {
  const source = createKafkaControlSource({
    kafka: kafkaFor(options),
    topic: options.topic,
    signingKeys: keys.acceptedKeys,
    groupIdPrefix: 'throttlectl-watch',
    logger: pino({ level: 'error' }, process.stderr),
  })
  source.subscribe((event) => {
    if (command.history || source.caughtUp())
      process.stdout.write(`${command.json ? eventJson(event) : eventText(event)}\n`)
  })
  await source.start()
  await source.ready
  process.stderr.write(
    `throttlectl: caught up with ${options.topic}; watching for changes (Ctrl-C to stop)\n`,
  )
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve)
    process.once('SIGTERM', resolve)
  })
  await source.stop()
  return 0
}

function eventText(event: ControlEvent): string {
  const at =
    event.origin.partition === undefined
      ? ''
      : ` [partition ${event.origin.partition} offset ${event.origin.offset}]`
  const time = new Date().toISOString()
  switch (event.kind) {
    case 'applied':
      return `${time} applied  ${describeChange(event.change)}${at}`
    case 'stale':
      return `${time} stale    ${describeChange(event.change)}: version ${event.inForceVersion} in force${at}`
    case 'rejected':
      return `${time} rejected ${event.reason}: ${event.error}${at}`
    case 'forgotten':
      return `${time} tombstone ${event.key}${event.changed ? '' : ' (nothing to undo)'}${at}`
  }
}

function eventJson(event: ControlEvent): string {
  return JSON.stringify(event, (_key, value: unknown) =>
    value instanceof Map ? Object.fromEntries(value) : value,
  )
}

async function createTopic(partitions: number, options: CliOptions): Promise<number> {
  const admin = kafkaFor(options).admin()
  await admin.connect()
  try {
    const created = await ensureControlTopic(admin, { topic: options.topic, numPartitions: partitions })
    process.stdout.write(
      created
        ? `created ${options.topic} (compacted, ${partitions} partition(s))\n`
        : `${options.topic} already exists\n`,
    )
  } finally {
    await admin.disconnect()
  }
  return 0
}

// kafkajs may keep retry timers alive after a failure: exit explicitly once the command is done.
process.exit(await main(process.argv.slice(2), process.env))
