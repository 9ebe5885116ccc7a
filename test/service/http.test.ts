import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { type RunningHttpServer, startHttpServer } from '../../src/service/http.js'

const servers: RunningHttpServer[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()))
})

async function start(options: { authToken?: string; ready?: boolean } = {}) {
  const server = await startHttpServer({
    host: '127.0.0.1',
    port: 0,
    authToken: options.authToken,
    registry: new Registry(),
    readiness: () => ({ ready: options.ready ?? true, checks: { control: options.ready ?? true } }),
    status: () => ({ merchants: [] }),
    routes: {
      '/extra': (_request, response) => {
        response.end('extra')
      },
    },
    logger: pino({ level: 'silent' }),
  })
  servers.push(server)
  return server
}

describe('startHttpServer', () => {
  it('answers the probes, metrics, status and extra routes', async () => {
    const { url } = await start()
    expect((await fetch(`${url}/healthz`)).status).toBe(200)
    expect(await (await fetch(`${url}/readyz`)).json()).toEqual({ ready: true, checks: { control: true } })
    const metrics = await fetch(`${url}/metrics`)
    expect(metrics.headers.get('content-type')).toMatch(/text\/plain/)
    expect(await (await fetch(`${url}/status.json`)).json()).toEqual({ merchants: [] })
    expect(await (await fetch(`${url}/extra`)).text()).toBe('extra')
    expect((await fetch(`${url}/nope`)).status).toBe(404)
    expect((await fetch(`${url}/healthz`, { method: 'POST' })).status).toBe(405)
  })

  it('reports not ready with 503 and the failing check', async () => {
    const { url } = await start({ ready: false })
    const response = await fetch(`${url}/readyz`)
    expect(response.status).toBe(503)
    expect(await response.json()).toEqual({ ready: false, checks: { control: false } })
  })

  it('requires the bearer token on everything but the probes when one is set', async () => {
    const { url } = await start({ authToken: 's3cret-token' })
    expect((await fetch(`${url}/healthz`)).status).toBe(200)
    expect((await fetch(`${url}/readyz`)).status).toBe(200)
    for (const path of ['/metrics', '/status.json', '/extra']) {
      expect((await fetch(`${url}${path}`)).status).toBe(401)
      expect((await fetch(`${url}${path}`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401)
      expect(
        (await fetch(`${url}${path}`, { headers: { authorization: 'Bearer s3cret-token' } })).status,
      ).toBe(200)
    }
  })
})
