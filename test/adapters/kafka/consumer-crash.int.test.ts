import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { kafkaBrokers, uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import { exited, readChildLines, startConsumerChild, useChildHarness } from './support/child.js'
import { committedOffsets, createTopics, endOffsets, merchantSchedule, produce } from './support/kafka.js'

const PARTITIONS = 3
const TOTAL = 3_000

describe('createThrottledConsumer killed with SIGKILL', () => {
  const h = useChildHarness('kafka-crash-test', 'mt-kafka-crash-')

  it('a restarted consumer resumes from the committed watermark; nothing is lost', async () => {
    const topic = uniqueName('crash')
    const groupId = uniqueName('group')
    await createTopics(h.admin, PARTITIONS, topic)
    await createTopics(h.admin, 1, `${topic}-dlq`)
    const weights: Record<string, number> = {}
    for (let i = 0; i < 10; i++) weights[`m-${i}`] = 1
    const schedule = merchantSchedule(weights, TOTAL, 3)
    await produce(h.producer, topic, schedule)
    const env = (out: string) => ({
      MT_CHILD_OUT: out,
      MT_CHILD_BROKERS: kafkaBrokers().join(','),
      MT_CHILD_GROUP: groupId,
      MT_CHILD_TOPIC: topic,
      MT_CHILD_DLQ: `${topic}-dlq`,
      MT_CHILD_RATE: '100/s burst 5',
    })

    const firstOut = join(h.dir, 'first.log')
    const first = startConsumerChild(env(firstOut))
    h.children.push(first)
    // Let it work and commit a few times, then kill it without warning.
    await waitFor(
      'the first child to handle a third',
      () => readChildLines(firstOut).length >= TOTAL / 3,
      30_000,
    )
    const deadline = performance.now() + 10_000
    while (performance.now() < deadline) {
      const committed = await committedOffsets(h.admin, groupId, topic)
      if (Object.values(committed).every((offset) => offset > 0)) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    first.kill('SIGKILL')
    await exited(first)
    const committedAtKill = await committedOffsets(h.admin, groupId, topic)
    const handledByFirst = readChildLines(firstOut)
    expect(handledByFirst.length).toBeLessThan(TOTAL)
    expect(Object.values(committedAtKill).every((offset) => offset >= 0)).toBe(true)

    const secondOut = join(h.dir, 'second.log')
    const second = startConsumerChild(env(secondOut))
    h.children.push(second)
    const unique = () =>
      new Set([...handledByFirst, ...readChildLines(secondOut)].map((l) => `${l.partition}:${l.offset}`))
    await waitFor(`all ${TOTAL} messages handled`, () => unique().size >= TOTAL, 45_000)

    // The second consumer started each partition exactly at the committed watermark: it
    // handled every offset from there to the end, and none below.
    const handledBySecond = readChildLines(secondOut)
    const ends = await endOffsets(h.admin, topic)
    for (let partition = 0; partition < PARTITIONS; partition++) {
      const id = `${topic}:${partition}`
      const offsets = [
        ...new Set(handledBySecond.filter((l) => l.partition === partition).map((l) => l.offset)),
      ]
      const from = committedAtKill[id]!
      expect(Math.min(...offsets), id).toBe(from)
      expect(
        offsets.sort((x, y) => x - y),
        id,
      ).toEqual(Array.from({ length: ends[id]! - from }, (_, i) => from + i))
    }
    // What the first one did below the watermark was not done again; what it did at or above
    // it (done, not yet committed) was: those are the duplicates, and the only ones.
    const redone = handledByFirst.filter((l) => l.offset >= committedAtKill[`${topic}:${l.partition}`]!)
    expect(handledByFirst.length - redone.length + handledBySecond.length).toBe(TOTAL)

    // Per merchant, the first handling of each message follows the first handling of its predecessor.
    const order = [...handledByFirst, ...handledBySecond]
    const firstSeen = new Map<string, number>()
    order.forEach((l, index) => {
      const id = `${l.merchant}#${l.seq}`
      if (!firstSeen.has(id)) firstSeen.set(id, index)
    })
    for (const p of schedule) {
      if (p.seq > 0)
        expect(firstSeen.get(`${p.merchant}#${p.seq}`)!).toBeGreaterThan(
          firstSeen.get(`${p.merchant}#${p.seq - 1}`)!,
        )
    }

    second.kill('SIGTERM')
    await exited(second)
    expect(await committedOffsets(h.admin, groupId, topic)).toEqual(ends)
    console.info(
      `crash test: first child handled ${handledByFirst.length}, ${redone.length} redone after the kill`,
    )
  })
})
