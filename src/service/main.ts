#!/usr/bin/env node
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { ConfigError, loadConfig } from './config.js'
import { createLogger } from './logger.js'
import { startService } from './service.js'

// The worker's entry point: the package's `merchant-throttle` command, `npm start` in the
// repository, or `node dist/service/main.js --config file.json`.
// SIGTERM or SIGINT stops taking work and lets in-flight work finish within
// shutdown.deadlineMs, then exits 0; a second signal exits at once with 130.

const USAGE = `usage: merchant-throttle [--config <file.json>]

Runs the throttling worker: takes jobs from the sources in its config (BullMQ queues,
Kafka topics), paces them per merchant and serves /healthz, /readyz, /metrics and a
status page over HTTP.

Configuration: the package's config/default.json, then config/<NODE_ENV>.json, then
the --config file, then environment variables (REDIS_URL, KAFKA_BROKERS, MT_HTTP_HOST,
MT_HTTP_PORT, MT_LOG_LEVEL, ...: see the README). A relative control.file is read from
the directory of the file that names it.

Options:
  -c, --config <file.json>  a config file over the package's defaults
  -V, --version             print the version and exit
  -h, --help                this text

Exit codes: 0 stopped by a signal, 1 failed start, 2 bad arguments, 78 bad config.`

/** packageVersion is the package's version, from the package.json two folders up (src/ and dist/ alike). */
function packageVersion(): string {
  const file = new URL('../../package.json', import.meta.url)
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version
}

async function main(): Promise<void> {
  let configFile: string | undefined
  try {
    const { values } = parseArgs({
      options: {
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
      strict: true,
    })
    if (values.help) {
      process.stdout.write(`${USAGE}\n`)
      return
    }
    if (values.version) {
      process.stdout.write(`merchant-throttle ${packageVersion()}\n`)
      return
    }
    configFile = values.config
  } catch (error) {
    process.stderr.write(`merchant-throttle: ${(error as Error).message}\n${USAGE}\n`)
    process.exitCode = 2
    return
  }

  let config: ReturnType<typeof loadConfig>
  try {
    config = loadConfig({ file: configFile })
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    process.stderr.write(`merchant-throttle: ${error.message}\n`)
    process.exitCode = 78 // EX_CONFIG
    return
  }

  const logger = createLogger(config.log)
  let service: Awaited<ReturnType<typeof startService>> | undefined
  let signals = 0
  const onSignal = (signal: NodeJS.Signals) => {
    signals++
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now')
      process.exit(130)
    }
    logger.info({ signal }, 'shutting down')
    const stopping = service?.stop() ?? Promise.resolve()
    stopping.then(
      () => {
        logger.flush()
        process.exit(0)
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed')
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)

  try {
    service = await startService(config, logger)
    logger.info({ url: service.url }, 'ready when /readyz says so')
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`merchant-throttle: ${error.message}\n`)
      process.exit(78)
    }
    logger.fatal({ err: error }, 'start-up failed')
    logger.flush()
    process.exitCode = 1
    process.exit(1)
  }
}

await main()
