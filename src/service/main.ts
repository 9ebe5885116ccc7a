#!/usr/bin/env node
import { parseArgs } from 'node:util'
import { ConfigError, loadConfig } from './config.js'
import { createLogger } from './logger.js'
import { startService } from './service.js'

// The worker's entry point: `npm start`, or `node dist/service/main.js --config file.json`.
// SIGTERM or SIGINT stops taking work and lets in-flight work finish within
// shutdown.deadlineMs, then exits 0; a second signal exits at once with 130.

const USAGE = `usage: merchant-throttle [--config <file.json>]

Runs the throttling worker. Configuration: config/default.json, then
config/<NODE_ENV>.json, then --config, then environment variables (see README).`

async function main(): Promise<void> {
  let configFile: string | undefined
  try {
    const { values } = parseArgs({
      options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    })
    if (values.help) {
      process.stdout.write(`${USAGE}\n`)
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
