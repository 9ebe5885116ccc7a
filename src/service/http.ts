import { timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'

/** Readiness is what /readyz reports: ready only when every check passes. */
export interface Readiness {
  ready: boolean
  checks: Record<string, boolean>
}

/** ExtraRoute serves a path the service adds (the status page and its assets). */
export type ExtraRoute = (request: IncomingMessage, response: ServerResponse) => void | Promise<void>

/** HttpServerOptions wire the endpoints to the service. */
export interface HttpServerOptions {
  host: string
  port: number
  /** authToken, when set, is required as `Authorization: Bearer …` on everything but the probes. */
  authToken?: string | undefined
  registry: Registry
  readiness: () => Readiness
  status: () => unknown
  routes?: Readonly<Record<string, ExtraRoute>>
  /**
   * publicRoutes are served without the token: only content that carries no data (the
   * status page's shell and assets, which read /status.json with the token themselves).
   */
  publicRoutes?: Readonly<Record<string, ExtraRoute>>
  logger: Logger
}

/** RunningHttpServer is the started server and the address it listens on. */
export interface RunningHttpServer {
  server: Server
  url: string
  close(): Promise<void>
}

/**
 * startHttpServer serves /healthz (the process is up), /readyz (queues connected, rates
 * caught up), /metrics (Prometheus), /status.json and any extra routes.
 */
export async function startHttpServer(options: HttpServerOptions): Promise<RunningHttpServer> {
  const log = options.logger.child({ component: 'http' })
  const server = createServer((request, response) => {
    handle(request, response, options).catch((error: unknown) => {
      log.error({ err: error, path: request.url }, 'request failed')
      if (!response.headersSent) send(response, 500, 'text/plain', 'internal error\n')
      else response.destroy()
    })
  })
  server.keepAliveTimeout = 5_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port, options.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address() as AddressInfo
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  const url = `http://${host}:${address.port}`
  log.info({ url }, 'http server listening')
  return {
    server,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeIdleConnections()
      }),
  }
}

async function handle(
  request: IncomingMessage,
  response: ServerResponse,
  options: HttpServerOptions,
): Promise<void> {
  const path = new URL(request.url ?? '/', 'http://localhost').pathname
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.setHeader('allow', 'GET, HEAD')
    send(response, 405, 'text/plain', 'method not allowed\n')
    return
  }
  if (path === '/healthz') {
    send(response, 200, 'application/json', '{"status":"ok"}\n')
    return
  }
  if (path === '/readyz') {
    const readiness = options.readiness()
    send(response, readiness.ready ? 200 : 503, 'application/json', `${JSON.stringify(readiness)}\n`)
    return
  }
  const publicRoute = options.publicRoutes?.[path]
  if (publicRoute !== undefined) {
    await publicRoute(request, response)
    return
  }
  if (!authorized(request, options.authToken)) {
    response.setHeader('www-authenticate', 'Bearer')
    send(response, 401, 'text/plain', 'unauthorized\n')
    return
  }
  if (path === '/metrics') {
    send(response, 200, options.registry.contentType, await options.registry.metrics())
    return
  }
  if (path === '/status.json') {
    response.setHeader('cache-control', 'no-store')
    send(response, 200, 'application/json', `${JSON.stringify(options.status())}\n`)
    return
  }
  const route = options.routes?.[path]
  if (route !== undefined) {
    await route(request, response)
    return
  }
  send(response, 404, 'text/plain', 'not found\n')
}

function authorized(request: IncomingMessage, token: string | undefined): boolean {
  if (token === undefined) return true
  const header = request.headers.authorization ?? ''
  const presented = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '')
  const expected = Buffer.from(token)
  return presented.length === expected.length && timingSafeEqual(presented, expected)
}

function send(response: ServerResponse, status: number, contentType: string, body: string): void {
  response.statusCode = status
  response.setHeader('content-type', contentType)
  response.end(body)
}
