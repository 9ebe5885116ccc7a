import { describe, expect, it } from 'vitest'
import { OffsetTracker } from '../../../src/adapters/kafka/offset-tracker.js'

describe('OffsetTracker', () => {
  it('has no watermark before the first offset (nothing to commit)', () => {
    const tracker = new OffsetTracker()
    expect(tracker.watermark).toBeUndefined()
    expect(tracker.nextOffset).toBeUndefined()
  })

  it('holds the watermark at the lowest offset not done, whatever order offsets complete in', () => {
    const tracker = new OffsetTracker()
    const seq = [10, 11, 12, 13].map((offset) => tracker.track(offset))
    const steps: [completed: number, watermark: number][] = [
      [2, 10], // 12 done, 10 still pending
      [1, 10], // 11 done, 10 still pending
      [0, 13], // 10 done: 10..12 done, 13 pending
      [3, 14], // all done: the next offset to fetch
    ]
    for (const [index, watermark] of steps) {
      expect(tracker.complete(seq[index]!)).toBe(true)
      expect(tracker.watermark).toBe(watermark)
    }
    expect(tracker.pending).toBe(0)
  })

  it('skips offsets the partition never delivers (compaction gaps)', () => {
    const tracker = new OffsetTracker()
    const a = tracker.track(5)
    const b = tracker.track(9)
    tracker.complete(a)
    expect(tracker.watermark).toBe(9)
    tracker.complete(b)
    expect(tracker.watermark).toBe(10)
  })

  it('moves past trailing records it never sees with advanceTo, never backwards', () => {
    const tracker = new OffsetTracker()
    tracker.complete(tracker.track(0))
    tracker.advanceTo(3) // offsets 1 and 2 were transaction markers
    expect(tracker.watermark).toBe(3)
    tracker.advanceTo(2)
    expect(tracker.nextOffset).toBe(3)
  })

  it('ignores a second or unknown completion', () => {
    const tracker = new OffsetTracker()
    const seq = tracker.track(0)
    expect(tracker.complete(seq)).toBe(true)
    expect(tracker.complete(seq)).toBe(false)
    expect(tracker.complete(seq + 5)).toBe(false)
    expect(tracker.watermark).toBe(1)
  })

  it('refuses offsets below the next offset and offsets that are not whole numbers >= 0', () => {
    const tracker = new OffsetTracker()
    tracker.track(7)
    expect(() => tracker.track(7)).toThrow(TypeError)
    expect(() => tracker.track(3)).toThrow('expected an offset >= 8, got 3')
    expect(() => new OffsetTracker().track(-1)).toThrow(TypeError)
    expect(() => new OffsetTracker().track(1.5)).toThrow(TypeError)
  })

  it('keeps sequence numbers valid across compaction of a long done prefix', () => {
    const tracker = new OffsetTracker()
    const seqs: number[] = []
    for (let offset = 0; offset < 5_000; offset++) seqs.push(tracker.track(offset))
    // Complete all but offset 4_000 in order, then the laggard.
    for (let offset = 0; offset < 5_000; offset++) if (offset !== 4_000) tracker.complete(seqs[offset]!)
    expect(tracker.watermark).toBe(4_000)
    expect(tracker.pending).toBe(1)
    expect(tracker.complete(seqs[4_000]!)).toBe(true)
    expect(tracker.watermark).toBe(5_000)
    const later = tracker.track(5_000)
    expect(tracker.watermark).toBe(5_000)
    tracker.complete(later)
    expect(tracker.watermark).toBe(5_001)
  })
})
