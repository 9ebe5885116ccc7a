import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

// What issue 16 found missing from the package a user installs, pinned field by field.
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'))
const lock = JSON.parse(readFileSync(join(repoRoot, 'package-lock.json'), 'utf8'))

describe('package.json', () => {
  it('ships a LICENSE with the license it names', () => {
    expect(pkg.license).toBe('MIT')
    expect(readFileSync(join(repoRoot, 'LICENSE'), 'utf8')).toMatch(/^MIT License\n/)
  })

  it('takes bullmq and kafkajs as peers, from the version the lockfile (and so CI) installs', () => {
    for (const name of ['bullmq', 'kafkajs']) {
      expect(pkg.dependencies[name], `${name} in dependencies`).toBeUndefined()
      const locked = lock.packages[`node_modules/${name}`]
      expect(pkg.peerDependencies[name]).toBe(`^${locked.version}`)
      // Not a devDependency: npm would mark it dev in the lockfile, and `npm ci --omit=dev`
      // (the Dockerfile) would drop the worker's queue clients.
      expect(locked.dev, `${name} marked dev in package-lock.json`).toBeUndefined()
    }
  })

  it('keeps pino-pretty out of what an install pulls in: an optional peer', () => {
    expect(pkg.dependencies['pino-pretty']).toBeUndefined()
    expect(pkg.peerDependenciesMeta['pino-pretty']).toEqual({ optional: true })
  })

  it('builds dist before it is packed, from a clean dist', () => {
    expect(pkg.scripts.prepack).toContain('rmSync')
    expect(pkg.scripts.prepack).toContain('npm run build')
  })

  it('ships src beside dist, so the source and declaration maps resolve', () => {
    expect(pkg.files).toEqual(expect.arrayContaining(['dist', 'src', 'config']))
  })

  it('says where the project lives', () => {
    expect(pkg.repository.url).toMatch(/^git\+https:\/\/github\.com\/.+\.git$/)
    expect(pkg.homepage).toMatch(/^https:\/\/github\.com\//)
    expect(pkg.bugs.url).toMatch(/^https:\/\/github\.com\/.+\/issues$/)
  })

  it('still runs on Node 20', () => {
    expect(pkg.engines.node).toBe('>=20')
  })
})
