import { describe, expect, it } from 'vitest'
import * as library from '../src/index.js'
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
})
