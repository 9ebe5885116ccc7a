import { describe, expect, it } from 'vitest'
import type { CarriedReservation } from '../../../src/adapters/bullmq/carried.js'
import {
  type CarriedDecision,
  decideCarried,
  decideReservation,
  type LimiterAnswer,
  MIN_DEFER_MS,
  type ReservationDecision,
} from '../../../src/adapters/bullmq/decision.js'

const timing = { leadMs: 200, clockSkewToleranceMs: 100, lateToleranceMs: 250, horizonMs: 10_000 }
// t0 is a wall-clock instant; rows are placed around a reservation at t0.
const t0 = 1_700_000_000_000

describe('decideCarried', () => {
  const carried: CarriedReservation = { reservedAtWallMs: t0, attemptsMade: 0, attemptsStarted: 1, cost: 1 }
  const nextFetch = { attemptsMade: 0, attemptsStarted: 2 }

  const rows: Array<[string, CarriedReservation | undefined, typeof nextFetch, number, CarriedDecision]> = [
    ['no reservation: ask the limiter', undefined, nextFetch, t0, { action: 'none', reason: 'absent' }],
    ['back exactly on time: run', carried, nextFetch, t0, { action: 'run' }],
    ['back late within the late tolerance: run', carried, nextFetch, t0 + 250, { action: 'run' }],
    [
      'back later than the late tolerance: its slot has passed, charge it in the window it runs in',
      carried,
      nextFetch,
      t0 + 251,
      { action: 'none', reason: 'late' },
    ],
    [
      'held (back on time, then kept from starting by a cap or a breaker): run however late',
      { ...carried, held: true },
      nextFetch,
      t0 + 60_000,
      { action: 'run' },
    ],
    [
      'reserved further ahead than any worker reserves (horizon + lead + skew): not ours, charge it',
      carried,
      nextFetch,
      t0 - 10_301,
      { action: 'none', reason: 'implausible' },
    ],
    ['back less than 1 ms early: run', carried, nextFetch, t0 - 0.5, { action: 'run' }],
    [
      'back at the lead, as moved: wait the lead',
      carried,
      nextFetch,
      t0 - 200,
      { action: 'wait', waitMs: 200 },
    ],
    [
      'back late within the lead (BullMQ lateness): wait the rest',
      carried,
      nextFetch,
      t0 - 90,
      { action: 'wait', waitMs: 90 },
    ],
    [
      'back early by the skew tolerance: still on time',
      carried,
      nextFetch,
      t0 - 300,
      { action: 'wait', waitMs: 300 },
    ],
    [
      'back early beyond the tolerance: delay again to the lead',
      carried,
      nextFetch,
      t0 - 301,
      { action: 'redelay', delayUntilWallMs: t0 - 200 },
    ],
    [
      'promoted by hand 10 s early: delay again',
      carried,
      nextFetch,
      t0 - 10_000,
      { action: 'redelay', delayUntilWallMs: t0 - 200 },
    ],
    [
      'attempt failed since (attemptsMade grew): a new run, charge it',
      carried,
      { attemptsMade: 1, attemptsStarted: 2 },
      t0,
      { action: 'none', reason: 'other-run' },
    ],
    [
      'fetched again after a crash (attemptsStarted +2): a new run',
      carried,
      { attemptsMade: 0, attemptsStarted: 3 },
      t0,
      { action: 'none', reason: 'other-run' },
    ],
    [
      'still in the fetch that delayed it: not yet the reserved run',
      carried,
      { attemptsMade: 0, attemptsStarted: 1 },
      t0,
      { action: 'none', reason: 'other-run' },
    ],
  ]

  it.each(rows)('%s', (_name, reservation, job, nowWallMs, expected) => {
    expect(decideCarried(reservation, job, nowWallMs, timing)).toEqual(expected)
  })

  it('with no lead and no tolerance, anything early is delayed again to the reserved time', () => {
    expect(
      decideCarried(carried, nextFetch, t0 - 2, { ...timing, leadMs: 0, clockSkewToleranceMs: 0 }),
    ).toEqual({
      action: 'redelay',
      delayUntilWallMs: t0,
    })
  })
})

describe('decideReservation', () => {
  const rows: Array<[string, LimiterAnswer, ReservationDecision]> = [
    ['granted now: run', { ok: true, delayMs: 0 }, { action: 'run' }],
    ['a fraction of a ms away: run', { ok: true, delayMs: 0.4 }, { action: 'run' }],
    [
      '50 ms away (within the lead): wait in the process',
      { ok: true, delayMs: 50 },
      { action: 'wait', waitMs: 50 },
    ],
    [
      'exactly the lead away: wait in the process',
      { ok: true, delayMs: 200 },
      { action: 'wait', waitMs: 200 },
    ],
    [
      'just past the lead: delay, due back at once',
      { ok: true, delayMs: 201 },
      { action: 'delay', reservedAtWallMs: t0 + 201, delayUntilWallMs: t0 + 1 },
    ],
    [
      '9.5 s away: delay to the lead before it',
      { ok: true, delayMs: 9_500 },
      { action: 'delay', reservedAtWallMs: t0 + 9_500, delayUntilWallMs: t0 + 9_300 },
    ],
    [
      'past the adapter horizon (10 s): park, due when the tokens are within it',
      { ok: true, delayMs: 12_500 },
      { action: 'park', dueInMs: 2_500 },
    ],
    [
      "beyond the limiter's horizon: park, due after delayMs",
      { ok: false, delayMs: 4_000, reason: 'beyond-horizon' },
      { action: 'park', dueInMs: 4_000 },
    ],
    [
      "the parent's share taken (issue 18): park as beyond the horizon, due after delayMs",
      { ok: false, delayMs: 300, reason: 'parent-share' },
      { action: 'park', dueInMs: 300 },
    ],
    [
      'table full with a tiny wait: ask again no sooner than the floor',
      { ok: false, delayMs: 1, reason: 'table-full' },
      { action: 'defer', delayUntilWallMs: t0 + MIN_DEFER_MS },
    ],
  ]

  it.each(rows)('%s', (_name, answer, expected) => {
    expect(decideReservation(answer, t0, timing)).toEqual(expected)
  })

  // A key list (issue 18): the limiter defers rather than reserve ahead when the merchant's own
  // limit would place the unit after the parent's own time. Such a deferral is short.
  const keyListRows: Array<[string, LimiterAnswer, ReservationDecision]> = [
    [
      "the merchant's next unit 50 ms away: wait in the process and ask again",
      { ok: false, delayMs: 50, reason: 'beyond-horizon' },
      { action: 'ask-again', waitMs: 50 },
    ],
    [
      'a deferral of 0 ms still waits 1 ms, so that asking again cannot spin',
      { ok: false, delayMs: 0, reason: 'parent-share' },
      { action: 'ask-again', waitMs: 1 },
    ],
    [
      'past the lead: parked, due after delayMs, as beyond the horizon',
      { ok: false, delayMs: 900, reason: 'parent-share' },
      { action: 'park', dueInMs: 900 },
    ],
    [
      'past the adapter horizon: parked as for a single key',
      { ok: false, delayMs: 12_000, reason: 'beyond-horizon' },
      { action: 'park', dueInMs: 12_000 },
    ],
    [
      'table full: as for a single key',
      { ok: false, delayMs: 1, reason: 'table-full' },
      { action: 'defer', delayUntilWallMs: t0 + MIN_DEFER_MS },
    ],
    [
      'granted: as for a single key',
      { ok: true, delayMs: 500 },
      { action: 'delay', reservedAtWallMs: t0 + 500, delayUntilWallMs: t0 + 300 },
    ],
  ]

  it.each(keyListRows)('key list: %s', (_name, answer, expected) => {
    expect(decideReservation(answer, t0, timing, true)).toEqual(expected)
  })
})
