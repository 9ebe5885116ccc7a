import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

// Issue 16: the image ran with the development secret and allowlist, listened on 127.0.0.1 inside
// the container (so -p 8080:8080 reached nothing), had no HEALTHCHECK and a Node 20 base. There is
// no Docker engine in CI: the Dockerfile is read, and its health check command is run here.
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8').replaceAll('\\\n', ' ')
const instructions = dockerfile.split('\n').filter((line) => /^[A-Z]+ /.test(line))

/** healthCheck runs the HEALTHCHECK's exec form against a server answering `status` on /readyz. */
async function healthCheck(status: number): Promise<{ code: number | null; path: string | undefined }> {
  let path: string | undefined
  const server = createServer((request, response) => {
    path = request.url
    response.statusCode = status
    response.end()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const line = instructions.find((i) => i.startsWith('HEALTHCHECK '))!
  const [command, ...args] = JSON.parse(line.slice(line.indexOf('CMD ') + 4)) as string[]
  expect(command).toBe('node')
  const child = spawn(process.execPath, args, {
    env: { ...process.env, MT_HTTP_PORT: String((server.address() as AddressInfo).port) },
  })
  const [code] = await once(child, 'exit')
  server.close()
  return { code: code as number | null, path }
}

describe('Dockerfile', () => {
  it('builds and runs on the Node LTS image, in both stages', () => {
    const from = instructions.filter((i) => i.startsWith('FROM '))
    expect(from).toEqual(['FROM node:26-slim AS build', 'FROM node:26-slim'])
  })

  it('runs in production and listens on every interface of the container, through the environment', () => {
    const run = dockerfile.slice(dockerfile.lastIndexOf('FROM '))
    expect(run).toMatch(/ENV[^\n]*NODE_ENV=production/)
    expect(run).toMatch(/ENV[^\n]*MT_HTTP_HOST=0\.0\.0\.0/)
    expect(run).toMatch(/EXPOSE 8080/)
  })

  it('checks health on /readyz with node itself: healthy on 200 only', async () => {
    expect(instructions.find((i) => i.startsWith('HEALTHCHECK '))).not.toMatch(/curl|wget/)
    expect(await healthCheck(200)).toEqual({ code: 0, path: '/readyz' })
    expect(await healthCheck(503)).toEqual({ code: 1, path: '/readyz' })
  })

  it('runs the worker as the unprivileged node user, node as PID 1 for SIGTERM', () => {
    expect(instructions).toContain('USER node')
    expect(instructions.at(-1)).toBe('CMD ["node", "dist/service/main.js"]')
  })
})
