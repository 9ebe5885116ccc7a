import { describe, expect, it } from 'vitest'
import { Deque } from '../../../src/adapters/kafka/deque.js'

describe('Deque', () => {
  it('is first in, first out across ring growth and wrap-around', () => {
    const deque = new Deque<number>()
    const out: number[] = []
    let next = 0
    // Interleave pushes and shifts so that the head wraps around the ring several times.
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 3; i++) deque.push(next++)
      out.push(deque.shift()!, deque.shift()!)
    }
    while (deque.length > 0) out.push(deque.shift()!)
    expect(out).toEqual(Array.from({ length: next }, (_, i) => i))
    expect(deque.shift()).toBeUndefined()
    expect(deque.peek()).toBeUndefined()
  })

  it('reads and replaces by index from the head, and refuses an index out of range', () => {
    const deque = new Deque<string>(2)
    for (const item of ['a', 'b', 'c']) deque.push(item)
    deque.shift()
    deque.push('d')
    expect([deque.at(0), deque.at(1), deque.at(2), deque.at(3)]).toEqual(['b', 'c', 'd', undefined])
    deque.set(1, 'C')
    expect([...deque]).toEqual(['b', 'C', 'd'])
    expect(() => deque.set(3, 'x')).toThrow(/expected an index in \[0, 3\), got 3/)
    deque.clear()
    expect(deque.length).toBe(0)
  })
})
