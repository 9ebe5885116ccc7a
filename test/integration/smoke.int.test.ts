import { type Job, Queue, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import { Kafka, logLevel } from 'kafkajs'
import { describe, expect, it } from 'vitest'
import { kafkaBrokers, redisUrl, uniqueName } from '../support/services.js'

// The services every integration test relies on are real and reachable: a topic can be created
// and a message goes through it; a BullMQ job is stored in Redis and processed by a worker.
describe('integration services', () => {
  it('creates a Kafka topic, produces a keyed message and consumes it back', async () => {
    const kafka = new Kafka({
      clientId: uniqueName('smoke'),
      brokers: kafkaBrokers(),
      logLevel: logLevel.NOTHING,
    })
    const topic = uniqueName('smoke')
    const admin = kafka.admin()
    const producer = kafka.producer()
    const consumer = kafka.consumer({ groupId: uniqueName('smoke-group') })
    await admin.connect()
    try {
      const created = await admin.createTopics({
        topics: [{ topic, numPartitions: 2 }],
        waitForLeaders: true,
      })
      expect(created).toBe(true)
      expect(await admin.listTopics()).toContain(topic)

      await producer.connect()
      await producer.send({
        topic,
        messages: [{ key: 'merchant-1', value: 'hello', headers: { kind: 'smoke' } }],
      })

      let received: (message: { key: string; value: string; kind: string }) => void = () => undefined
      const firstMessage = new Promise<{ key: string; value: string; kind: string }>((resolve) => {
        received = resolve
      })
      await consumer.connect()
      await consumer.subscribe({ topic, fromBeginning: true })
      await consumer.run({
        eachMessage: async ({ message }) => {
          received({
            key: message.key?.toString() ?? '',
            value: message.value?.toString() ?? '',
            kind: message.headers?.kind?.toString() ?? '',
          })
        },
      })
      expect(await firstMessage).toEqual({ key: 'merchant-1', value: 'hello', kind: 'smoke' })
    } finally {
      await consumer.disconnect()
      await producer.disconnect()
      await admin.deleteTopics({ topics: [topic] })
      await admin.disconnect()
    }
  })

  it('adds a BullMQ job to a queue in Redis and processes it with a worker', async () => {
    const queueName = uniqueName('smoke')
    const connection = new Redis(redisUrl(), { maxRetriesPerRequest: null })
    const workerConnection = new Redis(redisUrl(), { maxRetriesPerRequest: null })
    const queue = new Queue(queueName, { connection })
    let completed: (job: Job) => void = () => undefined
    const completion = new Promise<Job>((resolve) => {
      completed = resolve
    })
    const worker = new Worker(
      queueName,
      async (job: Job<{ merchant: string; amount: number }>) => job.data.amount * 2,
      {
        connection: workerConnection,
      },
    )
    worker.on('completed', completed)
    try {
      await worker.waitUntilReady()
      const added = await queue.add('charge', { merchant: 'merchant-1', amount: 21 })

      const job = await completion
      expect(job.id).toBe(added.id)
      expect(job.returnvalue).toBe(42)
      expect(await queue.getJobCounts('completed', 'failed')).toEqual({ completed: 1, failed: 0 })
    } finally {
      await worker.close()
      await queue.obliterate({ force: true })
      await queue.close()
      workerConnection.disconnect()
      connection.disconnect()
    }
  })
})
