import { AssignerProtocol, type PartitionAssigner } from 'kafkajs'

/** PARKING_ASSIGNER_NAME is the group protocol name of the parking assigner. */
export const PARKING_ASSIGNER_NAME = 'MerchantThrottleParking'

/**
 * parkingAssigner deals the source topics' partitions round robin over the members, as
 * kafkajs's RoundRobinAssigner does, and gives parking partition q of a source topic's
 * parking topic to the member that owns source partition q mod (source partitions). The
 * owner of a source partition thus reads its parked messages itself, and knows when a
 * parked merchant has caught up. `parkingTopics` maps each source topic to its parking topic.
 */
export function parkingAssigner(parkingTopics: ReadonlyMap<string, string>): PartitionAssigner {
  const parkingSources = new Map([...parkingTopics].map(([source, parking]) => [parking, source]))
  return ({ cluster }) => ({
    name: PARKING_ASSIGNER_NAME,
    version: 0,
    async assign({ members, topics }) {
      const memberIds = members.map(({ memberId }) => memberId).sort()
      const assignment = new Map<string, Record<string, number[]>>(memberIds.map((id) => [id, {}]))
      const give = (memberId: string, topic: string, partition: number) => {
        const topicsOfMember = assignment.get(memberId)!
        const partitions = topicsOfMember[topic] ?? []
        partitions.push(partition)
        topicsOfMember[topic] = partitions
      }
      const owners = new Map<string, string[]>()
      let next = 0
      for (const topic of topics) {
        if (parkingSources.has(topic)) continue
        const partitions = cluster.findTopicPartitionMetadata(topic).map((m) => m.partitionId)
        const byPartition: string[] = []
        for (const partition of partitions.sort((a, b) => a - b)) {
          const memberId = memberIds[next++ % memberIds.length]!
          byPartition[partition] = memberId
          give(memberId, topic, partition)
        }
        owners.set(topic, byPartition)
      }
      for (const topic of topics) {
        const source = parkingSources.get(topic)
        if (source === undefined) continue
        const sourceOwners = owners.get(source) ?? []
        for (const { partitionId } of cluster.findTopicPartitionMetadata(topic)) {
          const owner =
            sourceOwners.length > 0
              ? sourceOwners[partitionId % sourceOwners.length]!
              : memberIds[partitionId % memberIds.length]!
          give(owner, topic, partitionId)
        }
      }
      return memberIds.map((memberId) => ({
        memberId,
        memberAssignment: AssignerProtocol.MemberAssignment.encode({
          version: 0,
          assignment: assignment.get(memberId)!,
          userData: Buffer.alloc(0),
        }),
      }))
    },
    protocol({ topics }) {
      return {
        name: PARKING_ASSIGNER_NAME,
        metadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: Buffer.alloc(0) }),
      }
    },
  })
}
