import { existsSync, mkdirSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
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

// The status page in a real browser (Debian's Chromium driven by playwright-core) against a
// real worker: BullMQ on the run's Redis, rate changes on a control topic of the run's Kafka,
// webhooks delivered to a local endpoint that plays the merchants. It saves the README's
// screenshot, docs/status-page.png.

const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
]
const SCREENSHOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'status-page.png')
const TOKEN = 'status-page-test-token-0123456789'
const TICK_MS = 100

/** Hot merchants send more than their rate, or close to it. */
const HOT = [
  { merchant: 'acme-store', rate: '20/s', offeredPerSec: 26 },
  { merchant: 'globex-shop', rate: '12/s', offeredPerSec: 14 },
  { merchant: 'initech-pay', rate: '10/s', offeredPerSec: 8 },
]
/** OVERLOAD: initech-pay answers 429 for a second, soon after the traffic starts; the worker backs off. */
const OVERLOAD = { merchant: 'initech-pay', fromS: 3, toS: 4 }
const QUIET = Array.from({ length: 12 }, (_, i) => ({
  merchant: `m-${1001 + i}`,
  offeredPerSec: 2 / (1 + i * 0.5),
}))

const queueName = uniqueName('status-page')
const controlTopic = uniqueName('status-page-control')
let kafka: Kafka
let admin: Admin
let producer: Producer
let queue: Queue
let endpoint: Server
let endpointUrl = ''
let service: RunningService
let browser: Browser
let stopTraffic: () => Promise<void> = async () => {}
let trafficStartedAtMs = Number.POSITIVE_INFINITY

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error('Chromium is not installed: run apt-get update && apt-get install -y chromium')
  }
  kafka = new Kafka({
    clientId: uniqueName('status-page'),
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
      default: parseRate('5/s'),
      overrides: new Map(HOT.map((h) => [h.merchant, parseRate(h.rate)])),
    },
    { topic: controlTopic },
  )

  endpoint = createServer((request, response) => {
    request.resume()
    request.on('end', () => {
      const merchant = (request.url ?? '').split('/').pop() ?? ''
      const sinceTrafficS = (performance.now() - trafficStartedAtMs) / 1_000
      if (merchant === OVERLOAD.merchant && sinceTrafficS >= OVERLOAD.fromS && sinceTrafficS < OVERLOAD.toS) {
        response.writeHead(429, { 'retry-after': '2' }).end()
        return
      }
      setTimeout(() => response.writeHead(200).end(), 2 + Math.random() * 10)
    })
  })
  await new Promise<void>((resolve) => endpoint.listen(0, '127.0.0.1', resolve))
  endpointUrl = `http://127.0.0.1:${(endpoint.address() as AddressInfo).port}`

  queue = new Queue(queueName, { connection: { url: redisUrl() } })
  service = await startService(
    configSchema.parse({
      http: { host: '127.0.0.1', port: 0, authToken: TOKEN },
      log: { level: 'silent', pretty: 'never' },
      redis: { url: redisUrl() },
      kafka: { brokers: kafkaBrokers(), clientId: uniqueName('status-page-worker') },
      limiter: { defaultRate: '5/s' },
      control: { source: 'kafka', topic: controlTopic },
      sources: [{ kind: 'bullmq', queue: queueName, handler: 'webhook', concurrency: 50 }],
      webhook: { client: { allowHosts: ['127.0.0.1'] }, defaultSecret: DEVELOPMENT_SECRET },
      shutdown: { deadlineMs: 5_000 },
    }),
    pino({ level: 'silent' }),
  )
  trafficStartedAtMs = performance.now()
  stopTraffic = produceTraffic()
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // playwright gives each launch a fresh --user-data-dir of its own in the temp folder
    // (and refuses one in args): nothing is cached or remembered from an earlier run.
    args: CHROMIUM_FLAGS,
  })
})

afterAll(async () => {
  await browser?.close()
  await stopTraffic()
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

/**
 * produceTraffic adds webhook jobs every TICK_MS for the time that passed since the last tick
 * (a late timer on a loaded machine does not lower the traffic): hot merchants steadily,
 * quiet ones at random with the same average.
 */
function produceTraffic(): () => Promise<void> {
  const carry = new Map<string, number>()
  let adding: Promise<unknown> = Promise.resolve()
  let sequence = 0
  let lastTickMs = performance.now()
  const timer = setInterval(() => {
    const nowMs = performance.now()
    const elapsedS = (nowMs - lastTickMs) / 1_000
    lastTickMs = nowMs
    const jobs: Array<{ name: string; data: Record<string, unknown>; opts: Record<string, unknown> }> = []
    for (const { merchant, offeredPerSec } of [...HOT, ...QUIET]) {
      const expected = offeredPerSec * elapsedS
      let count = 0
      if (offeredPerSec >= 5) {
        const due = expected + (carry.get(merchant) ?? 0)
        count = Math.floor(due)
        carry.set(merchant, due - count)
      } else if (Math.random() < expected) {
        count = 1
      }
      for (let i = 0; i < count; i++) {
        const eventId = `evt_${++sequence}`
        jobs.push({
          name: 'webhook',
          data: {
            merchantId: merchant,
            eventId,
            url: `${endpointUrl}/hooks/${merchant}`,
            payload: { type: 'payment.succeeded', id: eventId, amount: 1_000 + (sequence % 9_000) },
          },
          opts: { removeOnComplete: true, removeOnFail: 1_000 },
        })
      }
    }
    if (jobs.length > 0) adding = adding.then(() => queue.addBulk(jobs))
  }, TICK_MS)
  return async () => {
    clearInterval(timer)
    await adding
  }
}

async function openPage(): Promise<{ page: Page; consoleErrors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 })
  const consoleErrors: string[] = []
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text())
  })
  page.on('pageerror', (error) => consoleErrors.push(error.message))
  // Anything not served by the worker (a CDN, a web font) is refused and counted as an error.
  await page.route(
    (url) => !url.href.startsWith(service.url),
    async (route) => {
      consoleErrors.push(`request outside the worker: ${route.request().url()}`)
      await route.abort()
    },
  )
  await page.goto(`${service.url}/?token=${TOKEN}`)
  return { page, consoleErrors }
}

const rowOf = (page: Page, merchant: string) =>
  page.locator(`#merchants tbody tr[data-merchant="${merchant}"]`)

describe('status page', () => {
  it('lists the merchants, shows a published rate change within 2 s, and saves the screenshot', async () => {
    const { page, consoleErrors } = await openPage()
    expect(new URL(page.url()).searchParams.has('token')).toBe(false)

    for (const { merchant } of HOT) {
      await expect.poll(() => rowOf(page, merchant).count(), { timeout: 15_000 }).toBe(1)
    }
    expect(await rowOf(page, 'acme-store').locator('td.rate').textContent()).toContain('20/s')
    expect(await rowOf(page, 'globex-shop').locator('td.rate').textContent()).toContain('12/s')
    // initech-pay's 429s lowered its rate: the page says it is backing off, by how much.
    await expect
      .poll(() => rowOf(page, 'initech-pay').locator('td').nth(1).textContent(), { timeout: 10_000 })
      .toBe('backing off')
    expect(await rowOf(page, 'initech-pay').locator('td.rate').textContent()).toContain('after 429')
    await expect
      .poll(() => page.locator('#merchants tbody tr[data-merchant^="m-"]').count(), { timeout: 15_000 })
      .toBeGreaterThanOrEqual(3)
    expect(await page.locator('#ready').textContent()).toBe('ready')

    // A fat-fingered change is refused with its reason, and the page says so.
    await producer.send({
      topic: controlTopic,
      messages: [
        {
          key: 'globex-shop',
          value: JSON.stringify({
            type: 'set',
            merchant: 'globex-shop',
            rate: { limit: 5_000_000, intervalMs: 1_000 },
            version: 2,
          }),
        },
      ],
    })
    await expect
      .poll(() => page.locator('#rejections').textContent(), { timeout: 5_000 })
      .toContain('invalid-message')

    // Let the charts fill a little before the change, so the step in the limit is visible.
    await sleep(4_000)
    await publishControlChange(
      producer,
      { type: 'set', merchant: 'acme-store', rate: parseRate('40/s'), version: 3 },
      { topic: controlTopic },
    )
    const publishedAtMs = performance.now()
    await expect
      .poll(() => rowOf(page, 'acme-store').locator('td.rate').textContent(), {
        timeout: 2_000,
        interval: 50,
      })
      .toContain('40/s')
    expect(performance.now() - publishedAtMs).toBeLessThan(2_000)
    expect(await page.locator('#changes').textContent()).toContain('set acme-store 40/s')

    // The chart of the busiest merchant shows the backlog draining at the new rate.
    await sleep(8_000)
    expect(await page.locator('.chart[data-merchant="acme-store"] canvas').count()).toBe(1)
    mkdirSync(dirname(SCREENSHOT), { recursive: true })
    await page.screenshot({ path: SCREENSHOT, fullPage: true })

    expect(consoleErrors).toEqual([])
    await page.close()
  })

  it('shows markup in a rejected control message as text, never as markup', async () => {
    const { page, consoleErrors } = await openPage()
    await producer.send({
      topic: controlTopic,
      messages: [
        {
          key: 'acme-store',
          value: JSON.stringify({
            type: 'set',
            merchant: 'acme-store',
            rate: '<img src=x onerror=window.__injected=1>',
            version: 4,
          }),
        },
      ],
    })
    await expect
      .poll(() => page.locator('#rejections').textContent(), { timeout: 5_000 })
      .toContain('<img src=x onerror=window.__injected=1>')
    expect(await page.locator('#rejections img').count()).toBe(0)
    expect(await page.evaluate('window.__injected')).toBeUndefined()
    expect(consoleErrors).toEqual([])
    await page.close()
  })

  it('asks for the token when the page is opened without one', async () => {
    const page = await browser.newPage()
    await page.goto(`${service.url}/`)
    await expect.poll(() => page.locator('#notice').textContent(), { timeout: 5_000 }).toContain('?token=')
    expect(await page.locator('#ready').textContent()).toBe('token needed')
    await page.close()
  })
})
