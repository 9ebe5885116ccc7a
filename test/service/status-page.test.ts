import { readFileSync } from 'node:fs'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { type RunningHttpServer, startHttpServer } from '../../src/service/http.js'
import { STATUS_PAGE_CSP, STATUS_PAGE_DIR, statusPageRoutes } from '../../src/service/status-page.js'

const servers: RunningHttpServer[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()))
})

async function start(authToken?: string) {
  const server = await startHttpServer({
    host: '127.0.0.1',
    port: 0,
    authToken,
    registry: new Registry(),
    readiness: () => ({ ready: true, checks: {} }),
    status: () => ({ merchants: [] }),
    publicRoutes: statusPageRoutes(),
    logger: pino({ level: 'silent' }),
  })
  servers.push(server)
  return server
}

const pageHtml = readFileSync(`${STATUS_PAGE_DIR}index.html`, 'utf8')

/** referencesOf lists the src and href attributes of the page's markup. */
function referencesOf(html: string): string[] {
  return [...html.matchAll(/\s(?:src|href)="([^"]*)"/g)].map((match) => match[1]!)
}

describe('statusPageRoutes', () => {
  it('serves the page, its script and styles, and uPlot, each with its type and the CSP', async () => {
    const { url } = await start()
    const expected: Array<[string, RegExp]> = [
      ['/', /^text\/html/],
      ['/assets/status-page.js', /^text\/javascript/],
      ['/assets/status-page.css', /^text\/css/],
      ['/assets/uPlot.iife.min.js', /^text\/javascript/],
      ['/assets/uPlot.min.css', /^text\/css/],
    ]
    for (const [path, type] of expected) {
      const response = await fetch(`${url}${path}`)
      expect(response.status, path).toBe(200)
      expect(response.headers.get('content-type'), path).toMatch(type)
      expect(response.headers.get('content-security-policy'), path).toBe(STATUS_PAGE_CSP)
      expect(response.headers.get('x-content-type-options'), path).toBe('nosniff')
      expect(response.headers.get('referrer-policy'), path).toBe('no-referrer')
      expect((await response.text()).length, path).toBeGreaterThan(100)
    }
    expect(await (await fetch(`${url}/assets/uPlot.iife.min.js`)).text()).toContain('uPlot')
  })

  it('serves the page without the token, while /status.json and /metrics still need it', async () => {
    const { url } = await start('page-token-0123')
    expect((await fetch(`${url}/?token=page-token-0123`)).status).toBe(200)
    expect((await fetch(`${url}/assets/status-page.js`)).status).toBe(200)
    expect((await fetch(`${url}/status.json`)).status).toBe(401)
    expect((await fetch(`${url}/metrics`)).status).toBe(401)
    const authorized = await fetch(`${url}/status.json`, {
      headers: { authorization: 'Bearer page-token-0123' },
    })
    expect(authorized.status).toBe(200)
  })

  it('never echoes the token given in the address into the page', async () => {
    const { url } = await start('page-token-0123')
    expect(await (await fetch(`${url}/?token=page-token-0123`)).text()).not.toContain('page-token-0123')
  })

  it('answers HEAD with the headers alone', async () => {
    const { url } = await start()
    const response = await fetch(`${url}/`, { method: 'HEAD' })
    expect(response.status).toBe(200)
    expect(Number(response.headers.get('content-length'))).toBeGreaterThan(0)
    expect(await response.text()).toBe('')
  })

  it('refers only to its own routes: nothing is loaded from the internet', () => {
    const routes = statusPageRoutes()
    const references = referencesOf(pageHtml)
    expect(references.length).toBeGreaterThanOrEqual(4)
    for (const reference of references) {
      if (reference.startsWith('data:')) continue
      expect(Object.keys(routes), reference).toContain(reference)
    }
    for (const file of ['status-page.js', 'status-page.css']) {
      expect(readFileSync(`${STATUS_PAGE_DIR}${file}`, 'utf8'), file).not.toMatch(/https?:\/\/|@import|url\(/)
    }
  })

  it('writes outside text into the page as text, never as markup', () => {
    const script = readFileSync(`${STATUS_PAGE_DIR}status-page.js`, 'utf8')
    expect(script).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/)
    expect(script).toContain('textContent')
  })
})
