import { describe, expect, it } from 'vitest'
import { type BreakerChange, CircuitBreakers } from '../../src/limiter/breaker.js'
import { FakeClock } from '../../src/limiter/clock.js'

function setup() {
  const clock = new FakeClock(0)
  const changes: BreakerChange[] = []
  const breakers = new CircuitBreakers({
    failureThreshold: 3,
    windowMs: 10_000,
    coolDownMs: 1_000,
    maxCoolDownMs: 3_000,
    clock,
    onChange: (change) => changes.push(change),
  })
  return { clock, breakers, changes }
}

describe('CircuitBreakers', () => {
  it('opens after the threshold of failures within the window, refusing calls for the cool-down', () => {
    const { clock, breakers } = setup()
    for (let i = 0; i < 3; i++) {
      expect(breakers.admit('m').allowed).toBe(true)
      breakers.failure('m')
      clock.advance(100)
    }
    expect(breakers.view('m')).toMatchObject({ state: 'open', openings: 1 })
    expect(breakers.admit('m')).toEqual({ allowed: false, retryInMs: 900 })
    expect(breakers.admit('other')).toEqual({ allowed: true, probe: false })
  })

  it('does not open for failures spread wider than the window', () => {
    const { clock, breakers } = setup()
    for (let i = 0; i < 10; i++) {
      breakers.failure('m')
      clock.advance(6_000)
    }
    expect(breakers.view('m').state).toBe('closed')
  })

  it('lets one probe through when the cool-down ends; its success closes the breaker', () => {
    const { clock, breakers, changes } = setup()
    for (let i = 0; i < 3; i++) breakers.failure('m')
    clock.advance(1_000)
    expect(breakers.admit('m')).toEqual({ allowed: true, probe: true })
    expect(breakers.admit('m').allowed).toBe(false)
    breakers.success('m')
    expect(breakers.view('m').state).toBe('closed')
    expect(breakers.admit('m')).toEqual({ allowed: true, probe: false })
    expect(changes.map((c) => `${c.from}>${c.to}`)).toEqual([
      'closed>open',
      'open>half-open',
      'half-open>closed',
    ])
  })

  it('reopens on a failed probe, doubling the cool-down up to the cap', () => {
    const { clock, breakers, changes } = setup()
    for (let i = 0; i < 3; i++) breakers.failure('m')
    for (const coolDownMs of [1_000, 2_000, 3_000, 3_000]) {
      expect(breakers.view('m').retryInMs).toBe(coolDownMs)
      clock.advance(coolDownMs)
      expect(breakers.admit('m')).toEqual({ allowed: true, probe: true })
      breakers.failure('m')
    }
    expect(changes.filter((c) => c.to === 'open').map((c) => c.retryInMs)).toEqual([
      1_000, 2_000, 3_000, 3_000, 3_000,
    ])
  })

  it('frees the probe slot when the probe call was never made', () => {
    const { clock, breakers } = setup()
    for (let i = 0; i < 3; i++) breakers.failure('m')
    clock.advance(1_000)
    expect(breakers.admit('m')).toEqual({ allowed: true, probe: true })
    breakers.release('m')
    expect(breakers.admit('m')).toEqual({ allowed: true, probe: true })
  })

  it('holds only merchants with recent failures', () => {
    const { breakers } = setup()
    breakers.failure('m')
    breakers.success('m')
    expect(breakers.stats()).toEqual({ open: 0, halfOpen: 0, refused: 0 })
    expect(breakers.notClosed()).toEqual([])
    expect(() => new CircuitBreakers({ failureThreshold: 0 })).toThrow(TypeError)
  })
})
