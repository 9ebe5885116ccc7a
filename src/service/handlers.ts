import { pathToFileURL } from 'node:url'
import type { Logger } from 'pino'
import { ConfigError } from '../errors.js'
import {
  createPspHandler,
  createWebhookHandler,
  type DeliveryOutcome,
  type Handler,
  type HandlerJob,
  HttpClient,
  pspKeyOf,
  type SigningSecrets,
  settleOutcome,
} from '../handlers/index.js'
import { type Config, resolveModulePath } from './config.js'
import { resolveSecret } from './secrets.js'

type SourceConfig = Config['sources'][number]

/**
 * JobHandler runs one job for an adapter: it resolves when the work is done and throws
 * RetryLaterError, RetryableFailureError or PermanentFailureError otherwise (settleOutcome).
 */
export type JobHandler = (job: HandlerJob, signal?: AbortSignal) => Promise<void>

/**
 * UserHandler is what a module named in the config exports as default: a handler that
 * resolves with an outcome (see DeliveryOutcome), or with nothing when the work is done,
 * and may throw RetryLaterError, RetryableFailureError or PermanentFailureError itself.
 */
export type UserHandler = (job: HandlerJob, signal?: AbortSignal) => Promise<DeliveryOutcome | undefined>

/** HandlerSet holds what the sources' handlers share, closed once at shutdown. */
export interface HandlerSet {
  forSource(
    source: SourceConfig,
  ): Promise<{ handle: JobHandler; keyOf: ((data: unknown) => unknown) | undefined }>
  close(): Promise<void>
}

/**
 * createHandlers builds the webhook and PSP handlers from the config (secrets resolved
 * from `env:`/`file:` references now, so a missing one stops start-up), each with an
 * HTTP client of its own behind the SSRF guard, and loads module handlers on demand.
 */
export function createHandlers(
  config: Pick<Config, 'webhook' | 'psp'>,
  logger: Logger,
  env: NodeJS.ProcessEnv = process.env,
): HandlerSet {
  const production = env.NODE_ENV === 'production'
  const clients: HttpClient[] = []
  const clientFor = (client: Config['webhook']['client']) => {
    const http = new HttpClient({
      connectTimeoutMs: client.connectTimeoutMs,
      timeoutMs: client.timeoutMs,
      maxResponseBytes: client.maxResponseBytes,
      allowHosts: client.allowHosts,
      httpsOnly: client.httpsOnly ?? production,
    })
    clients.push(http)
    return http
  }

  let webhook: JobHandler | undefined
  let psp: JobHandler | undefined
  const webhookHandler = (): JobHandler => {
    if (webhook !== undefined) return webhook
    const secrets = new Map<string, SigningSecrets>()
    for (const [merchant, value] of Object.entries(config.webhook.secrets)) {
      secrets.set(merchant, resolveSigningSecrets(value, `webhook.secrets.${merchant}`, env))
    }
    const fallback =
      config.webhook.defaultSecret === undefined
        ? undefined
        : resolveSecret(config.webhook.defaultSecret, 'webhook.defaultSecret', env)
    webhook = settled(
      createWebhookHandler({
        client: clientFor(config.webhook.client),
        secretFor: (merchantId) => secrets.get(merchantId) ?? fallback,
        logger,
      }),
    )
    return webhook
  }
  const pspHandler = (): JobHandler => {
    if (psp !== undefined) return psp
    const psps = Object.fromEntries(
      Object.entries(config.psp.endpoints).map(([pspId, endpoint]) => [
        pspId,
        {
          baseUrl: endpoint.baseUrl,
          ...(endpoint.authorization === undefined
            ? {}
            : {
                authorization: resolveSecret(
                  endpoint.authorization,
                  `psp.endpoints.${pspId}.authorization`,
                  env,
                ),
              }),
        },
      ]),
    )
    psp = settled(createPspHandler({ client: clientFor(config.psp.client), psps, logger }))
    return psp
  }

  return {
    async forSource(source) {
      switch (source.handler) {
        case 'webhook':
          return { handle: webhookHandler(), keyOf: undefined }
        case 'psp':
          return { handle: pspHandler(), keyOf: (data) => pspKeyOf({ data }) }
        case 'module':
          return { handle: await loadModuleHandler(source), keyOf: undefined }
      }
    },
    async close() {
      await Promise.all(clients.map((client) => client.close()))
    },
  }
}

function settled(handler: Handler): JobHandler {
  return async (job, signal) => {
    settleOutcome(await handler(job, signal))
  }
}

function resolveSigningSecrets(
  value: Config['webhook']['secrets'][string],
  field: string,
  env: NodeJS.ProcessEnv,
): SigningSecrets {
  if (typeof value === 'string') return resolveSecret(value, field, env)
  return {
    current: resolveSecret(value.current, `${field}.current`, env),
    ...(value.previous === undefined
      ? {}
      : {
          previous: {
            secret: resolveSecret(value.previous.secret, `${field}.previous.secret`, env),
            expiresAtWallMs: Date.parse(value.previous.expiresAt),
          },
        }),
  }
}

async function loadModuleHandler(source: SourceConfig): Promise<JobHandler> {
  const where = `config field 'sources' (${source.kind === 'bullmq' ? source.queue : source.topic})`
  // loadConfig has checked that the path is given and exists; a config built by hand may not be.
  if (source.module === undefined)
    throw new ConfigError(`${where}: handler 'module' needs 'module', a module path`)
  const path = resolveModulePath(source.module)
  let loaded: { default?: unknown }
  try {
    loaded = (await import(pathToFileURL(path).href)) as { default?: unknown }
  } catch (error) {
    throw new ConfigError(`${where}: cannot load handler module ${path}: ${(error as Error).message}`)
  }
  if (typeof loaded.default !== 'function') {
    throw new ConfigError(
      `${where}: expected ${path} to export a handler function as default, got ${typeof loaded.default}`,
    )
  }
  const user = loaded.default as UserHandler
  return async (job, signal) => {
    const outcome = await user(job, signal)
    if (outcome !== undefined) settleOutcome(outcome)
  }
}
