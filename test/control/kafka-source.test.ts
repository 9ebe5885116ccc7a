import { Kafka, logLevel } from 'kafkajs'
import { describe, expect, it } from 'vitest'
import { createKafkaControlSource } from '../../src/control/kafka-source.js'

// Creating a source connects nothing: its options are checked before any broker is involved.
const kafka = new Kafka({ brokers: ['127.0.0.1:1'], logLevel: logLevel.NOTHING })

describe('createKafkaControlSource options', () => {
  it.each([
    [{ maxWaitTimeInMs: -1 }, /expected maxWaitTimeInMs to be a finite number >= 0, got -1/],
    [{ maxRetryTimeMs: 100 }, /expected maxRetryTimeMs to be a finite number >= 300, got 100/],
    [{ sessionTimeoutMs: 5_000 }, /expected sessionTimeoutMs to be a finite number >= 6000, got 5000/],
    [{ signingKeys: [{ id: 'k', secret: 'short' }] }, /at least 16 bytes/],
    [{ limits: { maxLimit: 0 } }, /expected maxLimit to be a finite number > 0/],
  ])('refuses %j with a TypeError', (options, message) => {
    expect(() => createKafkaControlSource({ kafka, ...options })).toThrow(TypeError)
    expect(() => createKafkaControlSource({ kafka, ...options })).toThrow(message)
  })

  it('is not caught up, with an empty table, before it starts; stop before start rejects ready', async () => {
    const source = createKafkaControlSource({ kafka })
    expect(source.caughtUp()).toBe(false)
    expect(source.table().overrides).toEqual([])
    await source.stop()
    await expect(source.ready).rejects.toThrow('control source stopped before it caught up')
  })
})
