import { once } from 'node:events'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { Writable } from 'node:stream'
import { type Logger, pino } from 'pino'
import type { Resolver } from '../../src/handlers/index.js'

/** ReceivedRequest is what a test server saw of one request. */
export interface ReceivedRequest {
  method: string
  path: string
  headers: http.IncomingHttpHeaders
  body: string
}

/** TestServer is a node:http server on one loopback address that counts its connections. */
export interface TestServer {
  readonly host: string
  readonly port: number
  /** origin is `http://host:port`. */
  readonly origin: string
  /** connections counts TCP connections accepted since start. */
  connections(): number
  readonly requests: ReceivedRequest[]
  /** sockets are every socket accepted, to watch them close. */
  readonly sockets: Socket[]
  close(): Promise<void>
}

type Route = (request: IncomingMessage, response: ServerResponse, body: string) => void

/**
 * startServer listens on `host` (a loopback address: 127.0.0.0/8 or ::1) and answers with
 * `route`, after reading the request body. Only loopback: tests never reach anywhere else.
 */
export async function startServer(
  host: string,
  route: Route = (_, response) => response.end('ok'),
): Promise<TestServer> {
  if (!(host.startsWith('127.') || host === '::1'))
    throw new Error(`test servers listen on loopback only, got ${host}`)
  const requests: ReceivedRequest[] = []
  const sockets: Socket[] = []
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      requests.push({ method: request.method ?? '', path: request.url ?? '', headers: request.headers, body })
      route(request, response, body)
    })
  })
  server.on('connection', (socket) => sockets.push(socket))
  server.listen(0, host)
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  const origin = host.includes(':') ? `http://[${host}]:${port}` : `http://${host}:${port}`
  return {
    host,
    port,
    origin,
    connections: () => sockets.length,
    requests,
    sockets,
    async close() {
      for (const socket of sockets) socket.destroy()
      server.close()
      await once(server, 'close')
    },
  }
}

/** closedPort returns a port on 127.0.0.1 that nothing listens on (a server bound it, then closed). */
export async function closedPort(): Promise<number> {
  const server = http.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

/**
 * testResolver maps host names to loopback addresses, as DNS would, and counts lookups.
 * A name it does not know fails as ENOTFOUND; it never asks real DNS.
 */
export function testResolver(
  names: Record<string, string[] | (() => string[])>,
): Resolver & { calls: string[] } {
  const calls: string[] = []
  const resolve = async (hostname: string) => {
    calls.push(hostname)
    const entry = names[hostname]
    if (entry === undefined)
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' })
    const addresses = typeof entry === 'function' ? entry() : entry
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))
  }
  return Object.assign(resolve, { calls })
}

/** capturedLogger is a pino logger at trace level writing into `lines`, to inspect what was logged. */
export function capturedLogger(): { logger: Logger; text: () => string } {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(chunk.toString('utf8'))
      callback()
    },
  })
  return { logger: pino({ level: 'trace' }, stream), text: () => lines.join('') }
}
