import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { configSchema } from '../../src/service/config.js'
import { startService } from '../../src/service/service.js'

describe('startService before anything starts', () => {
  it('refuses Kafka control and a Kafka source without brokers, both in one ConfigError, connecting to nothing', async () => {
    const config = configSchema.parse({
      http: { port: 0 },
      control: { source: 'kafka' },
      sources: [{ kind: 'kafka', topic: 'payments', groupId: 'g', handler: 'webhook' }],
    })
    const error = await startService(config, pino({ level: 'silent' })).catch((thrown: unknown) => thrown)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).problems).toEqual([
      "config field 'control.source': 'kafka' needs kafka.brokers (or KAFKA_BROKERS)",
      "config field 'sources': kafka source 'payments' needs kafka.brokers",
    ])
  })
})
