import { readFileSync } from 'node:fs'
import { ConfigError } from '../errors.js'

/**
 * resolveSecret reads a secret reference from the config: `env:NAME` is the environment
 * variable NAME, `file:/path` the file's content without its trailing newline; anything
 * else is the secret itself. A reference that resolves to nothing is a ConfigError that
 * names `field` and the reference, never the secret.
 */
export function resolveSecret(value: string, field: string, env: NodeJS.ProcessEnv = process.env): string {
  if (value.startsWith('env:')) {
    const name = value.slice(4)
    const secret = env[name]
    if (secret === undefined || secret === '') {
      throw new ConfigError(`config field '${field}': environment variable ${name} is not set`)
    }
    return secret
  }
  if (value.startsWith('file:')) {
    const path = value.slice(5)
    let secret: string
    try {
      secret = readFileSync(path, 'utf8').replace(/\r?\n$/, '')
    } catch (error) {
      throw new ConfigError(
        `config field '${field}': cannot read secret file ${path}: ${(error as NodeJS.ErrnoException).code}`,
      )
    }
    if (secret === '') throw new ConfigError(`config field '${field}': secret file ${path} is empty`)
    return secret
  }
  return value
}
