import type { Admin } from 'kafkajs'
import type { Logger } from 'pino'
import type { Dispatcher } from './dispatcher.js'
import type { KafkaClients } from './options.js'
import type { ParkingMoves } from './parking-moves.js'
import { type BufferedMessage, PartitionState, partitionId } from './partition-state.js'
import type { PartitionTable } from './partition-table.js'

/** TopicPartitions is kafkajs's shape of a set of partitions (as in assignments and consumer.paused()). */
export interface TopicPartitions {
  topic: string
  partitions: number[]
}

/** AssignmentsOptions wire Assignments to the consumer's partitions, lanes, parking and pause state. */
export interface AssignmentsOptions<T> {
  kafka: KafkaClients
  groupId: string
  partitions: PartitionTable<T>
  dispatcher: Pick<Dispatcher<BufferedMessage<T>>, 'createGroup' | 'drop'>
  parking:
    | Pick<ParkingMoves<T>, 'admin' | 'parksFrom' | 'loadParked' | 'sourceTopicOf' | 'forget'>
    | undefined
  /** paused lists the partitions kafkajs has paused now. */
  paused: () => TopicPartitions[]
  applyPause: (topic: string, partition: number, paused: boolean) => void
  /** commit commits the watermarks now (after a recheck kept partitions). */
  commit: () => Promise<void>
  logger: Logger
}

/** AssignmentChange is what an assignment changed: partitions now held, dropped, and the recheck. */
export interface AssignmentChange {
  assigned: string[]
  revoked: string[]
  /** rechecked resolves once the partitions kept across a new member id are rechecked. */
  rechecked: Promise<void>
}

/**
 * Assignments takes each new assignment of the group into the PartitionTable: partitions
 * no longer assigned are dropped (their lanes stop, nothing of them is committed again, so
 * the new owner's progress is not overwritten; in-flight handlers are told through their
 * signal), partitions kept keep their lanes, new ones get a fresh state. kafkajs fetches
 * kept partitions again from the committed offset, and the router skips what is held.
 */
export class Assignments<T> {
  /** checkAdmin reads committed offsets after a rejoin: the parking admin, or one made when first needed. */
  private checkAdmin: Admin | undefined

  constructor(private readonly options: AssignmentsOptions<T>) {}

  /**
   * take takes an assignment. `newMember`: the member id changed (after a crash or an
   * expired session), so another member may have owned everything meanwhile: kept
   * partitions are rechecked (see recheckKept), or dropped and read anew without an admin.
   */
  take(assignment: Record<string, number[]>, newMember: boolean): AssignmentChange {
    const assigned = new Map<string, { topic: string; partition: number }>()
    for (const [topic, partitions] of Object.entries(assignment)) {
      for (const partition of partitions) assigned.set(partitionId(topic, partition), { topic, partition })
    }
    const revoked: string[] = []
    const recheck: PartitionState<T>[] = []
    const canRecheck = typeof this.options.kafka.admin === 'function'
    for (const state of [...this.options.partitions.values()]) {
      if (assigned.has(state.id) && !newMember) continue
      if (assigned.has(state.id) && canRecheck) recheck.push(state)
      else this.drop(state, revoked)
    }
    this.addAssigned(assigned)
    const rechecked = recheck.length > 0 ? this.recheckKept(recheck) : Promise.resolve()
    return { assigned: [...assigned.keys()], revoked, rechecked }
  }

  async disconnect(): Promise<void> {
    if (this.checkAdmin !== this.options.parking?.admin) await this.checkAdmin?.disconnect()
  }

  /**
   * addAssigned makes the state of each newly assigned partition (loading the parked
   * merchants of source partitions), and applies every partition's pause state again:
   * kafkajs forgets it when it restarts.
   */
  private addAssigned(assigned: Map<string, { topic: string; partition: number }>): void {
    const pausedInKafkajs = new Set<string>()
    for (const { topic, partitions } of this.options.paused()) {
      for (const partition of partitions) pausedInKafkajs.add(partitionId(topic, partition))
    }
    const added: PartitionState<T>[] = []
    for (const [id, { topic, partition }] of assigned) {
      let state = this.options.partitions.get(id)
      if (state === undefined) {
        state = this.add(topic, partition)
        if (this.options.parking?.parksFrom(state)) added.push(state)
      }
      if (state.paused !== pausedInKafkajs.has(id)) this.options.applyPause(topic, partition, state.paused)
    }
    if (added.length > 0) this.options.parking!.loadParked(added)
  }

  private add(topic: string, partition: number): PartitionState<T> {
    const id = partitionId(topic, partition)
    const sourceTopic = this.options.parking?.sourceTopicOf(topic)
    const state = new PartitionState(topic, partition, this.options.dispatcher.createGroup(id), sourceTopic)
    this.options.partitions.add(state)
    return state
  }

  private drop(state: PartitionState<T>, revoked: string[]): void {
    this.options.partitions.remove(state)
    this.options.parking?.forget(state)
    this.options.dispatcher.drop(state.group, 'partition revoked')
    revoked.push(state.id)
  }

  /**
   * recheckKept decides, after a rejoin under a new member id (kafkajs crashed and joined
   * again, e.g. across a broker restart), which partitions assigned again keep their lanes:
   * those whose committed offset is still the one this consumer committed last, so no other
   * member made progress on them meanwhile. Their work done but not yet committed is then
   * committed instead of being done again (the restart duplicates of issue 14); the others
   * are dropped and read anew from the committed offset. Their batches wait for the answer.
   */
  private recheckKept(states: PartitionState<T>[]): Promise<void> {
    const { partitions, parking, logger } = this.options
    const check = this.fetchCommitted(states).then(
      (committed) => {
        const revoked: string[] = []
        for (const state of states) {
          if (!partitions.live(state)) continue
          if (committed.get(state.id) === (state.committedOffset ?? -1)) continue
          this.drop(state, revoked)
          const fresh = this.add(state.topic, state.partition)
          if (parking?.parksFrom(fresh)) parking.loadParked([fresh])
        }
        logger.info(
          { kept: states.length - revoked.length, dropped: revoked },
          'partitions rechecked after a rejoin',
        )
        void this.options.commit()
      },
      (error: unknown) => {
        logger.warn(
          { err: error },
          'could not read committed offsets after a rejoin; reading the partitions anew',
        )
        for (const state of states) if (partitions.live(state)) this.drop(state, [])
      },
    )
    for (const state of states) state.ready = check
    return check
  }

  /** fetchCommitted reads the group's committed offset of each partition of `states` (-1 when none). */
  private async fetchCommitted(states: PartitionState<T>[]): Promise<Map<string, number>> {
    if (this.checkAdmin === undefined) {
      this.checkAdmin = this.options.parking?.admin ?? this.options.kafka.admin!()
      if (this.checkAdmin !== this.options.parking?.admin) await this.checkAdmin.connect()
    }
    const topics = [...new Set(states.map((state) => state.topic))]
    const results = await this.checkAdmin.fetchOffsets({ groupId: this.options.groupId, topics })
    const committed = new Map<string, number>()
    for (const { topic, partitions } of results) {
      for (const { partition, offset } of partitions)
        committed.set(partitionId(topic, partition), Number(offset))
    }
    return committed
  }
}
