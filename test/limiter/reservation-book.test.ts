import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { KeyedLimiter, ReservationBook } from '../../src/limiter/limiter.js'

function setup(rate = '10/s') {
  const clock = new FakeClock(0)
  const limiter = new KeyedLimiter({ rate, clock, horizonMs: 1_000 })
  const book = new ReservationBook()
  return { clock, limiter, book }
}

function row(answer: number | { ok: false; reason: string }): number {
  if (typeof answer !== 'number') throw new Error(`expected a row, got ${answer.reason}`)
  return answer
}

function drain(limiter: KeyedLimiter, key: string): void {
  while (limiter.tryAcquire(key)) {}
}

describe('KeyedLimiter.reserveIn / cancelIn: reservations held as rows of a ReservationBook', () => {
  it('spaces reservations at the rate, as reserve does, with the time and delay of each', () => {
    const { limiter, book } = setup('10/s')
    drain(limiter, 'm1')
    for (let i = 1; i <= 3; i++) {
      const r = row(limiter.reserveIn(book, 'm1'))
      expect(book.lastDelayMs).toBe(i * 100)
      expect(book.reservedAtMs(r)).toBe(i * 100)
    }
    expect(book.size).toBe(3)
    // the next one is where reserve would put it
    const granted = limiter.reserve('m1')
    expect(granted.ok && granted.delayMs).toBe(400)
  })

  it('answers Deferred beyond the horizon and holds no row', () => {
    const { limiter, book } = setup('10/s')
    drain(limiter, 'm1')
    for (let i = 0; i < 10; i++) row(limiter.reserveIn(book, 'm1'))
    expect(limiter.reserveIn(book, 'm1')).toEqual({
      ok: false,
      delayMs: 100,
      reason: 'beyond-horizon',
      bindingKey: 'm1',
    })
    expect(book.size).toBe(10)
  })

  it('cancelIn returns the tokens of the latest reservation once, and frees its row', () => {
    const { limiter, book } = setup('10/s')
    drain(limiter, 'm1')
    row(limiter.reserveIn(book, 'm1'))
    const last = row(limiter.reserveIn(book, 'm1'))
    expect(limiter.cancelIn(book, last)).toBe(true)
    expect(limiter.cancelIn(book, last)).toBe(false)
    expect(book.holds(last)).toBe(false)
    expect(limiter.inspect('m1')?.tokens).toBe(-1)
    expect(book.lastDelayMs).toBe(200)
  })

  it('cancelIn gives nothing back for a reservation with a later one behind it, as Granted.cancel', () => {
    const { limiter, book } = setup('10/s')
    drain(limiter, 'm1')
    const first = row(limiter.reserveIn(book, 'm1'))
    row(limiter.reserveIn(book, 'm1'))
    expect(limiter.cancelIn(book, first)).toBe(true)
    row(limiter.reserveIn(book, 'm1'))
    expect(book.lastDelayMs).toBe(300)
  })

  it('release frees a row without refunding (the work ran); the row is reused', () => {
    const { clock, limiter, book } = setup('10/s')
    drain(limiter, 'm1')
    const first = row(limiter.reserveIn(book, 'm1'))
    clock.advance(100)
    book.release(first)
    expect(limiter.cancelIn(book, first)).toBe(false)
    expect(limiter.inspect('m1')?.tokens).toBe(0)
    const next = row(limiter.reserveIn(book, 'm2'))
    expect(next).toBe(first)
    expect(book.lastDelayMs).toBe(0)
  })

  it('keeps every row apart as the book grows past its first block', () => {
    const { limiter, book } = setup('1/s')
    const rows = Array.from({ length: 100 }, (_, i) => {
      drain(limiter, `m${i}`)
      return row(limiter.reserveIn(book, `m${i}`))
    })
    expect(new Set(rows).size).toBe(100)
    for (const r of rows) expect(book.reservedAtMs(r)).toBe(1_000)
    for (const r of rows) expect(limiter.cancelIn(book, r)).toBe(true)
    expect(book.size).toBe(0)
    for (let i = 0; i < 100; i++) expect(limiter.inspect(`m${i}`)?.tokens).toBe(0)
  })
})
