import { readFileSync } from 'node:fs'
import type { ServerResponse } from 'node:http'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import type { ExtraRoute } from './http.js'

/**
 * STATUS_PAGE_DIR holds the page's own files (index.html, status-page.js, status-page.css).
 * They sit next to this module: src/service/status-page/ under tsx, dist/service/status-page/
 * after `npm run build`, which copies them there.
 */
export const STATUS_PAGE_DIR = fileURLToPath(new URL('./status-page/', import.meta.url))

/**
 * STATUS_PAGE_CSP keeps the page to its own origin: scripts, styles and data come from the
 * worker, nothing from the internet, no inline script. `img-src data:` is for the empty
 * favicon, which spares the browser a request that would 404.
 */
export const STATUS_PAGE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')

interface Asset {
  file: string
  contentType: string
  /** cacheControl: the page's own files are revalidated on each load; uPlot is versioned with the package. */
  cacheControl: string
}

const require = createRequire(import.meta.url)

/**
 * statusPageRoutes serves the status page at `/` and its scripts and styles under
 * `/assets/`, read once from disk now (so a missing file stops start-up, not a request).
 * The files carry no data: the page reads /status.json every second, sending the bearer
 * token when the worker has one. They can therefore be served without the token (the
 * HTTP server's `publicRoutes`), which is what lets `/?token=…` open the page.
 */
export function statusPageRoutes(): Record<string, ExtraRoute> {
  const assets: Record<string, Asset> = {
    '/': {
      file: `${STATUS_PAGE_DIR}index.html`,
      contentType: 'text/html; charset=utf-8',
      cacheControl: 'no-cache',
    },
    '/assets/status-page.js': {
      file: `${STATUS_PAGE_DIR}status-page.js`,
      contentType: 'text/javascript; charset=utf-8',
      cacheControl: 'no-cache',
    },
    '/assets/status-page.css': {
      file: `${STATUS_PAGE_DIR}status-page.css`,
      contentType: 'text/css; charset=utf-8',
      cacheControl: 'no-cache',
    },
    '/assets/uPlot.iife.min.js': {
      file: require.resolve('uplot/dist/uPlot.iife.min.js'),
      contentType: 'text/javascript; charset=utf-8',
      cacheControl: 'public, max-age=86400',
    },
    '/assets/uPlot.min.css': {
      file: require.resolve('uplot/dist/uPlot.min.css'),
      contentType: 'text/css; charset=utf-8',
      cacheControl: 'public, max-age=86400',
    },
  }
  const routes: Record<string, ExtraRoute> = {}
  for (const [path, asset] of Object.entries(assets)) {
    const body = readFileSync(asset.file)
    routes[path] = (_request, response) => sendAsset(response, asset, body)
  }
  return routes
}

function sendAsset(response: ServerResponse, asset: Asset, body: Buffer): void {
  response.statusCode = 200
  response.setHeader('content-type', asset.contentType)
  response.setHeader('content-length', body.length)
  response.setHeader('cache-control', asset.cacheControl)
  response.setHeader('content-security-policy', STATUS_PAGE_CSP)
  response.setHeader('x-content-type-options', 'nosniff')
  // The page may be opened as /?token=…: no Referer may carry the token anywhere.
  response.setHeader('referrer-policy', 'no-referrer')
  response.end(body)
}
