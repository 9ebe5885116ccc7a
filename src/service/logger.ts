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

/**
 * createLogger makes the worker's pino logger: JSON by default, pretty when `pretty` is
 * always, or auto in a terminal outside production. `destination` is for tests.
 */
export function createLogger(config: Config['log'], destination?: DestinationStream): Logger {
  const options = {
    level: config.level,
    base: { service: 'merchant-throttle' },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  }
  if (destination !== undefined) return pino(options, destination)
  const pretty =
    config.pretty === 'always' ||
    (config.pretty === 'auto' && process.stdout.isTTY === true && process.env.NODE_ENV !== 'production')
  if (pretty) return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: true } } })
  return pino(options)
}
