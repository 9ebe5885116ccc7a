import { Kafka } from 'kafkajs'
import { describe, expect, it } from 'vitest'
import {
  MAX_PARKED_METADATA_LENGTH,
  PARK_HEADERS,
  ParkedMerchants,
  type ParkItem,
  parkingPartition,
  SEND_SLICE_BYTES,
  SEND_SLICE_MESSAGES,
  sendSlices,
} from '../../../src/adapters/kafka/parking.js'
import { parkingAssigner } from '../../../src/adapters/kafka/parking-assigner.js'

describe('ParkedMerchants', () => {
  it('keeps a merchant parked until the last message routed to parking is handled', () => {
    const parked = new ParkedMerchants()
    parked.route('hot', 10, 1_000)
    parked.route('hot', 12, 1_001)
    expect(parked.has('hot')).toBe(true)
    expect(parked.handled('hot', 10)).toBe(false)
    // A newer message parked meanwhile moves the finish line.
    parked.route('hot', 15, 1_002)
    expect(parked.handled('hot', 12)).toBe(false)
    expect(parked.handled('hot', 15)).toBe(true)
    expect(parked.has('hot')).toBe(false)
  })

  it('writes only the moved stretch into the commit metadata, and a new owner skips exactly that stretch', () => {
    const parked = new ParkedMerchants()
    parked.route('hot', 10, 0)
    parked.route('hot', 11, 0)
    parked.route('hot', 12, 0)
    // Nothing moved yet: nothing to skip after a restart (the messages are read again and parked again).
    expect(parked.encode()).toBeNull()
    parked.moved('hot', 10)
    // A transaction about to commit counts as moved in its own metadata.
    const metadata = parked.encode(new Map([['hot', 11]]))
    const restored = ParkedMerchants.decode(metadata)
    expect([9, 10, 11, 12].map((offset) => restored.covers('hot', offset))).toEqual([
      false,
      true,
      true,
      false,
    ])
    expect(restored.has('hot')).toBe(true)
    expect(restored.handled('hot', 11)).toBe(true)
  })

  it('reads metadata it did not write as nothing parked', () => {
    for (const metadata of [null, '', 'checkpoint-42', '{"v":2,"parked":{}}', '{"v":1,"parked":{"m":["x"]}}'])
      expect(ParkedMerchants.decode(metadata).size).toBe(0)
  })

  it('refuses a new merchant that would push the metadata past the broker limit', () => {
    const parked = new ParkedMerchants()
    let admitted = 0
    for (let i = 0; i < 1_000; i++)
      if (parked.hasRoomFor(`m-${i}`) && parked.route(`m-${i}`, i, 0)) admitted++
    expect(admitted).toBeGreaterThan(50)
    expect(admitted).toBeLessThan(1_000)
    for (let i = 0; i < admitted; i++) parked.moved(`m-${i}`, i)
    expect(parked.encode()!.length).toBeLessThanOrEqual(MAX_PARKED_METADATA_LENGTH)
  })
})

describe('parkingPartition', () => {
  it('puts a source partition parked merchants on parking partitions that belong to it, spread over all of them', () => {
    const used = new Set<number>()
    for (let i = 0; i < 500; i++) {
      const q = parkingPartition(2, `merchant-${i}`, 6, 16)
      expect(q % 6).toBe(2)
      used.add(q)
    }
    expect(used.size).toBe(16)
  })
})

describe('sendSlices', () => {
  const item = (offset: number, parkingTopic = 'park', valueBytes = 12): ParkItem => ({
    merchantKey: 'hot',
    sourceTopic: 'src',
    sourcePartition: 0,
    message: {
      key: Buffer.from('hot'),
      value: Buffer.alloc(valueBytes),
      offset: String(offset),
      timestamp: '0',
      attributes: 0,
      headers: {},
    },
    parkingTopic,
    parkingPartition: 3,
  })
  const offsets = (slices: ReturnType<typeof sendSlices>) =>
    slices.map((slice) =>
      slice.flatMap(({ messages }) => messages.map((m) => Number(m.headers![PARK_HEADERS.offset]))),
    )

  it('sends a move of 500 as produce requests of SEND_SLICE_MESSAGES, in order (issue 14: one request of 500 held the loop up to 23 ms)', () => {
    const slices = sendSlices(Array.from({ length: 500 }, (_, i) => item(i)))
    expect(slices).toHaveLength(500 / SEND_SLICE_MESSAGES)
    expect(offsets(slices).flat()).toEqual(Array.from({ length: 500 }, (_, i) => i))
    for (const slice of slices) expect(slice).toEqual([{ topic: 'park', messages: expect.any(Array) }])
  })

  it('cuts on bytes too, sends a record larger than a slice alone, and groups each slice by parking topic', () => {
    const big = SEND_SLICE_BYTES / 2
    const items = [
      item(0, 'a', big),
      item(1, 'b', big),
      item(2, 'a', SEND_SLICE_BYTES * 2),
      item(3, 'a'),
      item(4, 'b'),
    ]
    const slices = sendSlices(items)
    expect(offsets(slices)).toEqual([[0], [1], [2], [3, 4]])
    expect(slices[3]!.map(({ topic }) => topic)).toEqual(['a', 'b'])
    expect(sendSlices([])).toEqual([])
  })
})

describe('parkingAssigner', () => {
  it('gives each parking partition to the member that owns its source partition', async () => {
    const partitions: Record<string, number> = { src: 3, 'src-parking': 12 }
    const cluster = {
      findTopicPartitionMetadata: (topic: string) =>
        Array.from({ length: partitions[topic]! }, (_, partitionId) => ({ partitionId })),
    }
    const assigner = parkingAssigner(new Map([['src', 'src-parking']]))({
      cluster,
      groupId: 'g',
      logger: new Kafka({ brokers: ['127.0.0.1:1'] }).logger(),
    } as never)
    const assignments = await assigner.assign({
      members: [{ memberId: 'b' }, { memberId: 'a' }] as never,
      topics: ['src', 'src-parking'],
    })
    const { AssignerProtocol } = await import('kafkajs')
    const owner = new Map<string, string>()
    for (const { memberId, memberAssignment } of assignments) {
      const { assignment } = AssignerProtocol.MemberAssignment.decode(memberAssignment)!
      for (const [topic, ps] of Object.entries(assignment))
        for (const p of ps) owner.set(`${topic}:${p}`, memberId)
    }
    expect(owner.size).toBe(15)
    for (let q = 0; q < 12; q++) expect(owner.get(`src-parking:${q}`)).toBe(owner.get(`src:${q % 3}`))
    expect(new Set([0, 1, 2].map((p) => owner.get(`src:${p}`))).size).toBe(2)
  })
})

describe('ParkedMerchants after a restart', () => {
  it('tells a message older than the parked stretch from one inside or after it (the older one runs from its lane, first)', () => {
    const parked = new ParkedMerchants()
    parked.route('hot', 100, 0)
    parked.moved('hot', 100)
    parked.route('hot', 101, 0)
    parked.moved('hot', 101)
    const restored = ParkedMerchants.decode(parked.encode())
    expect([99, 100, 101, 102].map((offset) => restored.precedes('hot', offset))).toEqual([
      true,
      false,
      false,
      false,
    ])
    expect(restored.precedes('other', 1)).toBe(false)
  })
})

describe('ParkedMerchants.total', () => {
  it('counts the messages routed to parking and not yet handled, over every merchant', () => {
    const parked = new ParkedMerchants()
    parked.route('hot', 10, 0)
    parked.route('hot', 11, 0)
    parked.route('warm', 12, 0)
    expect(parked.total).toBe(3)
    // Moved into the parking topic: still not handled, still counted.
    parked.moved('hot', 10)
    expect(parked.total).toBe(3)
    parked.handled('hot', 10)
    expect(parked.total).toBe(2)
    parked.handled('warm', 12)
    expect(parked.total).toBe(1)
    expect([...parked.waiting()].map(([merchantKey, { count }]) => [merchantKey, count])).toEqual([
      ['hot', 1],
    ])
  })

  it('after a restart counts the moved stretch, and drops what is left of it when the merchant catches up', () => {
    const parked = new ParkedMerchants()
    parked.route('hot', 100, 0)
    parked.moved('hot', 100)
    parked.route('hot', 104, 0)
    parked.moved('hot', 104)
    const restored = ParkedMerchants.decode(parked.encode())
    // Offsets 100..104, other merchants' messages among them: an upper bound.
    expect(restored.total).toBe(5)
    restored.handled('hot', 100)
    expect(restored.total).toBe(4)
    expect(restored.handled('hot', 104)).toBe(true)
    expect(restored.total).toBe(0)
  })
})
