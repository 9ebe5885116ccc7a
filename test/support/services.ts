import { randomUUID } from 'node:crypto'
import { inject } from 'vitest'

declare module 'vitest' {
  export interface ProvidedContext {
    /** Comma-separated bootstrap addresses of the Kafka broker the run uses. */
    kafkaBrokers: string
    /** redis:// URL of the Redis the run uses. */
    redisUrl: string
  }
}

/** kafkaBrokers is the bootstrap list of the broker resolved by test/setup/services.ts. */
export function kafkaBrokers(): string[] {
  return inject('kafkaBrokers').split(',')
}

/** redisUrl is the Redis resolved by test/setup/services.ts. */
export function redisUrl(): string {
  return inject('redisUrl')
}

/** uniqueName gives a topic, group or queue name no other test run uses. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`
}
