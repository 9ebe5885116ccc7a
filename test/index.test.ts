import { describe, expect, it } from 'vitest'
import * as library from '../src/index.js'
import * as limiter from '../src/limiter/index.js'
import { loadConfig } from '../src/service/config.js'

describe('the package entry (src/index.ts)', () => {
  it('exports ConfigError, the class loadConfig throws, in the MerchantThrottleError hierarchy', () => {
    let thrown: unknown
    try {
      loadConfig({ env: { MT_HTTP_PORT: 'eighty' } })
    } catch (error) {
      thrown = error
    }
    expect(thrown).toBeInstanceOf(library.ConfigError)
    expect(thrown).toBeInstanceOf(library.MerchantThrottleError)
    expect(thrown).toMatchObject({ name: 'ConfigError', code: 'CONFIG_INVALID' })
  })

  it('exports the standing-backlog defaults and headers of both adapters and the rate bounds of the limiter', () => {
    expect({
      DEFAULT_HORIZON_MS: library.DEFAULT_HORIZON_MS,
      DEFAULT_LATE_TOLERANCE_MS: library.DEFAULT_LATE_TOLERANCE_MS,
      DEFAULT_SAFETY_NET_MS: library.DEFAULT_SAFETY_NET_MS,
      BACKLOG_MERCHANTS: library.BACKLOG_MERCHANTS,
      LATE_TOLERANCE_MS: library.LATE_TOLERANCE_MS,
    }).toEqual({
      DEFAULT_HORIZON_MS: 1_000,
      DEFAULT_LATE_TOLERANCE_MS: 250,
      DEFAULT_SAFETY_NET_MS: 900_000,
      BACKLOG_MERCHANTS: 20,
      LATE_TOLERANCE_MS: expect.any(Number),
    })
    expect(library.PARK_HEADERS).toBeTypeOf('object')
    expect([
      library.MAX_BURST,
      library.MAX_INTERVAL_MS,
      library.MAX_RATE_PER_SEC,
      library.MIN_RATE_PER_SEC,
    ]).toEqual([
      limiter.MAX_BURST,
      limiter.MAX_INTERVAL_MS,
      limiter.MAX_RATE_PER_SEC,
      limiter.MIN_RATE_PER_SEC,
    ])
    // The types travel too: this file does not compile without them.
    const waiting: library.MerchantWaiting = { jobs: 1, delayed: 0, parked: 1, oldestAgeMs: 0 }
    const backlog: library.MerchantBacklog = { merchantKey: 'm', buffered: 0, parked: 1, oldestAgeMs: 0 }
    const parking: library.ParkingOptions = { topics: { jobs: 'jobs.parking' } }
    expect([waiting.jobs, backlog.parked, Object.keys(parking.topics)]).toEqual([1, 1, ['jobs']])
  })
})
