import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import https from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HttpClient, type HttpResult } from '../../src/handlers/index.js'
import { closedPort, startServer, type TestServer, testResolver } from './support.js'

// Every connection in this file stays on loopback: 127.0.0.1 is the allowed merchant;
// 127.0.0.2, .3 and .4 are the "internal" targets, with listeners that must see nothing.

const TIMEOUT_MS = 600
const CAP = 64 * 1024

let allowed: TestServer
let internal2: TestServer
let internal3: TestServer
let internal4: TestServer
const resolve = testResolver({
  'merchant.test': ['127.0.0.1'],
  'internal.test': ['127.0.0.3'],
  'mixed.test': ['127.0.0.1', '127.0.0.3'],
})
let client: HttpClient

beforeAll(async () => {
  internal2 = await startServer('127.0.0.2')
  internal3 = await startServer('127.0.0.3')
  internal4 = await startServer('127.0.0.4')
  allowed = await startServer('127.0.0.1', (request, response) => {
    const path = request.url ?? '/'
    if (path === '/ok') return void response.end('fine')
    if (path === '/redirect-internal') {
      response.writeHead(302, { location: `${internal4.origin}/` })
      return void response.end()
    }
    if (path === '/redirect-internal-name') {
      response.writeHead(307, { location: `http://internal.test:${internal3.port}/` })
      return void response.end()
    }
    if (path === '/redirect-allowed') {
      response.writeHead(301, { location: '/ok' })
      return void response.end()
    }
    if (path === '/silent') return // never answers
    if (path === '/ten-mb') return void streamBytes(response, 10 * 1024 * 1024)
    if (path === '/endless') return void streamBytes(response, Number.POSITIVE_INFINITY)
    if (path === '/trickle') return void trickle(response)
    if (path === '/huge-headers') {
      response.setHeader('x-filler', 'x'.repeat(32 * 1024))
      return void response.end()
    }
    response.statusCode = 404
    response.end()
  })
  client = new HttpClient({ allowHosts: ['127.0.0.1'], httpsOnly: false, resolve, timeoutMs: TIMEOUT_MS })
})

afterAll(async () => {
  await client.close()
  for (const server of [allowed, internal2, internal3, internal4]) await server.close()
})

/** streamBytes writes `total` bytes in 64 KiB chunks, respecting backpressure, until done or the socket closes. */
function streamBytes(response: import('node:http').ServerResponse, total: number): void {
  const chunk = Buffer.alloc(64 * 1024, 0x61)
  let sent = 0
  response.writeHead(200, { 'content-type': 'application/octet-stream' })
  const pump = () => {
    while (sent < total && !response.destroyed) {
      sent += chunk.length
      if (!response.write(chunk)) return void response.once('drain', pump)
    }
    if (!response.destroyed) response.end()
  }
  pump()
}

/** trickle sends 10 bytes every 50 ms, forever (until the socket closes). */
function trickle(response: import('node:http').ServerResponse): void {
  response.writeHead(200, { 'content-type': 'text/plain' })
  const timer = setInterval(() => response.write('0123456789'), 50)
  response.on('close', () => clearInterval(timer))
}

const get = (url: string, signal?: AbortSignal) => client.send({ url, method: 'GET', headers: {} }, signal)

function expectResponse(result: HttpResult) {
  if (result.kind !== 'response') throw new Error(`expected a response, got ${JSON.stringify(result)}`)
  return result
}

describe('SSRF guard end to end, with an allowlist of 127.0.0.1 only', () => {
  it('refuses a job aimed at 127.0.0.2 before connecting', async () => {
    const result = await get(`${internal2.origin}/`)
    expect(result).toMatchObject({ kind: 'refused', refusal: { reason: 'loopback', address: '127.0.0.2' } })
  })

  it('refuses [::1], with a listener there that sees nothing', async () => {
    const v6 = await startServer('::1')
    try {
      const result = await get(`${v6.origin}/`)
      expect(result).toMatchObject({ kind: 'refused', refusal: { reason: 'loopback', address: '::1' } })
      expect(v6.connections()).toBe(0)
    } finally {
      await v6.close()
    }
  })

  it('refuses a host name that resolves to 127.0.0.3, at the lookup the connector makes', async () => {
    const result = await get(`http://internal.test:${internal3.port}/`)
    expect(result).toMatchObject({
      kind: 'refused',
      refusal: { reason: 'loopback', host: 'internal.test', address: '127.0.0.3' },
    })
  })

  it('refuses a name with one allowed and one refused address', async () => {
    const result = await get(`http://mixed.test:${internal3.port}/`)
    expect(result).toMatchObject({ kind: 'refused', refusal: { address: '127.0.0.3' } })
  })

  it('does not follow a redirect from the allowed host to 127.0.0.4, and marks it refused', async () => {
    const result = expectResponse(await get(`${allowed.origin}/redirect-internal`))
    expect(result.status).toBe(302)
    expect(result.redirectRefusal).toMatchObject({ reason: 'loopback', address: '127.0.0.4' })
  })

  it('checks a redirect to a host name through the resolver, without connecting', async () => {
    const result = expectResponse(await get(`${allowed.origin}/redirect-internal-name`))
    expect(result.redirectRefusal).toMatchObject({ host: 'internal.test', address: '127.0.0.3' })
  })

  it('does not follow even a redirect to an allowed target', async () => {
    const before = allowed.requests.filter((request) => request.path === '/ok').length
    const result = expectResponse(await get(`${allowed.origin}/redirect-allowed`))
    expect(result.status).toBe(301)
    expect(result.redirectRefusal).toBeUndefined()
    expect(allowed.requests.filter((request) => request.path === '/ok').length).toBe(before)
  })

  it('refuses plain http when https is required, even to an allowlisted address', async () => {
    const strict = new HttpClient({ allowHosts: ['127.0.0.1'], resolve })
    const connectionsBefore = allowed.connections()
    const result = await strict.send({ url: `${allowed.origin}/ok`, method: 'GET', headers: {} })
    await strict.close()
    expect(result).toMatchObject({ kind: 'refused', refusal: { reason: 'https-required' } })
    expect(allowed.connections()).toBe(connectionsBefore)
  })

  it('connects to the address it checked, resolving once per connection (no second lookup to rebind)', async () => {
    let answers = 0
    // A rebinding name: 127.0.0.1 (allowed) the first time, 127.0.0.3 every time after.
    const rebinding = testResolver({ 'rebind.test': () => (answers++ === 0 ? ['127.0.0.1'] : ['127.0.0.3']) })
    const send = async () => {
      const fresh = new HttpClient({ allowHosts: ['127.0.0.1'], httpsOnly: false, resolve: rebinding })
      try {
        return await fresh.send({ url: `http://rebind.test:${allowed.port}/ok`, method: 'GET', headers: {} })
      } finally {
        await fresh.close()
      }
    }
    const connectionsBefore = allowed.connections()
    expect(await send()).toMatchObject({ kind: 'response', status: 200 })
    expect(rebinding.calls).toEqual(['rebind.test']) // one lookup, checked, and connected to
    expect(allowed.connections()).toBe(connectionsBefore + 1)
    // The next connection looks up again, gets the rebound answer, and is refused.
    expect(await send()).toMatchObject({ kind: 'refused', refusal: { address: '127.0.0.3' } })
    expect(rebinding.calls).toEqual(['rebind.test', 'rebind.test'])
  })

  it('left the listeners on 127.0.0.2, .3 and .4 without a single connection', () => {
    expect([internal2.connections(), internal3.connections(), internal4.connections()]).toEqual([0, 0, 0])
  })
})

describe('HttpClient limits', () => {
  it('reuses a kept-alive connection for consecutive requests', async () => {
    // One connection per origin makes the count exact; with more, undici's pool may open a
    // second socket when a request comes before the first socket reports itself free.
    const reuse = new HttpClient({ allowHosts: ['127.0.0.1'], httpsOnly: false, connectionsPerOrigin: 1 })
    const before = allowed.connections()
    for (let i = 0; i < 3; i++) {
      expect(await reuse.send({ url: `${allowed.origin}/ok`, method: 'GET', headers: {} })).toMatchObject({
        status: 200,
      })
    }
    await reuse.close()
    expect(allowed.connections()).toBe(before + 1)
  })

  it('reads 64 KiB of a 10 MB body, closes that connection, and keeps memory bounded', async () => {
    const fresh = new HttpClient({ allowHosts: ['127.0.0.1'], httpsOnly: false, timeoutMs: TIMEOUT_MS })
    const before = process.memoryUsage()
    const socketsBefore = allowed.sockets.length
    const result = expectResponse(
      await fresh.send({ url: `${allowed.origin}/ten-mb`, method: 'GET', headers: {} }),
    )
    const after = process.memoryUsage()
    // The socket was destroyed rather than drained into the pool: the server sees it close
    // while the client still runs (closing the client would close an idle socket too).
    const socket = allowed.sockets[socketsBefore] as Socket
    const closed =
      socket.destroyed ||
      (await Promise.race([
        new Promise<boolean>((resolveClose) => socket.once('close', () => resolveClose(true))),
        sleep(2_000).then(() => false),
      ]))
    await fresh.close()
    expect(closed).toBe(true)
    expect(result.status).toBe(200)
    expect(result.body.length).toBe(CAP)
    expect(result.bodyComplete).toBe(false)
    const grownBytes = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers)
    expect(grownBytes).toBeLessThan(8 * 1024 * 1024) // loose: far below the 10 MB sent
  })

  it('stops an endless body at the cap', async () => {
    const result = expectResponse(await get(`${allowed.origin}/endless`))
    expect(result.body.length).toBe(CAP)
    expect(result.bodyComplete).toBe(false)
  })

  it('ends a slow endless body at the total timeout, keeping what it read', async () => {
    const result = expectResponse(await get(`${allowed.origin}/trickle`))
    expect(result.status).toBe(200)
    expect(result.bodyComplete).toBe(false)
    expect(result.body.length).toBeGreaterThan(0)
    expect(result.body.length).toBeLessThan(CAP)
    expect(result.durationMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 20)
    expect(result.durationMs).toBeLessThan(TIMEOUT_MS + 2_000)
  })

  it('gives up on a server that never answers at the total timeout', async () => {
    const result = await get(`${allowed.origin}/silent`)
    expect(result).toMatchObject({ kind: 'failed', reason: 'timeout' })
    expect(result.durationMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 20)
  })

  it('bounds the connect, DNS lookup included, by the connect timeout', async () => {
    const hanging = new HttpClient({
      allowHosts: ['127.0.0.1'],
      httpsOnly: false,
      connectTimeoutMs: 200,
      timeoutMs: 5_000,
      resolve: () => new Promise(() => {}), // a lookup that never answers
    })
    const result = await hanging.send({ url: 'http://slow-dns.test/', method: 'GET', headers: {} })
    await hanging.close()
    expect(result).toMatchObject({ kind: 'failed', reason: 'timeout' })
    expect(result.durationMs).toBeLessThan(4_000)
  })

  it('reports a refused connection on a closed port', async () => {
    const port = await closedPort()
    expect(await get(`http://127.0.0.1:${port}/`)).toMatchObject({
      kind: 'failed',
      reason: 'connection-error',
    })
  })

  it('refuses response headers past the cap', async () => {
    expect(await get(`${allowed.origin}/huge-headers`)).toMatchObject({
      kind: 'failed',
      reason: 'protocol-error',
    })
  })

  it('stops when the caller aborts', async () => {
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 50)
    expect(await get(`${allowed.origin}/silent`, controller.signal)).toMatchObject({
      kind: 'failed',
      reason: 'aborted',
    })
  })

  it('reads no body at all with maxResponseBytes 0', async () => {
    const none = new HttpClient({ allowHosts: ['127.0.0.1'], httpsOnly: false, maxResponseBytes: 0 })
    const result = expectResponse(
      await none.send({ url: `${allowed.origin}/ok`, method: 'GET', headers: {} }),
    )
    await none.close()
    expect(result).toMatchObject({ status: 200, bodyComplete: false })
    expect(result.body.length).toBe(0)
  })

  it.each([
    [{ timeoutMs: 0 }],
    [{ connectTimeoutMs: -1 }],
    [{ maxResponseBytes: 1.5 }],
    [{ allowHosts: ['10.0.0.0/99'] }],
  ])('throws TypeError on %j', (options) => {
    expect(() => new HttpClient(options)).toThrow(TypeError)
  })
})

describe('HTTPS through the guard', () => {
  it('connects to the checked address and still verifies the certificate and SNI against the host name', async () => {
    const key = readFileSync(new URL('./fixtures/merchant.test.key', import.meta.url))
    const cert = readFileSync(new URL('./fixtures/merchant.test.crt', import.meta.url))
    const servernames: string[] = []
    const server = https.createServer({ key, cert }, (_request, response) => response.end('secure'))
    server.on('secureConnection', (socket) => servernames.push(String(socket.servername)))
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const { port } = server.address() as AddressInfo
    const tlsClient = new HttpClient({ allowHosts: ['127.0.0.1'], resolve, ca: cert })
    try {
      const result = expectResponse(
        await tlsClient.send({ url: `https://merchant.test:${port}/`, method: 'GET', headers: {} }),
      )
      expect(result.body.toString()).toBe('secure')
      expect(servernames).toEqual(['merchant.test'])
      // The certificate names merchant.test, not 127.0.0.1: the host name is what is verified.
      const byAddress = await tlsClient.send({
        url: `https://127.0.0.1:${port}/`,
        method: 'GET',
        headers: {},
      })
      expect(byAddress).toMatchObject({ kind: 'failed', reason: 'connection-error' })
      expect((byAddress as { message: string }).message).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list/)
    } finally {
      await tlsClient.close()
      server.closeAllConnections()
      server.close()
    }
  })
})
