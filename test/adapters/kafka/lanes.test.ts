import { describe, expect, it } from 'vitest'
import { LaneGroup, LaneWake } from '../../../src/adapters/kafka/lanes.js'

interface Item {
  merchantKey: string
  n: number
}

function lane() {
  return new LaneGroup<Item>('t:0').laneFor('m')
}

describe('Lane: one merchant in one small object', () => {
  it('keeps its items in order, the head inline and the queue behind it only while needed', () => {
    const l = lane()
    expect(l.size).toBe(0)
    expect(l.peek()).toBeUndefined()
    for (let n = 0; n < 5; n++) l.push({ merchantKey: 'm', n })
    expect(l.size).toBe(5)
    const shifted: number[] = []
    while (l.size > 0) shifted.push(l.shift()!.n)
    expect(shifted).toEqual([0, 1, 2, 3, 4])
    expect(l.shift()).toBeUndefined()
    l.push({ merchantKey: 'm', n: 9 })
    expect(l.peek()?.n).toBe(9)
    expect(l.size).toBe(1)
  })

  it('keeps its merchant key whether it holds no item, one or many (the key shares a field with the items)', () => {
    const l = lane()
    const seen: number[] = []
    let next = 0
    // Interleaved pushes and shifts cross empty -> one -> many -> one -> empty repeatedly.
    for (const step of [1, 2, -1, 3, -4, -1, 1, -1, 2, -2]) {
      for (let i = 0; i < Math.abs(step); i++) {
        if (step > 0) l.push({ merchantKey: 'm', n: next++ })
        else seen.push(l.shift()!.n)
        expect(l.merchantKey).toBe('m')
      }
    }
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8])
    expect(l.size).toBe(0)
    expect(l.peek()).toBeUndefined()
  })

  it('holds state, flags, wake-up kind and attempts apart in one integer, whatever the attempt count', () => {
    const l = lane()
    l.state = 'running'
    l.late = true
    l.admitted = true
    l.onWake = LaneWake.READY
    // past 2^31 / 64 attempts a bit-shift packing would overflow into the flags
    l.attempts = 2 ** 31
    l.attempts++
    expect(l.attempts).toBe(2 ** 31 + 1)
    expect([l.state, l.late, l.counted, l.admitted, l.onWake]).toEqual([
      'running',
      true,
      false,
      true,
      LaneWake.READY,
    ])
    l.counted = true
    l.late = false
    l.state = 'waiting'
    expect([l.state, l.late, l.counted, l.admitted, l.attempts]).toEqual([
      'waiting',
      false,
      true,
      true,
      2 ** 31 + 1,
    ])
  })

  it('shift starts the next head with no attempt made, keeping the state and flags', () => {
    const l = lane()
    l.push({ merchantKey: 'm', n: 1 })
    l.push({ merchantKey: 'm', n: 2 })
    l.state = 'running'
    l.counted = true
    l.attempts = 3
    l.shift()
    expect([l.attempts, l.state, l.counted, l.peek()?.n]).toEqual([0, 'running', true, 2])
  })
})
