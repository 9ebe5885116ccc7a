import type { KafkaMessage } from 'kafkajs'
import { describe, expect, it } from 'vitest'
import { merchantBacklog } from '../../../src/adapters/kafka/backlog.js'
import { LaneGroup } from '../../../src/adapters/kafka/lanes.js'
import { type BufferedMessage, PartitionState } from '../../../src/adapters/kafka/partition-state.js'

function partition(): PartitionState<unknown> {
  return new PartitionState('orders', 0, new LaneGroup<BufferedMessage<unknown>>('orders:0'), undefined)
}

function message(offset: number, timestampMs: number): KafkaMessage {
  return { offset: String(offset), timestamp: String(timestampMs), key: null, value: null } as KafkaMessage
}

describe('merchantBacklog', () => {
  it("gives each waiting merchant its lane head's limit keys, for explain (issue 18)", () => {
    const state = partition()
    const push = (merchantKey: string, offset: number, limitKeys?: readonly string[]) => {
      const item = { merchantKey, partition: state, seq: offset, message: message(offset, 1_000), bytes: 128 }
      state.group.laneFor(merchantKey).push(limitKeys === undefined ? item : { ...item, limitKeys })
    }
    push('m-a', 0, ['psp:x', 'psp:x:m-a'])
    push('m-a', 1, ['psp:x', 'psp:x:m-a'])
    push('m-b', 2)
    const backlog = merchantBacklog([state], () => false, 3_000)
    expect(backlog).toEqual([
      { merchantKey: 'm-a', buffered: 2, parked: 0, oldestAgeMs: 2_000, limitKeys: ['psp:x', 'psp:x:m-a'] },
      { merchantKey: 'm-b', buffered: 1, parked: 0, oldestAgeMs: 2_000, limitKeys: ['m-b'] },
    ])
  })
})
