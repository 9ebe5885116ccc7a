import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { ThrottledConsumerStats } from '../../../src/adapters/kafka/index.js'
import { kafkaBrokers, uniqueName } from '../../support/services.js'
import { waitFor } from '../../support/wait-for.js'
import {
  type ChildLine,
  exited,
  readChildLines,
  startConsumerChild,
  useChildHarness,
} from './support/child.js'
import { createTopics, merchantSchedule, produce } from './support/kafka.js'

const HOT = 2_000
const QUIET = 100

/** childStats asks a running child for its consumer's stats. */
function childStats(child: ChildProcess): Promise<ThrottledConsumerStats> {
  return new Promise((resolve) => {
    child.once('message', (stats) => resolve(stats as ThrottledConsumerStats))
    child.send('stats')
  })
}

function firstSeenInOrder(lines: ChildLine[]): string[] {
  const seen = new Map<string, number>()
  lines.forEach((l, index) => {
    if (!seen.has(`${l.merchant}#${l.seq}`)) seen.set(`${l.merchant}#${l.seq}`, index)
  })
  const broken: string[] = []
  for (const [id, index] of seen) {
    const [merchant, seq] = id.split('#')
    const previous = seen.get(`${merchant}#${Number(seq) - 1}`)
    if (Number(seq) > 0 && (previous === undefined || previous > index)) broken.push(id)
  }
  return broken
}

describe('createThrottledConsumer with parking, killed with SIGKILL in the middle of moves', () => {
  const h = useChildHarness('kafka-park-crash-test', 'mt-kafka-park-crash-')

  it('keeps every message (at least once) and each merchant in order; duplicates counted and bounded', async () => {
    const topic = uniqueName('park-crash')
    const parkingTopic = `${topic}-parking`
    const groupId = uniqueName('group')
    await createTopics(h.admin, 1, topic, `${topic}-dlq`)
    await createTopics(h.admin, 16, parkingTopic)
    const weights: Record<string, number> = { hot: HOT / (QUIET / 5) }
    for (let i = 0; i < 5; i++) weights[`quiet-${i}`] = 1
    const schedule = merchantSchedule(weights, HOT + QUIET, 11)
    await produce(h.producer, topic, schedule)
    const env = (out: string) => ({
      MT_CHILD_OUT: out,
      MT_CHILD_BROKERS: kafkaBrokers().join(','),
      MT_CHILD_GROUP: groupId,
      MT_CHILD_TOPIC: topic,
      MT_CHILD_DLQ: `${topic}-dlq`,
      MT_CHILD_PARKING: parkingTopic,
      MT_CHILD_RATE: '100000/s',
      MT_CHILD_HOT_RATE: '400/s burst 10',
    })

    const firstOut = join(h.dir, 'first.log')
    const first = startConsumerChild(env(firstOut))
    h.children.push(first)
    // Kill it while it is moving the hot merchant's backlog, 20 messages a transaction.
    let atKill: ThrottledConsumerStats | undefined
    await waitFor('the first child to be moving', () => readChildLines(firstOut).length > 0, 30_000)
    for (const deadline = performance.now() + 20_000; performance.now() < deadline; ) {
      const stats = await childStats(first)
      if (stats.parked >= 100) {
        atKill = stats
        break
      }
    }
    first.kill('SIGKILL')
    await exited(first)
    expect(atKill, 'the child never parked').toBeDefined()

    const secondOut = join(h.dir, 'second.log')
    const second = startConsumerChild(env(secondOut))
    h.children.push(second)
    const all = () => [...readChildLines(firstOut), ...readChildLines(secondOut)]
    const unique = () => new Set(all().map((l) => `${l.merchant}#${l.seq}`))
    await waitFor(`all ${schedule.length} messages handled`, () => unique().size >= schedule.length, 60_000)
    second.kill('SIGTERM')
    await exited(second)

    for (const p of schedule)
      expect(unique().has(`${p.merchant}#${p.seq}`), `${p.merchant}#${p.seq}`).toBe(true)
    expect(firstSeenInOrder(all())).toEqual([])
    const duplicates = all().length - unique().size
    console.info(
      `parking crash test: killed with ${atKill!.parked} parked in ${atKill!.parkTransactions} transactions ` +
        `(${atKill!.parkQueued} queued), ${readChildLines(firstOut).length} handled by the first child, ${duplicates} duplicates`,
    )
    // Done again at most: what the first child held in lanes and had moved but not yet committed past.
    expect(duplicates).toBeLessThanOrEqual(300)
  })
})
