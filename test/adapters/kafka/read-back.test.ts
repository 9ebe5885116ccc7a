import { describe, expect, it } from 'vitest'
import { ReadBackGate } from '../../../src/adapters/kafka/read-back.js'

describe('ReadBackGate', () => {
  it('lets messages through once their source is read past them, in the order they came', () => {
    const gate = new ReadBackGate<{ offset: number }>()
    let readTo = 0
    const pushed: number[] = []
    const release = () =>
      gate.release(
        'src:0',
        (item) => item.offset < readTo,
        (item) => pushed.push(item.offset),
      )
    expect(gate.holding('src:0')).toBe(false)
    gate.hold('src:0', { offset: 30 })
    gate.hold('src:0', { offset: 31 })
    gate.hold('src:0', { offset: 40 })
    expect(gate.holding('src:0')).toBe(true)
    release()
    expect(pushed).toEqual([])
    readTo = 35
    release()
    expect(pushed).toEqual([30, 31])
    expect(gate.holding('src:0')).toBe(true)
    readTo = 41
    release()
    expect(pushed).toEqual([30, 31, 40])
    expect(gate.holding('src:0')).toBe(false)
  })

  it('forgets what waits for a dropped partition', () => {
    const gate = new ReadBackGate<{ offset: number }>()
    gate.hold('src:1', { offset: 1 })
    gate.drop('src:1')
    expect(gate.holding('src:1')).toBe(false)
    const pushed: number[] = []
    gate.release(
      'src:1',
      () => true,
      (item) => pushed.push(item.offset),
    )
    expect(pushed).toEqual([])
  })
})
