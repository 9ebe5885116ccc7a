import { existsSync, readFileSync } from 'node:fs'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { z } from 'zod'
import { ConfigError } from '../errors.js'
import { parseRate } from '../limiter/index.js'
import { checkKeyTemplates, MAX_KEY_TEMPLATES } from './limit-keys.js'

// Re-exported for the worker's entry point and throttlectl, which read the config through this module.
export { ConfigError }

// parseRate's own reason (which bound, which window), as the control schema gives it
const rateString = z.string().superRefine((text, context) => {
  try {
    parseRate(text)
  } catch (error) {
    context.addIssue({ code: 'custom', message: (error as Error).message.replace(/^parseRate: /, '') })
  }
})

/**
 * secretRef is a secret: written inline (development only), or better a reference read at
 * start-up, `env:NAME` (an environment variable) or `file:/path` (a mounted secret file).
 */
const secretRef = z.string().min(1)

const signingSecrets = z.union([
  secretRef,
  z
    .object({
      current: secretRef,
      previous: z
        .object({
          secret: secretRef,
          expiresAt: z.iso.datetime({ offset: true }).describe('End of the grace period, ISO 8601.'),
        })
        .strict()
        .optional(),
    })
    .strict(),
])

const port = z.number().int().min(0).max(65_535)
const positiveMs = z.number().int().positive()

/**
 * pemSource is PEM text for TLS: a file path, `file:/path`, `env:NAME`, or the PEM itself
 * (text beginning with `-----BEGIN`). Read at start-up by src/service/connections.ts.
 */
const pemSource = z.string().min(1)

const tlsOptions = z
  .object({
    ca: pemSource
      .optional()
      .describe(
        'CA certificate(s) the server certificate must chain to, PEM: a file path, file:/path, env:NAME or the PEM itself. Default: the system CAs.',
      ),
    rejectUnauthorized: z
      .boolean()
      .default(true)
      .describe('Verify the server certificate and its name. false only for local experiments.'),
    cert: pemSource.optional().describe('Client certificate for mutual TLS, PEM (as ca); needs key.'),
    key: pemSource
      .optional()
      .describe('Client private key for mutual TLS, PEM: a file path, file:/path or env:NAME; needs cert.'),
    servername: z
      .string()
      .min(1)
      .optional()
      .describe('Name the server certificate must carry, when it differs from the host connected to.'),
  })
  .strict()
  .refine((tls) => (tls.cert === undefined) === (tls.key === undefined), {
    message: 'expected cert and key together (mutual TLS), got only one of them',
  })

const redisUrl = z
  .string()
  .min(1)
  .refine(
    (text) => {
      try {
        const url = new URL(text)
        return (url.protocol === 'redis:' || url.protocol === 'rediss:') && url.hostname !== ''
      } catch {
        return false
      }
    },
    { message: "expected a URL like 'redis://host:6379' or 'rediss://host:6380' (TLS)" },
  )

const httpClient = z
  .object({
    connectTimeoutMs: positiveMs.default(5_000).describe('Connect timeout for outbound requests, ms.'),
    timeoutMs: positiveMs.default(10_000).describe('Total timeout of one outbound request, ms.'),
    maxResponseBytes: z
      .number()
      .int()
      .min(0)
      .default(65_536)
      .describe('Response body bytes read; the rest is discarded.'),
    allowHosts: z
      .array(z.string().min(1))
      .default([])
      .describe('Hosts or CIDRs exempt from the SSRF guard (development and tests only).'),
    httpsOnly: z
      .boolean()
      .optional()
      .describe('Refuse plain http targets. Default: true when NODE_ENV=production.'),
  })
  .strict()

/**
 * checkModuleHandler: handler 'module' needs `module`, a file that exists (see
 * resolveModulePath), and `module` means nothing to the other handlers. Loading the
 * module is start-up's first step.
 */
function checkModuleHandler(
  source: { handler: string; module?: string | undefined },
  context: z.RefinementCtx,
) {
  if (source.handler !== 'module') {
    if (source.module !== undefined) {
      context.addIssue({
        code: 'custom',
        path: ['module'],
        message: `only read with handler 'module', got handler '${source.handler}'`,
      })
    }
    return
  }
  if (source.module === undefined) {
    context.addIssue({
      code: 'custom',
      path: ['module'],
      message: "handler 'module' needs 'module', a module path",
    })
  } else if (!existsSync(resolveModulePath(source.module))) {
    context.addIssue({
      code: 'custom',
      path: ['module'],
      message: `handler module ${resolveModulePath(source.module)} does not exist`,
    })
  }
}

/**
 * resolveModulePath is where a `module` handler's file is. loadConfig has already made a
 * relative path from a config file absolute (anchorModulePaths); a path still relative
 * here (a config built without loadConfig) is taken from the working directory.
 */
export function resolveModulePath(path: string): string {
  return isAbsolute(path) ? path : resolve(path)
}

/**
 * keyTemplates is a source's `keys`: the job's limit keys, outermost first, as templates
 * checked here (checkKeyTemplates) and compiled once at start-up (compileKeyTemplates).
 */
const keyTemplates = z
  .array(z.string())
  // for editors; the checks themselves, with their own words, are checkSourceKeys's
  .meta({ minItems: 1, maxItems: MAX_KEY_TEMPLATES })
  .optional()
  .describe(
    "Limit keys of a job, outermost first, as templates: {merchant} is the merchant key, {field} or {a.b} a field of the job data (a string or number), e.g. ['psp:{psp}', 'psp:{psp}:{merchant}']. 1 to 4. Unset: the merchant key alone.",
  )

/** checkSourceKeys refuses bad `keys` templates, naming the source and the template. */
function checkSourceKeys(
  source: { kind: string; queue?: string; topic?: string; keys?: string[] | undefined },
  context: z.RefinementCtx,
) {
  if (source.keys === undefined) return
  const name = `${source.kind}:${source.queue ?? source.topic}`
  for (const problem of checkKeyTemplates(source.keys)) {
    context.addIssue({ code: 'custom', path: ['keys'], message: `source '${name}': ${problem}` })
  }
}

/** checkSource runs the checks a source's fields need together. */
function checkSource(
  source: { kind: string; handler: string; module?: string | undefined; keys?: string[] | undefined },
  context: z.RefinementCtx,
) {
  checkModuleHandler(source, context)
  checkSourceKeys(source, context)
}

const source = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('bullmq'),
      queue: z.string().min(1).describe('BullMQ queue name.'),
      handler: z.enum(['webhook', 'psp', 'module']).describe('Which handler runs the jobs.'),
      module: z
        .string()
        .min(1)
        .optional()
        .describe("With handler 'module': path of a module whose default export is the handler."),
      concurrency: z.number().int().positive().default(50).describe('Jobs handled at once by this worker.'),
      keyField: z
        .string()
        .min(1)
        .default('merchantId')
        .describe('Field of job.data holding the merchant key.'),
      keys: keyTemplates,
      instances: z
        .union([z.number().int().positive(), z.literal('auto')])
        .default(1)
        .describe('Worker processes sharing each merchant limit.'),
      attempts: z
        .number()
        .int()
        .positive()
        .default(8)
        .describe('Attempts before a job is dead-lettered (failed set).'),
      horizonMs: positiveMs
        .default(1_000)
        .describe(
          "Furthest ahead a job is given a reservation, ms; a job whose merchant's tokens are further ahead is parked in the merchant's backlog in Redis and promoted in order.",
        ),
      lateToleranceMs: z
        .number()
        .int()
        .min(0)
        .default(250)
        .describe(
          'A delayed job back more than this after its reserved time is charged again where it runs, ms (so a pause of every worker does not end in a burst).',
        ),
      safetyNetMs: positiveMs
        .default(900_000)
        .describe(
          'How long a parked job stays delayed in BullMQ if no worker promotes it (every worker gone), ms; it then comes back as an ordinary job.',
        ),
      reservationKey: secretRef
        .optional()
        .describe(
          "HMAC key (16 bytes or more) signing the reservations jobs carry, the same for every worker of the queue: a secret reference, 'env:NAME' or 'file:/path'. Unset: a producer that writes job data can forge a reservation up to horizonMs ahead; with NODE_ENV=production start-up then logs an error (it still starts).",
        ),
    })
    .strict()
    .superRefine(checkSource),
  z
    .object({
      kind: z.literal('kafka'),
      topic: z.string().min(1).describe('Kafka topic of the jobs.'),
      groupId: z.string().min(1).describe('Consumer group.'),
      handler: z.enum(['webhook', 'psp', 'module']),
      module: z.string().min(1).optional().describe("With handler 'module': the handler module's path."),
      concurrency: z.number().int().positive().default(50).describe('Jobs handled at once by this worker.'),
      keyFrom: z
        .union([z.literal('key'), z.string().regex(/^(header|field):.+$/)])
        .default('key')
        .describe("Where the merchant key is: 'key', 'header:<name>' or 'field:<json field>'."),
      keys: keyTemplates,
      deadLetterTopic: z
        .string()
        .min(1)
        .optional()
        .describe('Dead-letter topic. Default: <topic>.dead-letter.'),
      attempts: z
        .number()
        .int()
        .positive()
        .default(8)
        .describe('Handler calls per message before it is dead-lettered.'),
      parking: z
        .object({
          enabled: z
            .boolean()
            .default(true)
            .describe(
              "Move a behind merchant's further messages, in order, to a parking topic so its partition keeps flowing for the others. false: its partition pauses instead.",
            ),
          topic: z
            .string()
            .min(1)
            .optional()
            .describe('Parking topic, created at start-up when missing. Default: <topic>.parking.'),
          partitionsPerSource: z
            .number()
            .int()
            .min(1)
            .max(1_024)
            .default(16)
            .describe(
              "Parking partitions per source partition, for a created topic; an existing one must have a multiple of the source's partitions.",
            ),
        })
        .strict()
        .prefault({})
        .describe('The parking path (standing backlogs, see Operations).'),
      maxBufferedPerMerchant: z
        .number()
        .int()
        .positive()
        .optional()
        .describe(
          "Messages one behind merchant's lane holds before its further ones are parked (or, without parking, the partition pauses). Default: 100 with parking, else 5000.",
        ),
      maxBufferedBytes: z
        .number()
        .int()
        .min(1_024)
        .default(64 * 1024 * 1024)
        .describe(
          'Bytes of messages held over all partitions; past it messages are parked or partitions paused.',
        ),
    })
    .strict()
    .superRefine(checkSource),
])

/** configSchema is the worker's configuration; config/schema.json is generated from it. */
export const configSchema = z
  .object({
    $schema: z.string().optional().describe('Path of this JSON Schema, for editors.'),
    http: z
      .object({
        host: z
          .string()
          .min(1)
          .default('127.0.0.1')
          .describe('Address of the health, metrics and status server.'),
        port: port.default(8080).describe('Port of that server; 0 picks a free one.'),
        authToken: z
          .string()
          .min(1)
          .optional()
          .describe('Bearer token required by /metrics, /status.json and the page.'),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z
          .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
          .default('info')
          .describe('pino log level.'),
        pretty: z
          .enum(['auto', 'always', 'never'])
          .default('auto')
          .describe('auto: pretty in a terminal outside production.'),
      })
      .strict()
      .prefault({}),
    redis: z
      .object({
        url: redisUrl
          .default('redis://127.0.0.1:6379')
          .describe(
            'redis://host:port[/db], or rediss:// for TLS. Put credentials in username and password.',
          ),
        username: z.string().min(1).optional().describe('ACL user (Redis 6+). Default: the default user.'),
        password: secretRef
          .optional()
          .describe("Password of the user (or requirepass): a secret reference, 'env:NAME' or 'file:/path'."),
        tls: tlsOptions
          .optional()
          .describe('TLS options; setting them turns TLS on even with a redis:// URL.'),
        connectTimeoutMs: positiveMs
          .default(10_000)
          .describe('Time to open a connection (TCP and TLS), ms; also bounds the start-up check.'),
      })
      .strict()
      .prefault({}),
    kafka: z
      .object({
        brokers: z.array(z.string().min(1)).default([]).describe('Bootstrap brokers; empty means no Kafka.'),
        clientId: z.string().min(1).default('merchant-throttle').describe('kafkajs client id.'),
        ssl: z
          .union([z.boolean(), tlsOptions])
          .default(false)
          .describe('TLS to the brokers: true (system CAs) or TLS options.'),
        sasl: z
          .object({
            mechanism: z
              .enum(['plain', 'scram-sha-256', 'scram-sha-512'])
              .describe('SASL mechanism the brokers enable.'),
            username: z.string().min(1).describe('SASL user.'),
            password: secretRef.describe("A secret reference: 'env:NAME' or 'file:/path'."),
          })
          .strict()
          .optional()
          .describe('SASL login; use plain only together with ssl.'),
        connectionTimeoutMs: positiveMs
          .default(5_000)
          .describe('Time to open a connection to a broker (TCP and TLS), ms.'),
        authenticationTimeoutMs: positiveMs.default(10_000).describe('Time for the SASL exchange, ms.'),
      })
      .strict()
      .prefault({}),
    limiter: z
      .object({
        defaultRate: rateString
          .default('1000/min')
          .describe('Rate for merchants without their own, until the control source says otherwise.'),
        clockSkewToleranceMs: z
          .number()
          .min(0)
          .default(100)
          .describe('A backward clock step up to this is absorbed silently; a larger one rebases, ms.'),
        maxKeys: z
          .number()
          .int()
          .positive()
          .default(1_000_000)
          .describe('Most merchant keys held; only full buckets are evicted.'),
        maxOverrides: z
          .number()
          .int()
          .positive()
          .default(100_000)
          .describe(
            'Most merchants with a rate of their own; a control change that would pass it is rejected.',
          ),
        horizonMs: positiveMs.default(60_000).describe('Furthest ahead a reservation is made, ms.'),
        maxInFlight: z
          .number()
          .int()
          .positive()
          .optional()
          .describe(
            'Most jobs of one merchant in flight at once in this worker, until the control source says otherwise; unset: no cap.',
          ),
      })
      .strict()
      .prefault({}),
    breaker: z
      .object({
        failureThreshold: z
          .number()
          .int()
          .positive()
          .default(5)
          .describe(
            "Failures (timeouts, connection errors, 5xx) within windowMs that open a merchant's circuit breaker.",
          ),
        windowMs: positiveMs.default(30_000).describe('Window the failures are counted in, ms.'),
        coolDownMs: positiveMs
          .default(5_000)
          .describe("First opening's cool-down before a probe, ms; doubles with each consecutive opening."),
        maxCoolDownMs: positiveMs.default(300_000).describe('Longest cool-down, ms.'),
      })
      .strict()
      .prefault({}),
    control: z
      .object({
        source: z
          .enum(['auto', 'file', 'kafka'])
          .default('auto')
          .describe('auto: kafka when brokers are set, else file.'),
        file: z
          .string()
          .min(1)
          .default('config/rates.json')
          .describe(
            "Rates file (snapshot format), watched. Relative to the config file naming it (MT_CONTROL_FILE: to the working directory); default: the package's own.",
          ),
        topic: z.string().min(1).default('merchant-throttle.control').describe('Compacted control topic.'),
        signingKeys: z
          .record(z.string().min(1), secretRef)
          .default({})
          .describe('Accepted HMAC keys by key id; when any is set, unsigned changes are rejected.'),
        deadLetterTopic: z.string().min(1).optional().describe('Where rejected control messages are copied.'),
      })
      .strict()
      .prefault({}),
    sources: z.array(source).default([]),
    webhook: z
      .object({
        client: httpClient.prefault({}),
        defaultSecret: secretRef
          .optional()
          .describe('Signing secret for merchants without one (whsec_ base64).'),
        secrets: z
          .record(z.string().min(1), signingSecrets)
          .default({})
          .describe(
            'Signing secret per merchant; during a rotation { current, previous: { secret, expiresAt } }.',
          ),
      })
      .strict()
      .prefault({}),
    psp: z
      .object({
        client: httpClient.prefault({}),
        endpoints: z
          .record(
            z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/),
            z
              .object({
                baseUrl: z.url().describe("The PSP's API root; a job's path goes under it."),
                authorization: secretRef
                  .optional()
                  .describe('Authorization header value (a secret reference).'),
              })
              .strict(),
          )
          .default({})
          .describe('PSP endpoints by PSP id.'),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        merchantLabels: z
          .array(z.string().min(1))
          .max(1_000)
          .default([])
          .describe(
            'Merchants that get their own metric labels; every other merchant is counted as "other".',
          ),
      })
      .strict()
      .prefault({}),
    shutdown: z
      .object({
        deadlineMs: positiveMs.default(15_000).describe('Time in-flight work gets to finish on SIGTERM.'),
      })
      .strict()
      .prefault({}),
  })
  .strict()

/** Config is the validated configuration, defaults filled in. */
export type Config = z.infer<typeof configSchema>

/**
 * ENV_VARIABLES maps each environment variable to the config field it sets. They win
 * over every file. Lists are comma-separated.
 */
export const ENV_VARIABLES: ReadonlyArray<{
  name: string
  path: string[]
  type: 'string' | 'number' | 'list'
}> = [
  { name: 'REDIS_URL', path: ['redis', 'url'], type: 'string' },
  { name: 'KAFKA_BROKERS', path: ['kafka', 'brokers'], type: 'list' },
  { name: 'MT_HTTP_HOST', path: ['http', 'host'], type: 'string' },
  { name: 'MT_HTTP_PORT', path: ['http', 'port'], type: 'number' },
  { name: 'MT_HTTP_AUTH_TOKEN', path: ['http', 'authToken'], type: 'string' },
  { name: 'MT_LOG_LEVEL', path: ['log', 'level'], type: 'string' },
  { name: 'MT_LOG_PRETTY', path: ['log', 'pretty'], type: 'string' },
  { name: 'MT_DEFAULT_RATE', path: ['limiter', 'defaultRate'], type: 'string' },
  { name: 'MT_MAX_KEYS', path: ['limiter', 'maxKeys'], type: 'number' },
  { name: 'MT_MAX_OVERRIDES', path: ['limiter', 'maxOverrides'], type: 'number' },
  { name: 'MT_CONTROL_SOURCE', path: ['control', 'source'], type: 'string' },
  { name: 'MT_CONTROL_FILE', path: ['control', 'file'], type: 'string' },
  { name: 'MT_CONTROL_TOPIC', path: ['control', 'topic'], type: 'string' },
  { name: 'MT_WEBHOOK_DEFAULT_SECRET', path: ['webhook', 'defaultSecret'], type: 'string' },
  { name: 'MT_WEBHOOK_ALLOW_HOSTS', path: ['webhook', 'client', 'allowHosts'], type: 'list' },
  { name: 'MT_SHUTDOWN_DEADLINE_MS', path: ['shutdown', 'deadlineMs'], type: 'number' },
]

/** LoadOptions say where the layers come from; every field has the process's own as default. */
export interface LoadOptions {
  /** configDir holds default.json and <NODE_ENV>.json. Default: the package's config/. */
  configDir?: string
  /** file is a further JSON file (the --config argument), applied after the NODE_ENV one. */
  file?: string
  env?: NodeJS.ProcessEnv
}

/**
 * PACKAGE_DIR is the package's root, two folders above this module in src/service/ and
 * dist/service/ alike. fileURLToPath, not URL.pathname, which keeps a space as `%20`.
 */
const PACKAGE_DIR = fileURLToPath(new URL('../../', import.meta.url))

/** DEFAULT_CONFIG_DIR is the package's own config/ folder. */
export const DEFAULT_CONFIG_DIR = join(PACKAGE_DIR, 'config')

/**
 * loadConfig reads config/default.json, overlays config/<NODE_ENV>.json when it exists,
 * then the --config file, then the environment variables, and validates the result.
 * A relative path (control.file, a module handler's) is resolved against the directory
 * of the file that names it (MT_CONTROL_FILE: the working directory; the schema's
 * default control.file: the package root), so the worker starts from any directory.
 * Throws one ConfigError listing every problem found, each naming the field and the
 * layer it came from.
 */
export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env
  const configDir = options.configDir ?? DEFAULT_CONFIG_DIR
  const problems: string[] = []
  const layers: Array<{ name: string; value: unknown }> = []
  // A file's relative paths are anchored to its own directory before the layers merge,
  // so the worker finds them from any working directory.
  const addFile = (path: string, required: boolean) => {
    const value = anchorControlFile(
      anchorModulePaths(readJson(path, required, problems), dirname(path)),
      dirname(path),
    )
    if (value !== undefined) layers.push({ name: path, value })
  }
  addFile(join(configDir, 'default.json'), true)
  const nodeEnv = env.NODE_ENV
  if (nodeEnv !== undefined && /^[a-z0-9-]+$/i.test(nodeEnv))
    addFile(join(configDir, `${nodeEnv}.json`), false)
  if (options.file !== undefined)
    addFile(isAbsolute(options.file) ? options.file : resolve(options.file), true)
  layers.push({ name: 'environment', value: anchorControlFile(envLayer(env, problems), process.cwd()) })

  let merged: unknown = {}
  for (const layer of layers) {
    if (checkLayer(layer.name, layer.value, problems)) merged = deepMerge(merged, layer.value)
  }
  const parsed = configSchema.safeParse(merged)
  if (!parsed.success) problems.push(...parsed.error.issues.flatMap((issue) => describeIssue(issue, layers)))
  if (parsed.success && env.NODE_ENV === 'production') checkProduction(parsed.data, problems)
  if (!parsed.success || problems.length > 0) throw new ConfigError(problems)
  const config = parsed.data
  // Still relative only when no layer named it: the schema's default, inside the package.
  config.control.file = resolve(PACKAGE_DIR, config.control.file)
  return config
}

/** anchorControlFile makes a layer's relative control.file absolute against `dir`, in place. */
function anchorControlFile(layer: unknown, dir: string): unknown {
  if (isPlainObject(layer) && isPlainObject(layer.control)) {
    const file = layer.control.file
    if (typeof file === 'string' && file !== '' && !isAbsolute(file)) layer.control.file = resolve(dir, file)
  }
  return layer
}

/** anchorModulePaths makes a layer's relative `sources[].module` paths absolute against `dir`, in place. */
function anchorModulePaths(layer: unknown, dir: string): unknown {
  if (!isPlainObject(layer) || !Array.isArray(layer.sources)) return layer
  for (const source of layer.sources) {
    if (isPlainObject(source) && typeof source.module === 'string' && source.module !== '') {
      if (!isAbsolute(source.module)) source.module = resolve(dir, source.module)
    }
  }
  return layer
}

function checkProduction(config: Config, problems: string[]): void {
  const secret = config.webhook.defaultSecret
  if (secret !== undefined && secret === DEVELOPMENT_SECRET) {
    problems.push(
      "config field 'webhook.defaultSecret': the development secret from config/default.json cannot be used with NODE_ENV=production; set MT_WEBHOOK_DEFAULT_SECRET",
    )
  }
}

/** DEVELOPMENT_SECRET is config/default.json's webhook secret, refused in production. */
export const DEVELOPMENT_SECRET = 'whsec_ZGV2ZWxvcG1lbnQtb25seS1kby1ub3QtdXNlLWluLXByb2R1Y3Rpb24='

/** describeIssue names the field (each one, for unknown fields), what is wrong, and the last layer that set it. */
function describeIssue(
  issue: z.core.$ZodIssue,
  layers: ReadonlyArray<{ name: string; value: unknown }>,
): string[] {
  const paths =
    issue.code === 'unrecognized_keys' ? issue.keys.map((key) => [...issue.path, key]) : [issue.path]
  const what = issue.code === 'unrecognized_keys' ? 'unknown field: not in config/schema.json' : issue.message
  return paths.map((path) => {
    const field = path.join('.') || '(root)'
    const from = layers
      .slice()
      .reverse()
      .find((layer) => hasPath(layer.value, path))
    return `config field '${field}': ${what}${from ? ` (from ${from.name})` : ''}`
  })
}

function readJson(path: string, required: boolean, problems: string[]): unknown {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    if (!required && (error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    problems.push(`cannot read config file ${path}: ${(error as Error).message}`)
    return undefined
  }
  try {
    return JSON.parse(text)
  } catch (error) {
    problems.push(`config file ${path} is not valid JSON: ${(error as Error).message}`)
    return undefined
  }
}

function envLayer(env: NodeJS.ProcessEnv, problems: string[]): Record<string, unknown> {
  const layer: Record<string, unknown> = {}
  for (const variable of ENV_VARIABLES) {
    const raw = env[variable.name]
    if (raw === undefined || raw === '') continue
    let value: unknown = raw
    if (variable.type === 'number') {
      value = Number(raw)
      if (!Number.isFinite(value)) {
        problems.push(`environment variable ${variable.name}: expected a number, got ${JSON.stringify(raw)}`)
        continue
      }
    } else if (variable.type === 'list') {
      value = raw
        .split(',')
        .map((part) => part.trim())
        .filter((part) => part.length > 0)
    }
    setPath(layer, variable.path, value)
  }
  return layer
}

function checkLayer(name: string, value: unknown, problems: string[]): boolean {
  if (isPlainObject(value)) return true
  problems.push(`config file ${name}: expected a JSON object at the top, got ${JSON.stringify(value)}`)
  return false
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/** deepMerge overlays `over` on `base`: objects merge field by field, anything else replaces. */
function deepMerge(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over
  const out: Record<string, unknown> = { ...base }
  for (const [key, value] of Object.entries(over)) out[key] = deepMerge(base[key], value)
  return out
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target
  for (const segment of path.slice(0, -1)) {
    if (!isPlainObject(node[segment])) node[segment] = {}
    node = node[segment] as Record<string, unknown>
  }
  node[path[path.length - 1]!] = value
}

function hasPath(value: unknown, path: readonly PropertyKey[]): boolean {
  let node = value
  for (const segment of path) {
    if (!isPlainObject(node) && !Array.isArray(node)) return false
    node = (node as Record<PropertyKey, unknown>)[segment]
    if (node === undefined) return false
  }
  return true
}
