import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

/**
 * packagesLoaded imports `specifier` in a fresh Node process started in `cwd` and returns the
 * npm packages it loaded, sorted: ES modules as a resolve hook sees them, CommonJS ones (kafkajs
 * and ioredis are CommonJS) from require.cache once the import is done. `preload` are further
 * `--import` modules (tsx, to import TypeScript), whose own packages are left out.
 */
export function packagesLoaded(specifier: string, cwd: string, preload: string[] = []): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'mt-loaded-'))
  const log = join(dir, 'loaded.log')
  const hooks = join(dir, 'hooks.mjs')
  const register = join(dir, 'register.mjs')
  writeFileSync(log, '')
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
  const script = `import { appendFileSync } from 'node:fs'
import { createRequire } from 'node:module'
await import(${JSON.stringify(specifier)})
const cached = Object.keys(createRequire(process.cwd() + '/').cache)
appendFileSync(process.env.MT_LOADED_LOG, cached.join('\\n') + '\\n')
`
  const imports = [...preload, register].flatMap((module) => ['--import', module])
  const run = spawnSync(process.execPath, [...imports, '--input-type=module', '-e', script], {
    cwd,
    env: { ...process.env, MT_LOADED_LOG: log },
    encoding: 'utf8',
    timeout: 30_000,
  })
  const loaded = readFileSync(log, 'utf8')
  rmSync(dir, { recursive: true, force: true })
  if (run.status !== 0) throw new Error(`importing ${specifier} failed (${run.status}): ${run.stderr}`)
  const packages = new Set<string>()
  for (const line of loaded.split('\n')) {
    const name = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(line)?.[1]
    if (name !== undefined && !preload.includes(name) && name !== 'esbuild') packages.add(name)
  }
  return [...packages].sort()
}
