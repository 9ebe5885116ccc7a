import { createRequire } from 'node:module'
import { type DestinationStream, type Logger, pino } from 'pino'
import type { Config } from './config.js'

/**
 * REDACTED_PATHS are never written to the log: secrets, signatures, credentials and
 * payload bodies, wherever a log call puts them.
 */
export const REDACTED_PATHS = [
  'secret',
  '*.secret',
  'secrets',
  '*.secrets',
  'defaultSecret',
  '*.defaultSecret',
  'signingKeys',
  '*.signingKeys',
  'credentials',
  '*.credentials',
  'authToken',
  '*.authToken',
  'password',
  '*.password',
  'signature',
  '*.signature',
  'payload',
  '*.payload',
  'body',
  '*.body',
  'headers.authorization',
  '*.headers.authorization',
  'headers["webhook-signature"]',
  '*.headers["webhook-signature"]',
  // ioredis puts a failed command's arguments on its errors: AUTH's hold the password.
  'command.args',
  '*.command.args',
]

/** LogFormat is how the worker writes its log: pino-pretty at `prettyPath`, or JSON. */
export interface LogFormat {
  /** prettyPath is pino-pretty's resolved entry point; undefined writes JSON. */
  prettyPath: string | undefined
  /** warning says why `pretty: 'always'` gave JSON. */
  warning?: string
}

/**
 * chooseLogFormat decides between pretty and JSON: pretty when `pretty` is always, or auto
 * in a terminal outside production, and only when pino-pretty is installed (`prettyPath`
 * defined). pino-pretty is an optional peer of the package: an installed worker without it
 * writes JSON, where a pino transport naming a missing module would crash.
 */
export function chooseLogFormat(
  pretty: Config['log']['pretty'],
  context: { isTTY: boolean; nodeEnv: string | undefined; prettyPath: string | undefined },
): LogFormat {
  const wanted =
    pretty === 'always' || (pretty === 'auto' && context.isTTY && context.nodeEnv !== 'production')
  if (!wanted) return { prettyPath: undefined }
  if (context.prettyPath !== undefined) return { prettyPath: context.prettyPath }
  if (pretty === 'auto') return { prettyPath: undefined }
  return {
    prettyPath: undefined,
    warning:
      "log.pretty is 'always' but pino-pretty is not installed (npm install pino-pretty): writing JSON",
  }
}

/** findPinoPretty is pino-pretty's entry point, or undefined when it is not installed. */
function findPinoPretty(): string | undefined {
  try {
    return createRequire(import.meta.url).resolve('pino-pretty')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return undefined
    throw error
  }
}

/**
 * createLogger makes the worker's pino logger: JSON by default, pretty as chooseLogFormat
 * says. `destination` is for tests.
 */
export function createLogger(config: Config['log'], destination?: DestinationStream): Logger {
  const options = {
    level: config.level,
    base: { service: 'merchant-throttle' },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  }
  if (destination !== undefined) return pino(options, destination)
  const format = chooseLogFormat(config.pretty, {
    isTTY: process.stdout.isTTY === true,
    nodeEnv: process.env.NODE_ENV,
    prettyPath: config.pretty === 'never' ? undefined : findPinoPretty(),
  })
  if (format.prettyPath === undefined) {
    const logger = pino(options)
    if (format.warning !== undefined) logger.warn(format.warning)
    return logger
  }
  return pino({ ...options, transport: { target: format.prettyPath, options: { colorize: true } } })
}
