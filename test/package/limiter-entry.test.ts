import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { packagesLoaded } from './support.js'

// Issue 16: a user who wants only the limiter loaded bullmq, undici, zod and pino through the
// root export. `merchant-throttle/limiter` must load the limiter alone. What an entry loads is
// observed in a fresh process, not inferred from its source (the installed package is checked
// the same way in pack-install.int.test.ts).
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const loadedBy = (entry: string) => packagesLoaded(join(repoRoot, entry), repoRoot, ['tsx'])

describe('merchant-throttle/limiter', () => {
  it('is mapped to the limiter folder in package.json exports', () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'))
    expect(pkg.exports['./limiter']).toEqual({
      types: './dist/limiter/index.d.ts',
      import: './dist/limiter/index.js',
    })
  })

  it('loads no npm package at all: not bullmq, kafkajs, ioredis, undici, zod, prom-client', () => {
    expect(loadedBy('src/limiter/index.ts')).toEqual([])
  }, 30_000)

  // The root export imports only kafkajs's types; bullmq (ES modules) and pino (CommonJS) show
  // that both halves of the check see what is loaded.
  it('while the root export loads bullmq, undici, zod and pino', () => {
    expect(loadedBy('src/index.ts')).toEqual(expect.arrayContaining(['bullmq', 'pino', 'undici', 'zod']))
  }, 30_000)

  it('and kafkajs, a CommonJS package, is seen where it is loaded (throttlectl)', () => {
    expect(loadedBy('src/cli/args.ts')).toEqual(expect.arrayContaining(['kafkajs']))
  }, 30_000)
})
