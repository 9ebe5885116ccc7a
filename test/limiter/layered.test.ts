import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import {
  type Granted,
  KeyedLimiter,
  type KeyedLimiterOptions,
  type Reservation,
  ReservationBook,
} from '../../src/limiter/limiter.js'

// A parent 'psp' at 2/s burst 1 (one unit every 500 ms) over merchants at the default
// 10/s burst 2: the parent binds after its one unit, the merchants after two.
function setup(options: Partial<KeyedLimiterOptions> = {}) {
  const clock = new FakeClock(0)
  const limiter = new KeyedLimiter({ rate: '10/s burst 2', clock, horizonMs: 10_000, ...options })
  limiter.setRate('psp', '2/s burst 1')
  return { clock, limiter }
}

function granted(reservation: Reservation): Granted {
  if (!reservation.ok) throw new Error(`expected a grant, got ${reservation.reason}`)
  return reservation
}

/** tokensOf is a key's tokens now; a key not held is a full bucket, at the default burst of 2. */
function tokensOf(limiter: KeyedLimiter, key: string): number {
  return limiter.inspect(key)?.tokens ?? 2
}

describe('KeyedLimiter: a list of keys', () => {
  it('grants at the latest time every key can meet, and charges each key at that time', () => {
    const { clock, limiter } = setup()
    const rows: Array<[atMs: number, keys: string[], delayMs: number, comment: string]> = [
      [0, ['psp', 'm1'], 0, 'both full: now'],
      [0, ['psp', 'm2'], 500, 'the parent has no unit until 500 ms; m2 has two'],
      [0, ['psp', 'm1'], 1_000, 'the parent again, behind m2'],
      // GCRA keeps one arrival time per key: a unit charged at 1,000 ms holds m1's time before it
      [0, ['m1'], 1_000, 'm1 alone: charged at 0 and at 1,000 ms, its bucket is spent until 1,000'],
      [0, ['m1'], 1_100, 'one unit per 100 ms after that'],
      [100, ['m2', 'm1'], 1_100, 'm2 has no rate of its own: an outer key that does not limit'],
    ]
    for (const [atMs, keys, delayMs, comment] of rows) {
      clock.set(atMs)
      const reservation = granted(limiter.reserve(keys))
      expect(reservation.delayMs, comment).toBeCloseTo(delayMs, 9)
      expect(reservation.key, comment).toBe(keys[keys.length - 1])
      expect(reservation.keys, comment).toEqual(keys)
    }
  })

  it('a one-element list is its key, and tryAcquire takes a list as reserve does', () => {
    const { limiter } = setup()
    expect(limiter.tryAcquire(['m1'])).toBe(true)
    expect(limiter.tryAcquire('m1')).toBe(true)
    expect(limiter.tryAcquire(['m1'])).toBe(false)
    expect(limiter.tryAcquire(['psp', 'm2'])).toBe(true)
    // the parent is empty: m3 is refused and not charged
    expect(limiter.tryAcquire(['psp', 'm3'])).toBe(false)
    expect(tokensOf(limiter, 'm3')).toBe(2)
    expect(granted(limiter.reserve(['m4'])).keys).toEqual(['m4'])
  })

  it('a parent without a rate of its own does not limit, and is not held', () => {
    const { limiter } = setup()
    for (let i = 0; i < 100; i++) expect(limiter.tryAcquire(['psp:unset', `m${i}`])).toBe(true)
    expect(limiter.inspect('psp:unset')).toBeUndefined()
    expect(limiter.size).toBe(100)
    // given a rate, it limits at once
    limiter.setRate('psp:unset', '1/s burst 1')
    expect(limiter.tryAcquire(['psp:unset', 'm200'])).toBe(true)
    expect(limiter.tryAcquire(['psp:unset', 'm201'])).toBe(false)
    // cleared, it stops
    limiter.setRate('psp:unset', null)
    expect(limiter.tryAcquire(['psp:unset', 'm201'])).toBe(true)
  })

  it('three levels: the middle key limits only with a rate of its own, the innermost always', () => {
    const { limiter } = setup()
    limiter.setRate('psp', '100/s burst 100')
    for (let i = 0; i < 2; i++) expect(limiter.tryAcquire(['psp', 'acct', 'm1'])).toBe(true)
    expect(limiter.tryAcquire(['psp', 'acct', 'm1'])).toBe(false)
    limiter.setRate('acct', '1/s burst 1')
    expect(limiter.tryAcquire(['psp', 'acct', 'm2'])).toBe(true)
    expect(limiter.tryAcquire(['psp', 'acct', 'm3'])).toBe(false)
    expect(tokensOf(limiter, 'psp')).toBeCloseTo(97, 9)
  })

  it('charges no key when one refuses: the child, the parent, a Retry-After, or beyond the horizon', () => {
    const { clock, limiter } = setup({ horizonMs: 400 })
    limiter.setRate('psp', '2/s burst 2')
    // the child refuses (m1 empty): the parent keeps its units
    limiter.tryAcquire('m1')
    limiter.tryAcquire('m1')
    expect(limiter.tryAcquire(['psp', 'm1'])).toBe(false)
    expect(tokensOf(limiter, 'psp')).toBe(2)
    // a Retry-After on the child: deferred beyond the horizon, nothing charged, the child named
    limiter.penalize('m2', 5_000)
    const blocked = limiter.reserve(['psp', 'm2'])
    expect(blocked).toMatchObject({ ok: false, reason: 'beyond-horizon', bindingKey: 'm2' })
    expect(tokensOf(limiter, 'psp')).toBe(2)
    // the parent refuses: the child keeps its units
    limiter.tryAcquire(['psp', 'm3'])
    limiter.tryAcquire(['psp', 'm4'])
    const before = tokensOf(limiter, 'm5')
    expect(limiter.tryAcquire(['psp', 'm5'])).toBe(false)
    const deferred = limiter.reserve(['psp', 'm5'])
    // the parent's next unit is 500 ms away, 100 past the horizon of 400
    expect(deferred).toEqual({ ok: false, delayMs: 100, reason: 'beyond-horizon', bindingKey: 'psp' })
    expect(tokensOf(limiter, 'm5')).toBe(before)
    clock.advance(100)
    expect(granted(limiter.reserve(['psp', 'm5'])).delayMs).toBeCloseTo(400, 9)
  })

  it('charges no key when the table cannot hold one of them: table-full names that key', () => {
    const { limiter } = setup({ maxKeys: 3 })
    limiter.setRate('psp', '100/s burst 100')
    // m1 and m2 in debt fill the table beside the parent
    limiter.reserve(['psp', 'm1'], 2)
    limiter.reserve(['psp', 'm1'], 2)
    limiter.reserve(['psp', 'm2'], 2)
    limiter.reserve(['psp', 'm2'], 2)
    const parentBefore = tokensOf(limiter, 'psp')
    expect(limiter.tryAcquire(['psp', 'm3'])).toBe(false)
    const deferred = limiter.reserve(['psp', 'm3'])
    expect(deferred).toMatchObject({ ok: false, reason: 'table-full', bindingKey: 'm3' })
    expect(tokensOf(limiter, 'psp')).toBe(parentBefore)
    expect(limiter.stats().tableFull).toBe(2)
  })

  it('throws a TypeError that says what is wrong with a list', () => {
    const { limiter } = setup()
    expect(() => limiter.tryAcquire([])).toThrow(/expected a list of 1 to 4 keys, got an empty list/)
    expect(() => limiter.reserve(['a', 'b', 'c', 'd', 'e'])).toThrow(
      /expected a list of 1 to 4 keys, got 5 keys/,
    )
    expect(() => limiter.tryAcquire(['psp', 'psp'])).toThrow(
      /expected distinct keys, got 'psp' at index 0 and 1/,
    )
    expect(() => limiter.tryAcquire(['psp', ''])).toThrow(/got an empty key at index 1/)
    expect(() => limiter.tryAcquire(['psp', 7 as unknown as string])).toThrow(/got number at index 1/)
    expect(() => limiter.tryAcquire(7 as unknown as string)).toThrow(
      /expected a key or a list of 1 to 4 keys, got number/,
    )
    expect(() => limiter.reserveIn(new ReservationBook(), [])).toThrow(TypeError)
    // a cost no key of the list can ever take is a RangeError, nothing charged
    expect(() => limiter.tryAcquire(['psp', 'm1'], 2)).toThrow(/cost 2 is above the bucket's capacity of 1/)
    expect(tokensOf(limiter, 'm1')).toBe(2)
  })

  it('explain names the binding limit: the parent, a longer window, a Retry-After; undefined when free', () => {
    const { clock, limiter } = setup()
    limiter.setRate('m2', '10/s burst 2, 3/min burst 3')
    expect(limiter.explain(['psp', 'm1'])).toBeUndefined()
    limiter.tryAcquire(['psp', 'm1'])
    expect(limiter.explain(['psp', 'm1'])).toEqual({ waitMs: 500, bindingKey: 'psp', reason: 'rate' })
    clock.advance(500)
    for (let i = 0; i < 3; i++) limiter.reserve('m2')
    const window = limiter.explain(['psp', 'm2'])!
    expect(window).toMatchObject({ bindingKey: 'm2', reason: 'window', windowIntervalMs: 60_000 })
    // three units of 20 s each at 500 ms: the minute's window has its next at 20.5 s
    expect(window.waitMs).toBeCloseTo(20_000, 6)
    limiter.penalize('m3', 30_000)
    expect(limiter.explain(['psp', 'm3'])).toEqual({
      waitMs: 30_000,
      bindingKey: 'm3',
      reason: 'retry-after',
    })
    expect(limiter.explain('m4')).toBeUndefined()
  })
})

describe('KeyedLimiter: cancelling a reservation of several keys', () => {
  it('gives every key back what it still holds, by the single-key rule for each', () => {
    const { limiter } = setup()
    limiter.setRate('psp', '2/s burst 2')
    const first = granted(limiter.reserve(['psp', 'm1']))
    expect(first.cancel()).toBe(true)
    expect(tokensOf(limiter, 'psp')).toBeCloseTo(2, 9)
    expect(tokensOf(limiter, 'm1')).toBeCloseTo(2, 9)
    expect(first.cancel()).toBe(false)
    // m1's reservation, then m2's behind it on the parent: cancelling m1's gives m1 its
    // unit back, the parent nothing (a later reservation stands behind it there)
    const mine = granted(limiter.reserve(['psp', 'm1']))
    granted(limiter.reserve(['psp', 'm2']))
    mine.cancel()
    expect(tokensOf(limiter, 'm1')).toBeCloseTo(2, 9)
    expect(tokensOf(limiter, 'psp')).toBeCloseTo(0, 9)
  })

  it('gives nothing back for a reservation whose time has passed', () => {
    const { clock, limiter } = setup()
    granted(limiter.reserve(['psp', 'm1']))
    const later = granted(limiter.reserve(['psp', 'm1']))
    expect(later.delayMs).toBeCloseTo(500, 9)
    clock.advance(600)
    const psp = tokensOf(limiter, 'psp')
    const m1 = tokensOf(limiter, 'm1')
    later.cancel()
    expect(tokensOf(limiter, 'psp')).toBe(psp)
    expect(tokensOf(limiter, 'm1')).toBe(m1)
  })

  it('reserveIn holds the parts of every key in one row; cancelIn gives them back, release does not', () => {
    const { limiter } = setup()
    limiter.setRate('psp', '2/s burst 2')
    const book = new ReservationBook()
    const row = limiter.reserveIn(book, ['psp', 'm1'])
    expect(typeof row).toBe('number')
    expect(book.reservedAtMs(row as number)).toBe(0)
    expect(limiter.cancelIn(book, row as number)).toBe(true)
    expect(tokensOf(limiter, 'psp')).toBeCloseTo(2, 9)
    expect(tokensOf(limiter, 'm1')).toBeCloseTo(2, 9)
    expect(limiter.cancelIn(book, row as number)).toBe(false)
    const kept = limiter.reserveIn(book, ['psp', 'm1']) as number
    book.release(kept)
    expect(tokensOf(limiter, 'psp')).toBeCloseTo(1, 9)
    const deferred = limiter.reserveIn(book, ['psp', 'm2'], 1)
    expect(typeof deferred).toBe('number')
    expect(book.size).toBe(1)
  })

  it('keeps its times across a move of the epoch (a run past 2^22 ms)', () => {
    const { clock, limiter } = setup()
    clock.set(2 ** 22 - 100)
    granted(limiter.reserve(['psp', 'm1']))
    const ahead = granted(limiter.reserve(['psp', 'm1']))
    expect(ahead.delayMs).toBeCloseTo(500, 6)
    // the epoch moves here: the reservation is still ahead, and the latest, so it gives its unit back
    clock.advance(200)
    expect(limiter.inspect('psp')!.waitMs).toBeCloseTo(800, 6)
    ahead.cancel()
    expect(limiter.inspect('psp')!.waitMs).toBeCloseTo(300, 6)
  })
})
