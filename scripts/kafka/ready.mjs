// ready.mjs waits until a Kafka broker answers a metadata request (kafkajs admin describeCluster
// and listTopics), used by scripts/kafka-local after it starts the broker.
// Usage: node ready.mjs <host:port> <pid> <timeoutSec>
// Exits 0 when the broker answers, 1 when the timeout passes, 2 when the process <pid> died first.
import { Kafka, logLevel } from 'kafkajs'

const [bootstrap, pidArg, timeoutArg] = process.argv.slice(2)
const pid = Number(pidArg)
const deadlineMs = Date.now() + Number(timeoutArg ?? 90) * 1000

function alive(processId) {
  try {
    process.kill(processId, 0)
    return true
  } catch {
    return false
  }
}

const kafka = new Kafka({
  clientId: 'kafka-local-ready',
  brokers: [bootstrap],
  logLevel: logLevel.NOTHING,
  connectionTimeout: 1000,
  requestTimeout: 3000,
  retry: { retries: 0 },
})

let lastError = 'no attempt yet'
while (Date.now() < deadlineMs) {
  if (!alive(pid)) {
    console.error(`kafka-local: the broker process ${pid} exited before it answered (${lastError})`)
    process.exit(2)
  }
  const admin = kafka.admin()
  try {
    await admin.connect()
    const cluster = await admin.describeCluster()
    await admin.listTopics()
    await admin.disconnect()
    if (cluster.brokers.length > 0 && cluster.controller !== null) process.exit(0)
    lastError = 'metadata has no broker or controller yet'
  } catch (error) {
    lastError = error instanceof Error ? error.message : String(error)
    await admin.disconnect().catch(() => undefined)
  }
  await new Promise((resolve) => setTimeout(resolve, 250))
}
console.error(`kafka-local: no metadata answer from ${bootstrap} before the timeout (${lastError})`)
process.exit(1)
