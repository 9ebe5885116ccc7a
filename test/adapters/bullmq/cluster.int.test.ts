import { Queue } from 'bullmq'
import { Cluster } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createThrottledWorker } from '../../../src/adapters/bullmq/index.js'
import { KeyedLimiter } from '../../../src/limiter/index.js'
import { type RedisCluster, startRedisCluster } from '../../setup/redis-cluster.js'
import { waitFor } from '../../support/wait-for.js'

let cluster: RedisCluster
let connection: Cluster

beforeAll(async () => {
  cluster = await startRedisCluster()
  connection = new Cluster(cluster.nodes, { redisOptions: { maxRetriesPerRequest: null } })
}, 60_000)

afterAll(async () => {
  connection?.disconnect()
  await cluster?.stop()
})

describe('standing backlogs on a 3-master Redis Cluster', () => {
  it('parks and promotes a backlog in order under a hash-tagged prefix: every key in the queue’s slot', async () => {
    // BullMQ needs the queue's keys in one slot: the prefix carries the hash tag.
    const prefix = '{mt}'
    const queue = new Queue('cluster-backlog', { connection, prefix })
    const limiter = new KeyedLimiter({ rate: '20/s burst 1' })
    const starts: number[] = []
    const worker = createThrottledWorker(
      queue.name,
      async (job) => {
        starts.push((job.data as { i: number }).i)
      },
      { connection, prefix, limiter, concurrency: 20 },
    )
    try {
      await worker.waitUntilReady()
      await queue.addBulk(
        Array.from({ length: 60 }, (_, i) => ({ name: 'pay', data: { merchantId: 'm-cluster', i } })),
      )
      await waitFor('jobs parked', () => worker.throttleStats().backlogged > 0, 10_000, 20)
      const node = connection.nodes('master')[0]!
      const slot = Number(
        await node.call('CLUSTER', 'KEYSLOT', `${prefix}:${queue.name}:mt:backlog:m-cluster`),
      )
      expect(slot).toBe(Number(await node.call('CLUSTER', 'KEYSLOT', `${prefix}:${queue.name}:delayed`)))
      await waitFor('every job run', () => starts.length === 60, 15_000, 20)
      expect(worker.throttleStats().promoted).toBeGreaterThan(30)
      // In add order, up to neighbours fetched together.
      const displaced = starts.filter((i, place) => Math.abs(i - place) > 3)
      expect(displaced).toEqual([])
    } finally {
      await worker.close()
      await queue.obliterate({ force: true })
      await queue.close()
    }
  })
})
