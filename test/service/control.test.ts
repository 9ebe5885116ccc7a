import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { FakeClock, InFlightTable, KeyedLimiter } from '../../src/limiter/index.js'
import { changedMerchants, startControl } from '../../src/service/control.js'
import { ServiceMetrics } from '../../src/service/metrics.js'
import { waitFor } from '../support/wait-for.js'

describe('changedMerchants', () => {
  it("names a set's or a clear's merchant, and nobody in particular (every rate) for a snapshot", () => {
    const rate = { limit: 1, intervalMs: 1_000, burst: 1 }
    expect(changedMerchants({ type: 'set', merchant: 'm_1', rate, version: 1 })).toEqual(['m_1'])
    expect(changedMerchants({ type: 'clear', merchant: 'm_2', version: 2 })).toEqual(['m_2'])
    expect(
      changedMerchants({ type: 'snapshot', default: rate, overrides: new Map(), version: 3 }),
    ).toBeUndefined()
  })
})

describe('startControl', () => {
  it('tells the sources after each change applied to the limiter, not before', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mt-control-'))
    const file = join(dir, 'rates.json')
    writeFileSync(file, JSON.stringify({ type: 'snapshot', version: 1, default: '10/s' }))
    const limiter = new KeyedLimiter({ rate: '1/s', clock: new FakeClock(0) })
    const told: Array<{ keys: readonly string[] | undefined; defaultLimit: number }> = []
    const control = await startControl({
      config: {
        source: 'file',
        file,
        topic: 'unused',
        signingKeys: {},
      },
      kafka: undefined,
      limiter,
      inFlight: new InFlightTable(Number.POSITIVE_INFINITY),
      metrics: new ServiceMetrics(limiter, []),
      logger: pino({ level: 'silent' }),
      ratesChanged: (keys) => told.push({ keys, defaultLimit: limiter.rates().default.limit }),
    })
    try {
      expect(told).toEqual([{ keys: undefined, defaultLimit: 10 }])
      writeFileSync(file, JSON.stringify({ type: 'snapshot', version: 2, default: '20/s' }))
      await waitFor('the second change', () => told.length === 2, 5_000)
      expect(told[1]).toEqual({ keys: undefined, defaultLimit: 20 })
    } finally {
      await control.stop()
    }
  })
})
