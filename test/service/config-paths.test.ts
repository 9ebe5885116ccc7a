import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { DEFAULT_CONFIG_DIR, loadConfig } from '../../src/service/config.js'

// Issue 16: the worker must start from any directory. control.file was resolved against the
// working directory, so `config/rates.json` failed with ENOENT outside the repository.
function tempDir(files: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'mt config paths '))
  for (const [name, value] of Object.entries(files)) writeFileSync(join(dir, name), JSON.stringify(value))
  return dir
}

describe('loadConfig: where control.file points', () => {
  it("is the package's own rates file with the package's defaults", () => {
    const { control } = loadConfig({ env: {} })
    expect(control.file).toBe(join(DEFAULT_CONFIG_DIR, 'rates.json'))
    expect(existsSync(control.file)).toBe(true)
  })

  it("is inside the package when no layer names it (the schema's default)", () => {
    const dir = tempDir({ 'default.json': {} })
    const { control } = loadConfig({ configDir: dir, env: {} })
    expect(control.file).toBe(resolve(dirname(DEFAULT_CONFIG_DIR), 'config/rates.json'))
  })

  it('is resolved against the directory of the --config file that names it', () => {
    const dir = tempDir({ 'worker.json': { control: { file: 'my-rates.json' } } })
    const { control } = loadConfig({ file: join(dir, 'worker.json'), env: {} })
    expect(control.file).toBe(join(dir, 'my-rates.json'))
  })

  it('keeps an absolute path as written', () => {
    const dir = tempDir({ 'worker.json': { control: { file: '/etc/mt/rates.json' } } })
    expect(loadConfig({ file: join(dir, 'worker.json'), env: {} }).control.file).toBe('/etc/mt/rates.json')
  })

  it('is resolved against the working directory when it comes from MT_CONTROL_FILE', () => {
    const { control } = loadConfig({ env: { MT_CONTROL_FILE: 'ops/rates.json' } })
    expect(control.file).toBe(resolve(process.cwd(), 'ops/rates.json'))
  })

  it('DEFAULT_CONFIG_DIR is a file path, not a URL path (a space stays a space)', () => {
    expect(DEFAULT_CONFIG_DIR).not.toContain('%')
    expect(existsSync(join(DEFAULT_CONFIG_DIR, 'default.json'))).toBe(true)
  })
})
