import { existsSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Queue } from 'bullmq'
import { type Admin, Kafka, logLevel, type Producer } from 'kafkajs'
import { pino } from 'pino'
import { type Browser, chromium, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureControlTopic, publishControlChange } from '../../src/control/index.js'
import { parseRate } from '../../src/limiter/index.js'
import { configSchema, DEVELOPMENT_SECRET } from '../../src/service/config.js'
import { type RunningService, startService } from '../../src/service/service.js'
import { kafkaBrokers, redisUrl, uniqueName } from '../support/services.js'

// The status page's layered keys in a real browser (Debian's Chromium) against a real worker:
// a BullMQ source whose `keys` put each webhook under its PSP account (a field of the job's
// payload) and its merchant, the account's rate and a child's weight from a snapshot on the
// control topic, and a backlog of two merchants behind the account. It saves
// docs/status-page-layered.png.

const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-sync']
const SCREENSHOT = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'docs',
  'status-page-layered.png',
)
const PARENT = 'psp:acme'

const queueName = uniqueName('status-layered')
const controlTopic = uniqueName('status-layered-control')
let kafka: Kafka
let admin: Admin
let producer: Producer
let queue: Queue
let endpoint: Server
let endpointUrl = ''
let service: RunningService
let browser: Browser

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error('Chromium is not installed: run apt-get update && apt-get install -y chromium')
  }
  kafka = new Kafka({
    clientId: uniqueName('status-layered'),
    brokers: kafkaBrokers(),
    logLevel: logLevel.NOTHING,
  })
  admin = kafka.admin()
  await admin.connect()
  await ensureControlTopic(admin, { topic: controlTopic })
  producer = kafka.producer()
  await producer.connect()
  await publishControlChange(
    producer,
    {
      type: 'snapshot',
      version: 1,
      default: parseRate('50/s'),
      overrides: new Map([[PARENT, parseRate('4/s burst 1')]]),
      weights: new Map([[`${PARENT}:big-shop`, 3]]),
    },
    { topic: controlTopic },
  )
  endpoint = createServer((request, response) => {
    request.resume()
    request.on('end', () => response.writeHead(200).end())
  })
  await new Promise<void>((resolve) => endpoint.listen(0, '127.0.0.1', resolve))
  endpointUrl = `http://127.0.0.1:${(endpoint.address() as AddressInfo).port}`
  queue = new Queue(queueName, { connection: { url: redisUrl() } })
  service = await startService(
    configSchema.parse({
      http: { host: '127.0.0.1', port: 0 },
      log: { level: 'silent', pretty: 'never' },
      redis: { url: redisUrl() },
      kafka: { brokers: kafkaBrokers(), clientId: uniqueName('status-layered-worker') },
      limiter: { defaultRate: '50/s' },
      control: { source: 'kafka', topic: controlTopic },
      sources: [
        {
          kind: 'bullmq',
          queue: queueName,
          handler: 'webhook',
          concurrency: 20,
          keys: ['psp:{payload.psp}', 'psp:{payload.psp}:{merchant}'],
        },
      ],
      webhook: { client: { allowHosts: ['127.0.0.1'] }, defaultSecret: DEVELOPMENT_SECRET },
      shutdown: { deadlineMs: 5_000 },
    }),
    pino({ level: 'silent' }),
  )
  // two merchants behind the account's 4/s: far more than it lets through in the test
  await queue.addBulk(
    ['big-shop', 'small-shop'].flatMap((merchant) =>
      Array.from({ length: 60 }, (_, i) => ({
        name: 'webhook',
        data: {
          merchantId: merchant,
          eventId: `evt_${merchant}_${i}`,
          url: `${endpointUrl}/hooks/${merchant}`,
          payload: { psp: 'acme', i },
        },
        opts: { removeOnComplete: true },
      })),
    ),
  )
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS })
})

afterAll(async () => {
  await browser?.close()
  await service?.stop()
  await new Promise<void>((resolve) => {
    if (endpoint === undefined) return resolve()
    endpoint.close(() => resolve())
    endpoint.closeAllConnections()
  })
  await queue?.obliterate({ force: true })
  await queue?.close()
  await producer?.disconnect()
  await admin?.deleteTopics({ topics: [controlTopic] }).catch(() => undefined)
  await admin?.disconnect()
})

async function openPage(): Promise<{ page: Page; consoleErrors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 })
  const consoleErrors: string[] = []
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text())
  })
  page.on('pageerror', (error) => consoleErrors.push(error.message))
  await page.goto(`${service.url}/`)
  return { page, consoleErrors }
}

describe('status page with layered keys', () => {
  it('lists the parent with its rate and its children, and says what holds each waiting merchant', async () => {
    const { page, consoleErrors } = await openPage()
    const parentRow = page.locator(`#parents tbody tr.parent[data-parent="${PARENT}"]`)
    await expect.poll(() => parentRow.count(), { timeout: 15_000 }).toBe(1)
    expect(await page.locator('#parents-panel').isVisible()).toBe(true)
    expect(await parentRow.locator('td').nth(1).textContent()).toBe('4/s burst 1')
    const child = (merchant: string) =>
      page.locator(`#parents tbody tr.child[data-child="${PARENT}:${merchant}"]`)
    await expect.poll(() => child('small-shop').count(), { timeout: 10_000 }).toBe(1)
    expect(await child('big-shop').locator('td').nth(1).textContent()).toBe('weight 3')
    expect(await child('small-shop').locator('td').nth(1).textContent()).toBe('weight 1')
    await expect
      .poll(() => child('big-shop').locator('td').nth(3).textContent(), { timeout: 10_000 })
      .toBe('backlogged')

    // each waiting merchant's row names the account as what holds it
    for (const merchant of ['big-shop', 'small-shop']) {
      const binding = page.locator(`#merchants tbody tr[data-merchant="${merchant}"] .binding`)
      await expect.poll(() => binding.count(), { timeout: 10_000 }).toBe(1)
      expect(await binding.textContent()).toMatch(new RegExp(`^held by (parent|its share of) ${PARENT}$`))
      expect(await binding.getAttribute('title')).toContain(`limit keys ${PARENT} › ${PARENT}:${merchant}`)
    }
    // the row's rate is the merchant's innermost limit key's: the default, 50/s
    expect(
      await page.locator('#merchants tbody tr[data-merchant="big-shop"] td.rate').textContent(),
    ).toContain('50/s')
    await page.screenshot({ path: SCREENSHOT, fullPage: true })
    expect(consoleErrors).toEqual([])
    await page.close()
  })

  it('fails a job whose data cannot fill a template, naming template and field, and draws no parent for it', async () => {
    const job = await queue.add('webhook', {
      merchantId: 'odd-shop',
      eventId: 'evt_odd',
      url: `${endpointUrl}/hooks/odd`,
      payload: { psp: '<b>x</b>' },
    })
    await expect.poll(async () => (await job.getState()) === 'failed', { timeout: 10_000 }).toBe(true)
    const failed = await queue.getJob(job.id!)
    expect(failed?.failedReason).toContain("key template 'psp:{payload.psp}' field 'payload.psp'")
    const { page, consoleErrors } = await openPage()
    await expect.poll(() => page.locator('#parents tbody tr.parent').count(), { timeout: 10_000 }).toBe(1)
    expect(await page.locator('#parents b, #merchants b').count()).toBe(0)
    expect(consoleErrors).toEqual([])
    await page.close()
  })
})
