import { pino } from 'pino'
import { type Browser, chromium } from 'playwright-core'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FakeClock, KeyedLimiter } from '../../src/limiter/index.js'
import { ActivityTracker } from '../../src/service/activity.js'
import { type RunningHttpServer, startHttpServer } from '../../src/service/http.js'
import { buildStatus, type StatusParts } from '../../src/service/status.js'
import { statusPageRoutes } from '../../src/service/status-page.js'
import { NO_BACKLOG } from '../support/backlog.js'

// The status page in a real browser (Debian's Chromium), fed a status built by buildStatus
// from hand-made readings: a merchant whose every job failed with 410 shows as failing,
// with its failures, its dead letters and the reason, never as idle.

describe('status page: failures and dead letters', () => {
  let browser: Browser
  let server: RunningHttpServer

  beforeAll(async () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '3/2s', clock })
    const activity = new ActivityTracker(clock)
    activity.delivered('fine')
    activity.failed('gone', 'client-error (HTTP 410)', true)
    activity.failed('gone', 'client-error (HTTP 410)', true)
    const parts = (): StatusParts => ({
      nowMs: Date.now(),
      startedAtMs: Date.now() - 60_000,
      readiness: { ready: true, checks: { control: true } },
      limiter,
      inFlight: { capOf: () => Number.POSITIVE_INFINITY, count: () => 0, size: 0, defaultCapValue: Infinity },
      breakers: {
        view: () => ({ state: 'closed', recentFailures: 0, openings: 0, retryInMs: 0 }),
        stats: () => ({ open: 0, halfOpen: 0, refused: 0 }),
        notClosed: () => [],
      },
      activity: activity.snapshot(),
      control: {
        source: 'file',
        caughtUp: true,
        stats: { applied: 1, stale: 0, rejected: 0 },
        table: {
          default: undefined,
          overrides: [],
          weights: [],
          snapshotVersion: undefined,
          lastChangeAtMs: undefined,
        },
        recentChanges: [],
        recentRejections: [],
      },
      sources: [{ kind: 'bullmq', name: 'webhooks', concurrency: 50, backlog: () => NO_BACKLOG }],
    })
    server = await startHttpServer({
      host: '127.0.0.1',
      port: 0,
      registry: new Registry(),
      readiness: () => ({ ready: true, checks: {} }),
      status: () => buildStatus(parts()),
      publicRoutes: statusPageRoutes(),
      logger: pino({ level: 'silent' }),
    })
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox'],
    })
  })

  afterAll(async () => {
    await browser?.close()
    await server?.close()
  })

  it('shows the merchant whose jobs all failed with 410 as failing, with its dead letters and reason', async () => {
    const page = await browser.newPage()
    const errors: string[] = []
    page.on('pageerror', (error) => errors.push(error.message))
    await page.goto(`${server.url}/`)
    const row = page.locator('#merchants tbody tr[data-merchant="gone"]')
    await expect.poll(() => row.count(), { timeout: 10_000 }).toBe(1)
    expect(await row.locator('td').nth(1).textContent()).toBe('failing')
    const failures = await row.locator('td.failures').textContent()
    expect(failures).toContain('2 · 2')
    expect(failures).toContain('client-error (HTTP 410)')
    const fine = page.locator('#merchants tbody tr[data-merchant="fine"]')
    expect(await fine.locator('td').nth(1).textContent()).toBe('flowing')
    expect(await fine.locator('td.failures').textContent()).toBe('0 · 0')
    expect(errors).toEqual([])
  })
})
