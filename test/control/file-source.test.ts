import { mkdtemp, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createFileControlSource, type FileControlSource } from '../../src/control/file-source.js'
import { parseControlMessage } from '../../src/control/schema.js'
import type { ControlEvent } from '../../src/control/state.js'
import { InvalidRatesFileError } from '../../src/errors.js'
import { FakeClock, KeyedLimiter } from '../../src/limiter/index.js'

let dir: string
let path: string
let limiter: KeyedLimiter
let source: FileControlSource | undefined

const snapshot = (version: number, defaultRate: string, overrides: Record<string, unknown> = {}) =>
  JSON.stringify({ type: 'snapshot', version, default: defaultRate, overrides }, null, 2)

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mt-rates-'))
  path = join(dir, 'rates.json')
  limiter = new KeyedLimiter({ rate: '1/s', clock: new FakeClock(0) })
})

afterEach(async () => {
  await source?.stop()
  source = undefined
  await rm(dir, { recursive: true, force: true })
})

function start(debounceMs = 10): Promise<void> {
  source = createFileControlSource({ path, limiter, debounceMs })
  return source.start()
}

/**
 * nextEvent resolves with the source's next event of `kind` (a watched edit arrives on
 * its own time; an in-place write may be seen half-written first and rejected).
 */
function nextEvent(kind: ControlEvent['kind']): Promise<ControlEvent> {
  return new Promise((resolve) => {
    const unsubscribe = source!.subscribe((event) => {
      if (event.kind !== kind) return
      unsubscribe()
      resolve(event)
    })
  })
}

describe('createFileControlSource', () => {
  it('applies the file at start', async () => {
    await writeFile(path, snapshot(1, '1000/min', { m1: '5000/min' }))
    await start()
    expect(limiter.rates().default).toEqual({ limit: 1000, intervalMs: 60_000, burst: 1000 })
    expect(limiter.rates().overrides).toEqual({ m1: { limit: 5000, intervalMs: 60_000, burst: 5000 } })
    expect(source!.table()).toMatchObject({ snapshotVersion: 1, overrides: [{ merchant: 'm1', version: 1 }] })
  })

  it.each([
    ['missing', undefined, /cannot be read/],
    ['not JSON', '{ "type": ', /message: not JSON/],
    ['invalid', snapshot(1, '1000/min', { m1: '-5/min' }), /overrides\.m1: expected a rate like/],
    [
      'not a snapshot',
      JSON.stringify({ type: 'clear', merchant: 'm1', version: 1 }),
      /type: expected "snapshot", got "clear"/,
    ],
  ])('refuses to start on a file that is %s, with InvalidRatesFileError', async (_name, content, message) => {
    if (content !== undefined) await writeFile(path, content)
    const started = start()
    await expect(started).rejects.toBeInstanceOf(InvalidRatesFileError)
    await expect(started).rejects.toThrow(message)
    expect(limiter.rates().default).toEqual({ limit: 1, intervalMs: 1000, burst: 1 })
  })

  it("takes a parent's rate and its children's weights from the rates file", async () => {
    await writeFile(
      path,
      JSON.stringify({
        type: 'snapshot',
        version: 1,
        default: '20/s',
        overrides: { 'psp:adyen': '200/s' },
        weights: { 'psp:adyen:m_42': 2 },
      }),
    )
    await start()
    expect(limiter.rateOf('psp:adyen')).toMatchObject({ limit: 200, intervalMs: 1_000 })
    expect(source!.table().weights).toMatchObject([{ merchant: 'psp:adyen:m_42', weight: 2, version: 1 }])
  })

  it('applies an edit that raises the version, whole', async () => {
    await writeFile(path, snapshot(1, '1000/min', { m1: '5000/min', m2: '10/s' }))
    await start()
    await writeFile(path, snapshot(2, '2000/min', { m2: '20/s', m3: '30/s' }))
    expect(await source!.reload()).toBe('applied')
    expect(limiter.rates().default.limit).toBe(2000)
    expect(Object.keys(limiter.rates().overrides).sort()).toEqual(['m2', 'm3'])
  })

  it('rejects an edit with one bad override whole: the rates in force stay, with the reason', async () => {
    await writeFile(path, snapshot(1, '1000/min', { m1: '5000/min' }))
    await start()
    const before = JSON.stringify(limiter.rates())
    const events: ControlEvent[] = []
    source!.subscribe((event) => events.push(event))
    await writeFile(
      path,
      snapshot(2, '2000/min', { m1: '6000/min', m2: { limit: 10, intervalMs: 1000, burst: 0 } }),
    )
    expect(await source!.reload()).toBe('rejected')
    expect(JSON.stringify(limiter.rates())).toBe(before)
    expect(events).toEqual([
      {
        kind: 'rejected',
        reason: 'invalid-message',
        error: 'overrides.m2.burst: expected a number >= 1 and <= 1000000, got 0',
        origin: { source: 'file', path },
      },
    ])
  })

  it('reports an edit that forgot to raise the version as stale', async () => {
    await writeFile(path, snapshot(5, '1000/min'))
    await start()
    await writeFile(path, snapshot(5, '9/s'))
    expect(await source!.reload()).toBe('stale')
    expect(limiter.rates().default.limit).toBe(1000)
  })

  it('ignores a save with the same bytes, and keeps the rates when the file disappears', async () => {
    await writeFile(path, snapshot(1, '1000/min'))
    await start()
    expect(await source!.reload()).toBe('unchanged')
    await unlink(path)
    expect(await source!.reload()).toBe('unreadable')
    expect(limiter.rates().default.limit).toBe(1000)
  })

  it('watches the file: an editor-style save (write a new file, rename it over) is applied', async () => {
    await writeFile(path, snapshot(1, '1000/min'))
    await start()
    const applied = nextEvent('applied')
    const temp = join(dir, '.rates.json.swp')
    await writeFile(temp, snapshot(2, '3000/min', { m9: '1/s' }))
    await rename(temp, path)
    expect(await applied).toMatchObject({ kind: 'applied', change: { type: 'snapshot', version: 2 } })
    expect(limiter.rates().default.limit).toBe(3000)
    // and a second save after the rename is still seen
    const second = nextEvent('applied')
    await writeFile(path, snapshot(3, '4000/min'))
    expect(await second).toMatchObject({ kind: 'applied', change: { version: 3 } })
  })

  it('a bad watched edit is rejected and a later good one still applies', async () => {
    await writeFile(path, snapshot(1, '1000/min'))
    await start()
    const rejected = nextEvent('rejected')
    await writeFile(path, '{ "type": "snapshot", ')
    expect(await rejected).toMatchObject({ kind: 'rejected', reason: 'invalid-json' })
    const applied = nextEvent('applied')
    await writeFile(path, snapshot(2, '2000/min'))
    expect(await applied).toMatchObject({ kind: 'applied' })
    expect(source!.stats().applied).toBe(2)
    expect(source!.stats().rejected).toBeGreaterThanOrEqual(1)
  })

  it('checks its options', () => {
    expect(() => createFileControlSource({ path, limiter, debounceMs: -1 })).toThrow(TypeError)
  })
})

describe('config/rates.json', () => {
  it('the shipped rates file is a valid snapshot', async () => {
    const shipped = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'config', 'rates.json')
    const parsed = parseControlMessage(await readFile(shipped))
    expect(parsed).toMatchObject({
      ok: true,
      change: { type: 'snapshot', default: { limit: 1000, intervalMs: 60_000 } },
    })
  })
})
