import { describe, expect, it } from 'vitest'
import { ParkingReads } from '../../../src/adapters/kafka/parking-reads.js'

describe('ParkingReads', () => {
  it('gives each merchant its messages passed over back oldest first, one front at a time', () => {
    const reads = new ParkingReads()
    reads.passOver('slow', 10, 0)
    reads.passOver('fast', 11, 1)
    reads.passOver('slow', 12, 2)
    expect(reads.size).toBe(3)
    expect(reads.skipping('slow')).toBe(true)
    expect(reads.merchantAt(12)).toBe('slow')
    expect(reads.merchantAt(13)).toBeUndefined()
    // Only its oldest may be taken back: 12 waits behind 10.
    expect(reads.front('slow')).toEqual({ offset: 10, seq: 0 })
    expect(reads.take('slow')).toEqual({ offset: 10, seq: 0 })
    expect(reads.front('slow')).toEqual({ offset: 12, seq: 2 })
    expect(reads.merchantAt(10)).toBeUndefined()
    expect(reads.take('slow')).toEqual({ offset: 12, seq: 2 })
    // No message left passed over: its newer ones are read as usual again.
    expect(reads.skipping('slow')).toBe(false)
    expect(reads.take('slow')).toBeUndefined()
    expect(reads.size).toBe(1)
  })

  it('finds where to read again: the lowest front of a merchant that can take it back, after an offset', () => {
    const reads = new ParkingReads()
    reads.passOver('a', 5, 0)
    reads.passOver('b', 7, 1)
    reads.passOver('a', 9, 2)
    expect(reads.earliest(() => true)).toBe(5)
    expect(reads.earliest((m) => m === 'b')).toBe(7)
    // After 5: a's front (5) is not past it, so b's is the one.
    expect(reads.earliest(() => true, 5)).toBe(7)
    expect(reads.earliest(() => false)).toBeUndefined()
    expect(new ParkingReads().earliest(() => true)).toBeUndefined()
  })
  it('remembers the newest source offset read per merchant until it catches up', () => {
    const reads = new ParkingReads()
    expect(reads.lastRead('a')).toBe(-1)
    reads.read('a', 40)
    reads.read('a', 41)
    expect(reads.lastRead('a')).toBe(41)
    reads.caughtUp('a')
    expect(reads.lastRead('a')).toBe(-1)
  })
})
