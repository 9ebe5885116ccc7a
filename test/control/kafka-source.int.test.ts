import type { KafkaMessage } from 'kafkajs'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createKafkaControlSource, REJECT_REASON_HEADER } from '../../src/control/kafka-source.js'
import { signControlValue, tombstoneSignedBytes } from '../../src/control/signing.js'
import type { ControlTable } from '../../src/control/state.js'
import { ensureControlTopic } from '../../src/control/topic.js'
import { KeyedLimiter } from '../../src/limiter/index.js'
import { kafkaBrokers, uniqueName } from '../support/services.js'
import { type ControlFixture, closeFixture, openFixture, overridesOf, send, startSource } from './support.js'

let fixture: ControlFixture | undefined

afterEach(async () => {
  await closeFixture(fixture)
  fixture = undefined
})

async function setup(partitions = 1): Promise<{ fixture: ControlFixture; topic: string }> {
  fixture = await openFixture(kafkaBrokers(), uniqueName('control-test'))
  const topic = uniqueName('control')
  expect(await ensureControlTopic(fixture.admin, { topic, numPartitions: partitions })).toBe(true)
  fixture.topics.push(topic)
  return { fixture, topic }
}

const set = (merchant: string, rate: string, version: number) => ({
  key: merchant,
  value: JSON.stringify({ type: 'set', merchant, rate, version }),
})
const clear = (merchant: string, version: number) => ({
  key: merchant,
  value: JSON.stringify({ type: 'clear', merchant, version }),
})
const snapshot = (version: number, defaultRate: string, overrides: Record<string, string>) => ({
  key: '*snapshot',
  value: JSON.stringify({ type: 'snapshot', version, default: defaultRate, overrides }),
})

/** withoutTimes drops the apply times, which differ between instances by design. */
function withoutTimes(table: ControlTable) {
  return {
    default: table.default && { rate: table.default.rate, version: table.default.version },
    overrides: table.overrides.map(({ merchant, rate, version }) => ({ merchant, rate, version })),
    snapshotVersion: table.snapshotVersion,
  }
}

describe('Kafka control source', () => {
  it('creates the control topic compacted, once', async () => {
    const { fixture, topic } = await setup()
    const configs = await fixture.admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: 2, name: topic, configNames: ['cleanup.policy'] }],
    })
    expect(configs.resources[0]?.configEntries).toMatchObject([
      { configName: 'cleanup.policy', configValue: 'compact' },
    ])
    expect(await ensureControlTopic(fixture.admin, { topic })).toBe(false)
  })

  it('a restarted instance rebuilds the same table from the topic before it reports ready', async () => {
    const { fixture, topic } = await setup(3)
    const records = [
      ...Array.from({ length: 30 }, (_, i) => set(`m${i % 12}`, `${100 + i}/min`, 10 + i)),
      // m0..m5 were last set at versions 34..39, above the snapshot: they keep their rates
      snapshot(33, '1000/min', { m0: '7/s', m5: '8/s', m6: '6/s', big: '9/s' }),
      set('m3', '1/s', 24), // older than m3's version 37: stale
      clear('m1', 50),
      set('*', '2000/min', 51),
      { key: 'm2', value: 'not json' },
      { key: 'm2', value: null }, // a tombstone: m2 falls back to what the snapshot says (no override)
      set('m0', '3/s', 20), // stale
    ]
    await send(fixture, topic, records)
    // What the topic holds: a producer retry on a freshly started broker can write a batch twice
    // (seen on the Kafka 3.9.1 pass: 60 records for 37 sent), and the source must handle every record once.
    const offsets = await fixture.admin.fetchTopicOffsets(topic)
    const inTopic = offsets.reduce((sum, { high, low }) => sum + Number(high) - Number(low), 0)
    expect(inTopic).toBeGreaterThanOrEqual(records.length)

    const first = await startSource(fixture, { topic })
    const firstStats = first.source.stats()
    expect(firstStats.applied + firstStats.stale + firstStats.rejected + firstStats.forgotten).toBe(inTopic)
    await first.source.stop()

    // A new instance, as after a restart: it must have the whole table at the moment it says ready.
    const limiter = new KeyedLimiter({ rate: '100/min' })
    const restarted = createKafkaControlSource({ kafka: fixture.kafka, topic, limiter })
    fixture.sources.push(restarted)
    let atReady: { table: ControlTable; overrides: Record<string, string>; handled: number } | undefined
    const observed = restarted.ready.then(() => {
      const stats = restarted.stats()
      atReady = {
        table: restarted.table(),
        overrides: overridesOf(limiter),
        handled: stats.applied + stats.stale + stats.rejected + stats.forgotten,
      }
    })
    expect(restarted.caughtUp()).toBe(false)
    await restarted.start()
    await observed
    expect(restarted.caughtUp()).toBe(true)
    expect(atReady!.handled).toBe(inTopic)
    expect(withoutTimes(atReady!.table)).toEqual(withoutTimes(first.source.table()))
    expect(atReady!.overrides).toEqual(overridesOf(first.limiter))
    // and that table is the one the records say, whatever the partitions' interleaving
    expect(atReady!.overrides).toEqual({
      big: '9/1000',
      m0: '124/60000',
      m3: '127/60000',
      m4: '128/60000',
      m5: '129/60000',
      m6: '6/1000',
    })
    expect(limiter.rates().default).toEqual({ limit: 2000, intervalMs: 60_000, burst: 2000 })
  })

  it('an empty topic is caught up at once', async () => {
    const { fixture, topic } = await setup(2)
    const { source } = await startSource(fixture, { topic })
    expect(source.caughtUp()).toBe(true)
    expect(source.table()).toEqual({
      default: undefined,
      overrides: [],
      weights: [],
      snapshotVersion: undefined,
      lastChangeAtMs: undefined,
    })
  })

  it('orders live records: out of order, duplicates, a snapshot followed by older sets', async () => {
    const { fixture, topic } = await setup()
    const { source, limiter } = await startSource(fixture, { topic })
    await send(fixture, topic, [set('m1', '10/s', 5), set('m1', '20/s', 3), set('m1', '10/s', 5)])
    await vi.waitFor(() => expect(source.stats()).toMatchObject({ applied: 1, stale: 2 }), {
      timeout: 10_000,
    })
    expect(overridesOf(limiter)).toEqual({ m1: '10/1000' })

    await send(fixture, topic, [
      snapshot(10, '500/min', { m2: '5/s' }),
      set('m1', '30/s', 9),
      set('m2', '6/s', 8),
      set('m3', '7/s', 10),
    ])
    await vi.waitFor(() => expect(source.stats()).toMatchObject({ applied: 2, stale: 5 }), {
      timeout: 10_000,
    })
    expect(overridesOf(limiter)).toEqual({ m2: '5/1000' })

    await send(fixture, topic, [set('m1', '30/s', 11)])
    await vi.waitFor(() => expect(overridesOf(limiter)).toEqual({ m1: '30/1000', m2: '5/1000' }), {
      timeout: 10_000,
    })
  })

  it('with signing keys: signed by either rotated key applies; unsigned, forged or unknown-key records are rejected and dead-lettered', async () => {
    const { fixture, topic } = await setup()
    const deadLetterTopic = uniqueName('control-dlq')
    await fixture.admin.createTopics({
      waitForLeaders: true,
      topics: [{ topic: deadLetterTopic, numPartitions: 1 }],
    })
    fixture.topics.push(deadLetterTopic)
    const previous = { id: 'k1', secret: 'previous-secret-0123456789' }
    const current = { id: 'k2', secret: 'current-secret-0123456789' }
    const { source, limiter } = await startSource(fixture, {
      topic,
      signingKeys: [previous, current],
      deadLetterTopic,
    })

    const signed = (record: { key: string; value: string }, key: { id: string; secret: string }) => ({
      ...record,
      headers: signControlValue(record.value, key),
    })
    const forged = set('m4', '999/s', 1)
    await send(fixture, topic, [
      signed(set('m1', '1/s', 1), previous), // signed before the rotation
      signed(set('m2', '2/s', 1), current), // signed after it
      set('m3', '3/s', 1), // unsigned
      { ...forged, headers: { ...signControlValue(set('m4', '4/s', 1).value, current) } }, // a signature of another value
      signed(set('m5', '5/s', 1), { id: 'k0', secret: 'retired-secret-0123456789' }), // a key no longer accepted
      { key: 'm1', value: null }, // an unsigned tombstone
      { key: 'm6', value: Buffer.from([0xff, 0x00, 0x7b]) }, // bytes, unsigned
      signed(set('m6', '6/s', 1), current), // the source still runs after all that
    ])
    await vi.waitFor(
      () => expect(overridesOf(limiter)).toEqual({ m1: '1/1000', m2: '2/1000', m6: '6/1000' }),
      { timeout: 10_000 },
    )
    expect(source.stats()).toMatchObject({
      applied: 3,
      rejected: 5,
      rejectedBy: { unsigned: 3, 'bad-signature': 1, 'unknown-key-id': 1 },
    })

    // The dead-letter topic holds a copy of each rejected record, with the reason.
    await vi.waitFor(() => expect(source.stats().deadLettered).toBe(5), { timeout: 10_000 })
    const copies: KafkaMessage[] = []
    const reader = fixture.kafka.consumer({ groupId: uniqueName('dlq-reader'), maxWaitTimeInMs: 100 })
    await reader.connect()
    await reader.subscribe({ topic: deadLetterTopic, fromBeginning: true })
    await reader.run({ eachMessage: async ({ message }) => void copies.push(message) })
    try {
      await vi.waitFor(() => expect(copies).toHaveLength(5), { timeout: 15_000 })
    } finally {
      await reader.disconnect()
    }
    expect(copies.map((m) => m.headers?.[REJECT_REASON_HEADER]?.toString()).sort()).toEqual([
      'bad-signature',
      'unknown-key-id',
      'unsigned',
      'unsigned',
      'unsigned',
    ])
    expect(copies.map((m) => m.key?.toString())).toEqual(expect.arrayContaining([`${topic}:0:2`]))
    expect(copies.find((m) => m.key?.toString() === `${topic}:0:2`)?.value?.toString()).toBe(
      set('m3', '3/s', 1).value,
    )
  })

  it('a signed tombstone undoes an override', async () => {
    const { fixture, topic } = await setup()
    const key = { id: 'k', secret: 'a-secret-of-enough-bytes' }
    const { limiter } = await startSource(fixture, { topic, signingKeys: [key] })
    const record = set('m1', '1/s', 1)
    await send(fixture, topic, [{ ...record, headers: signControlValue(record.value, key) }])
    await vi.waitFor(() => expect(overridesOf(limiter)).toEqual({ m1: '1/1000' }), { timeout: 10_000 })
    await send(fixture, topic, [
      { key: 'm1', value: null, headers: signControlValue(tombstoneSignedBytes('m1'), key) },
    ])
    await vi.waitFor(() => expect(overridesOf(limiter)).toEqual({}), { timeout: 10_000 })
  })

  it('start rejects on a topic that does not exist, saying how to create it', async () => {
    fixture = await openFixture(kafkaBrokers(), uniqueName('control-test'))
    const source = createKafkaControlSource({ kafka: fixture.kafka, topic: uniqueName('missing') })
    fixture.sources.push(source)
    await expect(source.start()).rejects.toThrow(/does not exist; create it with .*throttlectl create-topic/)
    await source.stop()
    await expect(source.ready).rejects.toThrow(/stopped before it caught up/)
  })
})
