import { expect } from 'vitest'
import {
  BINDING,
  ceilingOf,
  endpointCeilingOf,
  MAIN,
  type Scenario,
  type Summary,
} from './layered-fairness.js'

/**
 * The bounds both adapters' layered tests hold a run to (test/adapters/bullmq/layered.int.test.ts
 * and test/adapters/kafka/consumer-layered.int.test.ts say why each holds on a loaded machine).
 * Kept apart from layered-fairness.ts, which the benchmark imports without vitest.
 */

/** expectParentCeiling: handler starts within burst + rate × W of the parent exactly, the endpoint with delivery slack. */
function expectParentCeiling(summary: Summary, scenario: Scenario): void {
  expect(summary.startsMaxIn1s).toBeLessThanOrEqual(ceilingOf(scenario.parentRate, 1_000))
  expect(summary.maxIn1s).toBeLessThanOrEqual(endpointCeilingOf(scenario.parentRate, 1_000))
  expect(summary.startsMaxIn5s).toBeLessThanOrEqual(ceilingOf(scenario.parentRate, 5_000))
  expect(summary.maxIn5s).toBeLessThanOrEqual(endpointCeilingOf(scenario.parentRate, 5_000))
}

/** expectMainScenario: MAIN's bounds; the backlogged merchants' own 20/s binds before what the parent leaves them. */
export function expectMainScenario(summary: Summary): void {
  expectParentCeiling(summary, MAIN)
  // What the parent leaves (50/s less the quiet 3/s) halved is 23.5/s, above each one's own 20/s.
  const expected = Math.min(20, (50 - MAIN.quiet.length * MAIN.quietPerSec) / 2)
  const seconds = MAIN.trafficMs / 1000
  for (const merchant of Object.keys(MAIN.backlogged)) {
    expect(summary.perSec[merchant]).toBeGreaterThanOrEqual(0.75 * expected)
    expect(summary.perSec[merchant]).toBeLessThanOrEqual(
      ceilingOf(MAIN.merchantRate, MAIN.trafficMs) / seconds,
    )
  }
  expect(summary.quietCalls).toBe(MAIN.quiet.length * MAIN.quietPerSec * seconds)
  expect(summary.quietP99Ms).toBeLessThan(1_000)
}

/** expectBindingScenario: BINDING's bounds; the parent binds and the two merchants get about half each. */
export function expectBindingScenario(summary: Summary): void {
  expectParentCeiling(summary, BINDING)
  const big = summary.perSec['m-big']!
  const small = summary.perSec['m-small']!
  expect(big).toBeGreaterThanOrEqual(0.7 * 15)
  expect(small).toBeGreaterThanOrEqual(0.7 * 15)
  expect(Math.abs(big - small)).toBeLessThanOrEqual(0.25 * 15)
}
