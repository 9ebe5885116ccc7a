import { describe, expect, it } from 'vitest'
import { ReadOnce } from '../../src/control/read-once.js'

describe('ReadOnce', () => {
  it('passes over a record read again after a rebalance, per partition, and counts it', () => {
    const once = new ReadOnce()
    // partition 0 read to offset 2, partition 1 to offset 0
    expect(['0', '1', '2'].map((offset) => once.first(0, offset))).toEqual([true, true, true])
    expect(once.first(1, '0')).toBe(true)
    // a new assignment starts both at the beginning again: what was handled is passed over
    expect(['0', '1', '2'].map((offset) => once.first(0, offset))).toEqual([false, false, false])
    expect(once.first(1, '0')).toBe(false)
    // the rest of the partition is new
    expect(once.first(0, '3')).toBe(true)
    expect(once.first(1, '1')).toBe(true)
    expect(once.reread()).toBe(4)
  })

  it('takes offsets past a gap (compaction, transaction markers) and beyond 2^53', () => {
    const once = new ReadOnce()
    expect(once.first(0, '5')).toBe(true)
    expect(once.first(0, '9')).toBe(true)
    expect(once.first(0, '7')).toBe(false) // below what was handled: read before
    expect(once.first(0, '9007199254740993')).toBe(true)
    expect(once.first(0, '9007199254740992')).toBe(false)
  })
})
