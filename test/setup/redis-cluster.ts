// A private Redis Cluster of three masters on loopback ports, for tests that check the
// adapter's keys against cluster slots. Started like the private Kafka broker: by the test,
// in a temp folder, and stopped after.
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** RedisCluster is a running private cluster: its nodes' ports, and how to stop it. */
export interface RedisCluster {
  nodes: Array<{ host: string; port: number }>
  stop(): Promise<void>
}

/** freePort asks the kernel for a free loopback port whose cluster-bus port (+10000) is also below 65536. */
async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer()
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number }
        server.close(() => resolve(port))
      })
    })
    if (port + 10_000 < 65_536) return port
  }
}

/** startRedisCluster starts three cluster-mode redis-servers, joins them with `redis-cli --cluster create`, and waits for `cluster_state:ok`. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'mt-redis-cluster-'))
  const ports = [await freePort(), await freePort(), await freePort()]
  const servers: ChildProcess[] = ports.map((port) =>
    spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        join(dir, `nodes-${port}.conf`),
        '--dir',
        dir,
        '--save',
        '',
        '--appendonly',
        'no',
      ],
      { stdio: 'ignore' },
    ),
  )
  const stop = async () => {
    await Promise.all(
      servers.map(async (server) => {
        if (server.exitCode !== null || server.signalCode !== null) return
        server.kill('SIGTERM')
        await once(server, 'exit')
      }),
    )
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    for (const port of ports) await waitForPing(port)
    const addresses = ports.map((port) => `127.0.0.1:${port}`)
    await run('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'])
    for (const port of ports) await waitForClusterOk(port)
  } catch (error) {
    await stop()
    throw error
  }
  return { nodes: ports.map((port) => ({ host: '127.0.0.1', port })), stop }
}

async function waitForPing(port: number): Promise<void> {
  const deadline = performance.now() + 10_000
  for (;;) {
    try {
      const { stdout } = await run('redis-cli', ['-p', String(port), 'ping'])
      if (stdout.trim() === 'PONG') return
    } catch {
      // Not listening yet: try again until the deadline.
    }
    if (performance.now() > deadline)
      throw new Error(`redis-server on port ${port} did not answer PING within 10 s`)
    await sleep(50)
  }
}

async function waitForClusterOk(port: number): Promise<void> {
  const deadline = performance.now() + 20_000
  for (;;) {
    const { stdout } = await run('redis-cli', ['-p', String(port), 'cluster', 'info'])
    if (stdout.includes('cluster_state:ok')) return
    if (performance.now() > deadline)
      throw new Error(`the cluster did not reach cluster_state:ok on port ${port} within 20 s`)
    await sleep(100)
  }
}
