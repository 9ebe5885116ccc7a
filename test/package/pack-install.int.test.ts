import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { kafkaBrokers, redisUrl, uniqueName } from '../support/services.js'
import { waitFor } from '../support/wait-for.js'
import { packagesLoaded } from './support.js'

// Issue 16, as a new user meets the package: `npm pack` of a checkout without dist/, installed
// with the user's own bullmq and kafkajs into a project whose path holds a space, the worker
// command started in a terminal (a pseudo-terminal from `script`), where the old worker crashed
// on a missing pino-pretty, failed on config/rates.json outside the repository and on the space.
// The transcript of what ran is written to .cache/package/pack-install.txt.
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const lock = JSON.parse(readFileSync(join(repoRoot, 'package-lock.json'), 'utf8'))
const versionOf = (name: string): string => lock.packages[`node_modules/${name}`].version
const transcript: string[] = []
const children = new Set<ChildProcess>()
let base: string
let project: string

/** run runs a command to its end, writing it and its output into the transcript. */
function run(command: string, args: string[], cwd: string, shown = `${command} ${args.join(' ')}`): string {
  transcript.push(`$ ${shown}`)
  try {
    const output = execFileSync(command, args, { cwd, encoding: 'utf8', timeout: 60_000, stdio: 'pipe' })
    transcript.push(output.trimEnd())
    return output
  } catch (error) {
    const { status, stdout, stderr } = error as { status: number | null; stdout: string; stderr: string }
    transcript.push(`${stdout}${stderr}`.trimEnd(), `(exit code ${status})`)
    throw new Error(`${shown} exited ${status}:\n${stdout}${stderr}`)
  }
}

/** userEnv is a user's environment: no test settings, no NODE_ENV, none of the worker's variables. */
function userEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (!/^(MT_|KAFKA_|REDIS_|NODE_ENV$|NODE_OPTIONS$|NODE_PATH$|VITEST)/.test(name)) env[name] = value
  }
  return { ...env, ...extra }
}

/**
 * startInTerminal starts `command` in a pseudo-terminal (`script -qec`), waits for /readyz to
 * answer 200, stops it with Ctrl-C typed into the terminal and returns its output and exit code.
 * The command is exec'd, so the worker itself is the terminal's foreground process: Ctrl-C
 * reaches every process of that group, and a shell (dash, which `script` runs when SHELL is
 * /bin/sh or unset) or npx standing between would die of it and report 130 whatever the worker
 * did. SHELL is set to /bin/sh so every machine runs the command as CI does.
 */
async function startInTerminal(command: string, env: Record<string, string>) {
  transcript.push(
    `$ ${Object.entries(env)
      .map(([k, v]) => `${k}=${v} `)
      .join('')}script -qec "exec ${command}" /dev/null`,
  )
  const child = spawn('script', ['-qec', `exec ${command}`, '/dev/null'], {
    cwd: project,
    env: userEnv({ ...env, SHELL: '/bin/sh' }),
  })
  children.add(child)
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  let url: string | undefined
  await waitFor(
    'the worker to listen',
    () => {
      url = /"msg":"http server listening"/.test(output)
        ? /"url":"(http:[^"]+)"/.exec(output)?.[1]
        : undefined
      return url !== undefined || child.exitCode !== null
    },
    30_000,
  )
  expect(url, output).toBeDefined()
  let readyz: Response | undefined
  await waitFor(
    `200 from ${url}/readyz`,
    async () => {
      readyz = await fetch(`${url}/readyz`).catch(() => undefined)
      return readyz?.status === 200
    },
    30_000,
  )
  const body = await readyz!.text()
  transcript.push(`(while it runs) GET ${url}/readyz → ${readyz!.status} ${body}`)
  child.stdin.write('\x03') // Ctrl-C: the terminal sends the worker SIGINT
  const code = await exited
  children.delete(child)
  const text = output.replaceAll('\r', '')
  transcript.push(text.trimEnd(), `(exit code ${code})`)
  return { code, output: text, readyz: readyz!.status }
}

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'mt-pack-'))
  // A checkout as a fresh clone has it: the tracked and new files, no dist/.
  const checkout = join(base, 'checkout')
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: repoRoot,
    encoding: 'utf8',
  })
  for (const file of files.split('\0').filter((f) => f !== '' && !f.startsWith('dist/'))) {
    mkdirSync(dirname(join(checkout, file)), { recursive: true })
    cpSync(join(repoRoot, file), join(checkout, file), { errorOnExist: false })
  }
  symlinkSync(join(repoRoot, 'node_modules'), join(checkout, 'node_modules'))
  const packed = run('npm', ['pack', '--silent', '--pack-destination', base], checkout, 'npm pack').trim()
  project = join(base, 'my project')
  mkdirSync(project)
  writeFileSync(join(project, 'package.json'), '{ "name": "my-app", "private": true, "type": "module" }\n')
  const deps = [`bullmq@${versionOf('bullmq')}`, `kafkajs@${versionOf('kafkajs')}`]
  run(
    'npm',
    ['install', '--prefer-offline', '--no-audit', '--no-fund', join(base, packed), ...deps],
    project,
    `npm install ../${packed} ${deps.join(' ')}   # in ${project}`,
  )
}, 120_000)

afterAll(() => {
  for (const child of children) child.kill('SIGKILL')
  mkdirSync(join(repoRoot, '.cache', 'package'), { recursive: true })
  writeFileSync(join(repoRoot, '.cache', 'package', 'pack-install.txt'), `${transcript.join('\n')}\n`)
  if (base !== undefined) rmSync(base, { recursive: true, force: true })
})

describe('the packed package, installed into a project whose path holds a space', () => {
  it('installs without pino-pretty, with the one bullmq and kafkajs of the project', () => {
    const listed = run('npm', ['ls', '--all', 'bullmq', 'kafkajs', 'pino-pretty'], project)
    expect(listed).not.toContain('pino-pretty')
    expect(listed.match(/bullmq@/g)).toHaveLength(2) // the project's, deduped under merchant-throttle
    expect(listed).toContain('deduped')
  })

  it('ships what its source and declaration maps point at (src/ beside dist/)', () => {
    const installed = join(project, 'node_modules', 'merchant-throttle')
    const maps = readdirSync(join(installed, 'dist'), { recursive: true, encoding: 'utf8' }).filter((f) =>
      f.endsWith('.map'),
    )
    expect(maps.length).toBeGreaterThan(50)
    const missing = maps.flatMap((map) => {
      const { sources } = JSON.parse(readFileSync(join(installed, 'dist', map), 'utf8')) as {
        sources: string[]
      }
      return sources
        .map((source) => join(installed, 'dist', dirname(map), source))
        .filter((file) => !existsSync(file))
    })
    expect(missing).toEqual([])
  })

  it('has the worker command: --version', () => {
    expect(run('npx', ['merchant-throttle', '--version'], project)).toMatch(
      /^merchant-throttle \d+\.\d+\.\d+/,
    )
  })

  it('loads neither bullmq nor kafkajs through merchant-throttle/limiter', () => {
    const loaded = packagesLoaded('merchant-throttle/limiter', project)
    transcript.push(`(import 'merchant-throttle/limiter' loaded: [${loaded.join(', ')}])`)
    expect(loaded).toEqual(['merchant-throttle'])
  })

  it("type-checks against the package's own declarations and the project's bullmq", () => {
    writeFileSync(
      join(project, 'tsconfig.json'),
      `${JSON.stringify({ compilerOptions: { module: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true }, files: ['app.ts'] })}\n`,
    )
    writeFileSync(
      join(project, 'app.ts'),
      `import type { Worker } from 'bullmq'
import { createThrottledWorker } from 'merchant-throttle'
import { KeyedLimiter } from 'merchant-throttle/limiter'
const limiter = new KeyedLimiter({ rate: '10/s' })
// A ThrottledWorker is the project's own bullmq Worker: one copy of bullmq, one set of types.
export const worker: Worker<unknown, void> = createThrottledWorker('q', async () => {}, { connection: {}, limiter })
`,
    )
    const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc')
    expect(run(process.execPath, [tsc, '-p', 'tsconfig.json'], project, 'tsc -p tsconfig.json')).toBe('')
  })

  it('starts in a terminal with the package defaults and Redis, answers /readyz 200, stops on Ctrl-C', async () => {
    const queue = uniqueName('pack-install')
    writeFileSync(
      join(project, 'worker config.json'),
      `${JSON.stringify({ http: { port: 0 }, sources: [{ kind: 'bullmq', queue, handler: 'webhook' }] })}\n`,
    )
    run('cat', ['worker config.json'], project)
    const worker = await startInTerminal(
      "node_modules/.bin/merchant-throttle --config 'worker config.json'",
      {
        REDIS_URL: redisUrl(),
      },
    )
    expect(worker.readyz).toBe(200)
    expect(worker.code).toBe(0)
    // JSON lines (no pino-pretty installed), the package's own rates file, read from a path with a space.
    expect(worker.output).toContain('"msg":"control change applied: snapshot default 1000/min')
    expect(worker.output).toContain(
      `"path":"${join(project, 'node_modules/merchant-throttle/config/rates.json')}"`,
    )
    expect(worker.output).toContain('"msg":"stopped"')
  })

  it('starts with a Kafka control topic too, and is ready once it has read the topic', async () => {
    const queue = uniqueName('pack-install-kafka')
    const topic = uniqueName('pack-install-control')
    writeFileSync(
      join(project, 'kafka config.json'),
      `${JSON.stringify({ http: { port: 0 }, control: { topic }, sources: [{ kind: 'bullmq', queue, handler: 'webhook' }] })}\n`,
    )
    run('cat', ['kafka config.json'], project)
    const worker = await startInTerminal("node_modules/.bin/merchant-throttle --config 'kafka config.json'", {
      REDIS_URL: redisUrl(),
      KAFKA_BROKERS: kafkaBrokers().join(','),
    })
    expect(worker.readyz).toBe(200)
    expect(worker.code).toBe(0)
    expect(worker.output).toContain('"msg":"stopped"')
    // The control topic created is removed again: the broker is shared.
    const { Kafka, logLevel } = await import('kafkajs')
    const admin = new Kafka({ brokers: kafkaBrokers(), logLevel: logLevel.NOTHING }).admin()
    await admin.connect()
    await admin.deleteTopics({ topics: [topic] }).finally(() => admin.disconnect())
  })
})
