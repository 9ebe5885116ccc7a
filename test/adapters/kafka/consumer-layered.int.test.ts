import { describe, expect, it } from 'vitest'
import { createThrottledConsumer, type DeadLetterEvent } from '../../../src/adapters/kafka/index.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { expectBindingScenario, expectMainScenario } from '../../support/layered-expectations.js'
import {
  BINDING,
  MAIN,
  runKafka,
  type Scenario,
  type Summary,
  startPspEndpoint,
  summarize,
} from '../../support/layered-fairness.js'
import { uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import { createTopics, testLogger, useKafkaFixture } from './support/kafka.js'

interface Order {
  merchant: string
  seq: number
  psp?: string
  keys?: unknown
}

describe('createThrottledConsumer with limitKeys (issue 18)', () => {
  const fixture = useKafkaFixture('kafka-layered-test')

  it('dead-letters a message whose limitKeys throws or gives a bad list as invalid-key, saying why, and takes the rest from their keys', async () => {
    const { kafka, admin, producer, consumers } = fixture
    const topic = uniqueName('orders')
    const deadLetterTopic = `${topic}-dlq`
    await createTopics(admin, 1, topic)
    await createTopics(admin, 1, deadLetterTopic)
    const orders: Order[] = [
      { merchant: 'm-1', seq: 0, psp: 'x' },
      { merchant: 'm-1', seq: 1, keys: 'throw' },
      { merchant: 'm-2', seq: 0, keys: ['psp:x', 'psp:x'] },
      { merchant: 'm-2', seq: 1, keys: [] },
      { merchant: 'm-1', seq: 2, psp: 'x' },
      { merchant: 'm-2', seq: 2, psp: 'x' },
    ]
    await producer.send({
      topic,
      messages: orders.map((o) => ({ key: o.merchant, value: JSON.stringify(o) })),
    })
    const limiter = new KeyedLimiter({ rate: '1000/s' })
    limiter.setRate('psp:x', '2/s burst 1')
    const handled: Array<{ order: string; atMs: number }> = []
    const events: DeadLetterEvent[] = []
    const consumer = createThrottledConsumer<Order>({
      kafka,
      groupId: uniqueName('group'),
      topics: [topic],
      fromBeginning: true,
      deadLetterTopic,
      limiter,
      decode: (value) => JSON.parse(value!.toString()) as Order,
      limitKeys: (merchantKey, order) => {
        if (order.keys === 'throw') throw new Error('message has no field psp')
        return (order.keys ?? [`psp:${order.psp}`, `psp:${order.psp}:${merchantKey}`]) as string[]
      },
      logger: testLogger,
      handler: async ({ value }) => {
        handled.push({ order: `${value.merchant}#${value.seq}`, atMs: performance.now() })
      },
    })
    consumer.on('dead-letter', (event) => events.push(event))
    consumers.push(consumer)
    await consumer.run()
    await waitFor('3 dead letters and 3 handled', () => events.length >= 3 && handled.length >= 3, 30_000)
    expect(events.map((e) => [e.reason, e.error, e.attempts]).sort()).toEqual([
      ['invalid-key', 'invalid limit keys: expected 1 to 4 limit keys, got none', 0],
      ['invalid-key', 'invalid limit keys: limit key 1 repeats key 0 (psp:x)', 0],
      ['invalid-key', 'invalid limit keys: limitKeys threw: message has no field psp', 0],
    ])
    expect(handled.map((h) => h.order).sort()).toEqual(['m-1#0', 'm-1#2', 'm-2#2'])
    // The PSP's 2/s, burst 1, binds across both merchants: three calls take at least a second.
    const at = handled.map((h) => h.atMs).sort((a, b) => a - b)
    expect(at[2]! - at[0]!).toBeGreaterThanOrEqual(1_000 - 50)
  })
})

/**
 * The issue's scenario on the shared broker (see test/support/layered-fairness.ts), with
 * the bounds of the BullMQ test (test/adapters/bullmq/layered.int.test.ts): no tolerance
 * above burst + rate × W for the handlers' starts, rate × 100 ms of delivery at the endpoint; 75 % of the expected rate at least for a
 * backlogged merchant (a loaded machine starts late, never early); a quiet merchant's p99
 * under 1 s, where behind the backlogs it would wait 75 s: what is left is the produce,
 * kafkajs's fetch (up to its 250 ms wait) and the HTTP call, plus a loaded machine's stalls.
 */
describe('Kafka lanes against a PSP endpoint: a parent at 50/s over 5 merchants at 20/s (issue 18)', () => {
  const fixture = useKafkaFixture('kafka-layered-fair')

  async function runAndSummarize(scenario: Scenario): Promise<Summary> {
    const { kafka, admin } = fixture
    const topic = uniqueName('layered')
    const deadLetterTopic = `${topic}-dlq`
    await createTopics(admin, 3, topic)
    await createTopics(admin, 1, deadLetterTopic)
    const endpoint = await startPspEndpoint()
    try {
      const names = { topic, deadLetterTopic, groupId: uniqueName('group') }
      const summary = summarize(scenario, await runKafka(scenario, kafka, names, endpoint))
      console.info(`kafka layered ${scenario.parentRate}: ${JSON.stringify(summary)}`)
      return summary
    } finally {
      await endpoint.close()
    }
  }

  it('the endpoint never sees more than burst + 50 × W; the backlogged merchants each get their share; the quiet ones wait little', async () => {
    expectMainScenario(await runAndSummarize(MAIN))
  })

  it('when the parent binds hard (30/s over two merchants at 20/s) each gets about half, though one has 100× the backlog', async () => {
    expectBindingScenario(await runAndSummarize(BINDING))
  })
})
