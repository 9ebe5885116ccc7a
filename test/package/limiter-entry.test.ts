import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'

// Issue 16: a user who wants only the limiter loaded bullmq, undici, zod and pino through the
// root export. `merchant-throttle/limiter` must load the limiter alone. Each import runs in a
// fresh Node process that writes down every module it loaded (ES modules through a resolve
// hook, CommonJS ones from require.cache: kafkajs and ioredis are CommonJS), so what an entry
// pulls in is observed, not inferred from its source.
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const dir = mkdtempSync(join(tmpdir(), 'mt-limiter-entry-'))
const hooks = join(dir, 'hooks.mjs')
const register = join(dir, 'register.mjs')
writeFileSync(
  hooks,
  `import { appendFileSync } from 'node:fs'
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context)
  appendFileSync(process.env.MT_LOADED_LOG, resolved.url + '\\n')
  return resolved
}
`,
)
writeFileSync(
  register,
  `import { register } from 'node:module'\nregister(${JSON.stringify(pathToFileURL(hooks).href)})\n`,
)

afterAll(() => rmSync(dir, { recursive: true, force: true }))

function importAndList(entry: string): string {
  return `import { appendFileSync } from 'node:fs'
import { createRequire } from 'node:module'
await import(${JSON.stringify(entry)})
const cached = Object.keys(createRequire(process.cwd() + '/').cache)
appendFileSync(process.env.MT_LOADED_LOG, cached.join('\\n') + '\\n')
`
}

/** packagesLoadedBy imports `entry` (a path under the repository) and lists the npm packages loaded. */
function packagesLoadedBy(entry: string): string[] {
  const log = join(dir, `${entry.replaceAll('/', '_')}.log`)
  writeFileSync(log, '')
  const run = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      '--import',
      register,
      '--input-type=module',
      '-e',
      importAndList(join(repoRoot, entry)),
    ],
    { cwd: repoRoot, env: { ...process.env, MT_LOADED_LOG: log }, encoding: 'utf8', timeout: 30_000 },
  )
  expect(run.status, run.stderr).toBe(0)
  const packages = new Set<string>()
  for (const line of readFileSync(log, 'utf8').split('\n')) {
    const name = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(line)?.[1]
    if (name !== undefined && name !== 'tsx' && name !== 'esbuild') packages.add(name)
  }
  return [...packages].sort()
}

describe('merchant-throttle/limiter', () => {
  it('is mapped to the limiter folder in package.json exports', () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'))
    expect(pkg.exports['./limiter']).toEqual({
      types: './dist/limiter/index.d.ts',
      import: './dist/limiter/index.js',
    })
  })

  it('loads no npm package at all: not bullmq, kafkajs, ioredis, undici, zod, prom-client', () => {
    expect(packagesLoadedBy('src/limiter/index.ts')).toEqual([])
  }, 30_000)

  // The root export imports only kafkajs's types; bullmq (ES modules) and pino (CommonJS) show
  // that both halves of the check see what is loaded.
  it('while the root export loads bullmq, undici, zod and pino', () => {
    expect(packagesLoadedBy('src/index.ts')).toEqual(
      expect.arrayContaining(['bullmq', 'pino', 'undici', 'zod']),
    )
  }, 30_000)

  it('and kafkajs, a CommonJS package, is seen where it is loaded (throttlectl)', () => {
    expect(packagesLoadedBy('src/cli/args.ts')).toEqual(expect.arrayContaining(['kafkajs']))
  }, 30_000)
})
