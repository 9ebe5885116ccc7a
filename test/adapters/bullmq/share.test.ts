import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { InstanceShare, type InstanceShareOptions } from '../../../src/adapters/bullmq/share.js'

function setup(overrides: Partial<InstanceShareOptions>) {
  const shares: number[] = []
  const logs: Array<{ level: number; msg: string }> = []
  const logger = pino({ level: 'info' }, { write: (line: string) => logs.push(JSON.parse(line)) })
  const share = new InstanceShare({
    instances: 'auto',
    fallbackInstances: 2,
    refreshMs: 60_000,
    countWorkers: async () => 3,
    setShare: (n) => shares.push(n),
    logger,
    ...overrides,
  })
  return { share, shares, logs }
}

describe('InstanceShare', () => {
  it('a fixed number is put in force once, at start, and never counted', async () => {
    let counted = 0
    const { share, shares } = setup({
      instances: 4,
      countWorkers: async () => {
        counted++
        return 9
      },
    })
    share.start()
    expect(await share.refresh()).toBe(4)
    share.stop()
    expect(shares).toEqual([4])
    expect(counted).toBe(0)
    expect(share.source).toBe('configured')
  })

  it('auto enforces the fallback at start, then the counted number', async () => {
    const { share, shares } = setup({})
    share.start()
    expect(shares).toEqual([2])
    expect(await share.refresh()).toBe(3)
    share.stop()
    expect(shares).toEqual([2, 3])
    expect(share.source).toBe('counted')
  })

  it('auto goes back to the fallback when counting fails, and logs it once', async () => {
    let fail = false
    const { share, shares, logs } = setup({
      countWorkers: async () => {
        if (fail) throw new Error('NOPERM this user has no permissions to run the client|list command')
        return 5
      },
    })
    expect(await share.refresh()).toBe(5)
    fail = true
    expect(await share.refresh()).toBe(2)
    expect(await share.refresh()).toBe(2)
    expect(shares).toEqual([5, 2])
    expect(share.source).toBe('fallback')
    expect(logs.filter((l) => l.msg.startsWith('cannot count workers'))).toHaveLength(1)
    fail = false
    expect(await share.refresh()).toBe(5)
    expect(logs.some((l) => l.msg === 'counting workers again')).toBe(true)
  })

  it('a count of zero (this worker not named yet) enforces a share of one', async () => {
    const { share } = setup({ countWorkers: async () => 0 })
    expect(await share.refresh()).toBe(1)
  })

  it('overlapping refreshes share one count', async () => {
    let counted = 0
    const { share } = setup({
      countWorkers: async () => {
        counted++
        return 3
      },
    })
    await Promise.all([share.refresh(), share.refresh(), share.refresh()])
    expect(counted).toBe(1)
  })

  it.each([
    [{ instances: 0 }, 'instances: expected a whole number >= 1'],
    [{ instances: 1.5 }, 'instances: expected a whole number >= 1'],
    [{ fallbackInstances: 0 }, 'instancesFallback: expected a whole number >= 1'],
    [{ refreshMs: 0 }, 'instancesRefreshMs: expected a finite number above 0'],
  ])('refuses %o', (overrides, message) => {
    expect(() => setup(overrides as Partial<InstanceShareOptions>)).toThrow(message)
  })
})
