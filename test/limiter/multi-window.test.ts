import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { type Granted, KeyedLimiter, type Reservation, ReservationBook } from '../../src/limiter/limiter.js'

// '2/s burst 2, 5/10s': the first window emits one unit every 500 ms into a bucket of 2, the
// second one every 2,000 ms into a bucket of 5. A key conforms only when both do.
const TWO_WINDOWS = '2/s burst 2, 5/10s'

function setup(rate = TWO_WINDOWS) {
  const clock = new FakeClock(0)
  const limiter = new KeyedLimiter({ rate, clock, horizonMs: 60_000 })
  return { clock, limiter }
}

function granted(reservation: Reservation): Granted {
  if (!reservation.ok) throw new Error(`expected a grant, got ${reservation.reason}`)
  return reservation
}

describe('KeyedLimiter: a rate of several windows', () => {
  it('grants only what every window allows: the second binds once its burst of 5 is spent', () => {
    const { clock, limiter } = setup()
    const rows: Array<[atMs: number, ok: boolean, comment: string]> = [
      [0, true, 'a new key starts full in both windows'],
      [0, true, 'the first window burst of 2'],
      [0, false, 'the first window is empty'],
      [1_000, true, 'the first window refilled'],
      [1_000, true, '4 granted'],
      [1_500, true, '5 granted: the second window burst is spent'],
      [2_000, true, '6 granted: 5 + 0.5/s x 2 s'],
      [2_500, false, 'the first window would allow one, the second does not (next at 4 s)'],
      [3_999, false, 'still the second window'],
      [4_000, true, 'the second window earned one'],
      [4_500, false, 'the first window would, the second earns one every 2 s'],
      [6_000, true, 'one every 2 s: the second window is the steady rate'],
    ]
    for (const [atMs, ok, comment] of rows) {
      clock.set(atMs)
      expect(limiter.tryAcquire('k'), comment).toBe(ok)
    }
  })

  it('inspect reports the binding window: fewest tokens, smallest capacity, longest wait', () => {
    const { clock, limiter } = setup()
    for (let i = 0; i < 5; i++) {
      clock.set(i * 500)
      limiter.tryAcquire('k')
    }
    clock.set(2_500)
    limiter.tryAcquire('k')
    // six grants by 2.5 s: the second window holds 5 + 1.25 - 6 = 0.25 tokens, its next unit 1.5 s away
    const state = limiter.inspect('k')!
    expect(state.tokens).toBeCloseTo(0.25, 9)
    expect(state.capacity).toBe(2)
    expect(state.waitMs).toBeCloseTo(1_500, 9)
    expect(state.rate).toEqual({
      limit: 2,
      intervalMs: 1_000,
      burst: 2,
      extraWindows: [{ limit: 5, intervalMs: 10_000, burst: 5 }],
    })
  })

  it('reserves at the latest time every window meets, and charges every window', () => {
    const { limiter } = setup()
    const delays = Array.from({ length: 8 }, () => granted(limiter.reserve('k')).delayMs)
    // the first window spaces them 500 ms apart after its burst of 2; from the sixth on the second window does
    expect(delays).toEqual([0, 0, 500, 1_000, 1_500, 2_000, 4_000, 6_000])
  })

  it('a reservation made while one window waits charges the others from its time, not from now', () => {
    const { clock, limiter } = setup('1/10s, 10/s burst 10')
    expect(granted(limiter.reserve('k')).delayMs).toBe(0)
    const second = granted(limiter.reserve('k'))
    expect(second.delayMs).toBe(10_000) // the first window waits
    // at that time, drop the slow window: the per-second one alone is left, as it stood. Had
    // it been charged at 0 for the work at 10 s, it would be full by then and let 10 more
    // through beside the reserved one: 11 in an instant, above its burst of 10
    clock.set(10_000)
    limiter.setRate('k', '10/s burst 10')
    let taken = 0
    while (limiter.tryAcquire('k')) taken++
    expect(taken + second.cost).toBe(10)
  })

  it('cancel gives the latest reservation back to every window', () => {
    const { limiter } = setup()
    const delays = Array.from({ length: 6 }, () => granted(limiter.reserve('k')))
    const latest = granted(limiter.reserve('k'))
    expect(latest.delayMs).toBe(4_000)
    expect(latest.cancel()).toBe(true)
    // both windows are back where they were: the same reservation comes again
    expect(granted(limiter.reserve('k')).delayMs).toBe(4_000)
    expect(delays).toHaveLength(6)
  })

  it('cancel gives nothing back while a later reservation stands, in any window', () => {
    const { limiter } = setup()
    const reservations = Array.from({ length: 7 }, () => granted(limiter.reserve('k')))
    expect(reservations[5]!.delayMs).toBe(2_000)
    expect(reservations[5]!.cancel()).toBe(true) // the one at 4 s stands behind it
    expect(granted(limiter.reserve('k')).delayMs).toBe(6_000)
  })

  it('cancel gives nothing back for a reservation whose time has passed', () => {
    const { clock, limiter } = setup()
    const reservations = Array.from({ length: 6 }, () => granted(limiter.reserve('k')))
    clock.set(2_500) // the sixth, at 2 s, has had its slot
    expect(reservations[5]!.cancel()).toBe(true)
    expect(granted(limiter.reserve('k')).delayMs).toBe(1_500) // at 4 s, as if not cancelled
  })

  it('cancelIn of a ReservationBook row returns to every window as Granted.cancel does', () => {
    const { limiter } = setup()
    const book = new ReservationBook()
    for (let i = 0; i < 6; i++) limiter.reserveIn(book, 'k')
    const row = limiter.reserveIn(book, 'k')
    expect(typeof row).toBe('number')
    expect(book.lastDelayMs).toBe(4_000)
    expect(limiter.cancelIn(book, row as number)).toBe(true)
    limiter.reserveIn(book, 'k')
    expect(book.lastDelayMs).toBe(4_000)
  })

  it('a change of one window carries each window over by itself (proportional)', () => {
    const { clock, limiter } = setup()
    for (let i = 0; i < 5; i++) granted(limiter.reserve('k')) // at 0, 0, 500, 1000, 1500: the second window spent
    clock.set(2_500)
    // the first window is full again (2 of 2); the second holds 1.25 of 5, doubled to 10/10s
    // burst 10 it holds 2.5 of 10
    limiter.setRate('k', '2/s burst 2, 10/10s burst 10')
    expect(limiter.inspect('k')!.tokens).toBeCloseTo(2, 9)
    expect(limiter.tryAcquire('k', 2)).toBe(true)
    expect(limiter.tryAcquire('k')).toBe(false)
    clock.set(3_500) // the first window refilled 2, the second earned 1 (one a second now): 1.5 there
    expect(limiter.tryAcquire('k')).toBe(true)
    expect(limiter.tryAcquire('k')).toBe(false) // the second window's 0.5 is not a unit
    expect(limiter.inspect('k')!.tokens).toBeCloseTo(0.5, 9)
  })

  it('a window added by a change starts at the fill of the first window; one removed is forgotten', () => {
    const { clock, limiter } = setup('2/s burst 2')
    expect(limiter.tryAcquire('k')).toBe(true) // half of the first window left
    limiter.setRate('k', '2/s burst 2, 4/10s')
    expect(limiter.inspect('k')!.tokens).toBeCloseTo(1, 9) // the first window's 1 of 2
    clock.set(1_000)
    // the second window had 2 of 4, earned 0.4: 2 grants, not 3
    expect(limiter.tryAcquire('k', 2)).toBe(true)
    expect(limiter.tryAcquire('k')).toBe(false)
    limiter.setRate('k', '2/s burst 2')
    clock.set(2_000)
    expect(limiter.tryAcquire('k', 2)).toBe(true) // the second window's debt went with it
  })

  it('a Retry-After and a penalty hold over every window', () => {
    const { clock, limiter } = setup()
    limiter.penalize('k', 3_000)
    expect(limiter.tryAcquire('k')).toBe(false)
    const reservation = granted(limiter.reserve('k'))
    expect(reservation.delayMs).toBe(3_000)
    expect(limiter.inspect('k')!.rate.extraWindows![0]!.limit).toBeLessThan(5) // the second window lowered too
    clock.set(3_000)
    expect(reservation.cancel()).toBe(true)
    expect(limiter.tryAcquire('k')).toBe(true)
  })

  it('setShare divides every window', () => {
    const { limiter } = setup('10/s, 20/min')
    limiter.setShare(2)
    expect(limiter.rateOf('k')).toEqual({
      limit: 5,
      intervalMs: 1_000,
      burst: 5,
      extraWindows: [{ limit: 10, intervalMs: 60_000, burst: 10 }],
    })
    // a cost above the smallest window's share is refused up front
    expect(() => limiter.tryAcquire('k', 6)).toThrow(RangeError)
  })

  it('a single-window key beside it keeps one arrival time: no side entry', () => {
    const { limiter } = setup('10/s')
    limiter.setRate('multi', '10/s, 100/min')
    expect(limiter.tryAcquire('single')).toBe(true)
    expect(limiter.tryAcquire('multi')).toBe(true)
    expect(limiter.inspect('single')!.rate.extraWindows).toBeUndefined()
    expect(limiter.inspect('multi')!.rate.extraWindows).toHaveLength(1)
  })

  it('a key whose first window is full but a later one is not is never evicted', () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '1/s, 2/day', clock, maxKeys: 1 })
    expect(limiter.tryAcquire('a')).toBe(true)
    clock.set(5_000) // the first window is full again; the daily one holds 1 of 2
    expect(limiter.tryAcquire('b')).toBe(false) // table full: 'a' is not a fresh bucket
    expect(limiter.size).toBe(1)
    expect(granted(limiter.reserve('a')).delayMs).toBe(0)
    expect(limiter.tryAcquire('a')).toBe(false) // the daily window is spent, as it was kept
  })

  it('keeps the later windows in step when the limiter moves its epoch (every 2^22 ms)', () => {
    const { clock, limiter } = setup('1/s, 2/day')
    expect(limiter.tryAcquire('k')).toBe(true)
    clock.set(1_000)
    expect(limiter.tryAcquire('k')).toBe(true)
    // the daily window earns a unit every 12 h: its next one is at 12 h, whatever the epoch
    // (a second before, not a ms: a millionth of a unit, 43 ms here, absorbs rounding)
    for (const atMs of [2 ** 22 + 1, 2 ** 23 + 2, 43_199_000]) {
      clock.set(atMs)
      expect(limiter.tryAcquire('k'), `at ${atMs} ms`).toBe(false)
    }
    clock.set(43_200_000)
    expect(limiter.tryAcquire('k')).toBe(true)
  })
})
