import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Config, loadConfig } from '../../src/service/config.js'
import { redisUrl } from './services.js'

/** TEST_WEBHOOK_SECRET signs the test workers' webhooks unless a test sets its own. */
export const TEST_WEBHOOK_SECRET = 'whsec_c2VydmljZS10ZXN0LXNlY3JldC0zMi1ieXRlcy1sb25nISE='

/** WorkerConfigFiles are the files a test worker starts from, in a directory of their own. */
export interface WorkerConfigFiles {
  dir: string
  configFile: string
  ratesFile: string
}

/** DEFAULT_TEST_RATES is the rates file of a test that does not say: fast enough to stay out of the way. */
export const DEFAULT_TEST_RATES = { type: 'snapshot', version: 1, default: '1000/s' }

/**
 * writeWorkerConfig writes, into a new temporary directory, rates.json (`options.rates`)
 * and config.json: `config` over the test workers' base, which is HTTP on a free port,
 * rates from that rates.json unless Kafka brokers are set (control.source auto), and
 * webhooks to 127.0.0.1 signed with TEST_WEBHOOK_SECRET. Objects merge field by field;
 * anything else in `config` replaces the base.
 */
export function writeWorkerConfig(config: object, options: { rates?: object } = {}): WorkerConfigFiles {
  const dir = mkdtempSync(join(tmpdir(), 'mt-worker-'))
  const ratesFile = join(dir, 'rates.json')
  const configFile = join(dir, 'config.json')
  writeFileSync(ratesFile, JSON.stringify(options.rates ?? DEFAULT_TEST_RATES))
  const base = {
    http: { port: 0 },
    control: { file: ratesFile },
    webhook: { client: { allowHosts: ['127.0.0.1'] }, defaultSecret: TEST_WEBHOOK_SECRET },
  }
  writeFileSync(configFile, JSON.stringify(merge(base, config)))
  return { dir, configFile, ratesFile }
}

/**
 * loadWorkerConfig writes the files (writeWorkerConfig) and loads them as the worker
 * does, with `options.env` as the environment (default: the test run's REDIS_URL).
 */
export function loadWorkerConfig(
  config: object,
  options: { rates?: object; env?: NodeJS.ProcessEnv } = {},
): WorkerConfigFiles & { config: Config } {
  const files = writeWorkerConfig(config, options)
  const env = options.env ?? { REDIS_URL: redisUrl() }
  return { ...files, config: loadConfig({ file: files.configFile, env }) }
}

function merge(base: unknown, over: unknown): unknown {
  if (!isObject(base) || !isObject(over)) return over
  const out: Record<string, unknown> = { ...base }
  for (const [key, value] of Object.entries(over)) out[key] = merge(base[key], value)
  return out
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}
