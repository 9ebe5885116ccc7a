import { describe, expect, it } from 'vitest'
import { CatchUp } from '../../src/control/catch-up.js'

describe('CatchUp', () => {
  it('is ready once every partition is read up to its high-water mark at start, and says so once', async () => {
    const calls: number[] = []
    const catchUp = new CatchUp((partitions) => calls.push(partitions))
    catchUp.target([
      { partition: 0, low: '0', high: '3' }, // offsets 0, 1, 2 to read
      { partition: 1, low: '5', high: '5' }, // empty: nothing to read
    ])
    catchUp.advance(0, '1')
    expect(catchUp.caughtUp()).toBe(false)
    catchUp.advance(7, '100') // a partition not in the target changes nothing
    expect(catchUp.caughtUp()).toBe(false)
    catchUp.advance(0, '2')
    expect(catchUp.caughtUp()).toBe(true)
    catchUp.advance(0, '3')
    await expect(catchUp.ready).resolves.toBeUndefined()
    expect(calls).toEqual([2])
  })

  it('a reader that starts over (offsets going back) loses no progress', () => {
    const catchUp = new CatchUp(() => {})
    catchUp.target([{ partition: 0, low: '0', high: '10' }])
    catchUp.advance(0, '8')
    catchUp.advance(0, '0') // a replaced consumer reads from the beginning again
    catchUp.advance(0, '9')
    expect(catchUp.caughtUp()).toBe(true)
  })

  it('a topic whose partitions are all empty is caught up at once', () => {
    const catchUp = new CatchUp(() => {})
    catchUp.target([{ partition: 0, low: '4', high: '4' }])
    expect(catchUp.caughtUp()).toBe(true)
  })

  it('abandon before catching up rejects ready; after, ready stays resolved', async () => {
    const early = new CatchUp(() => {})
    early.target([{ partition: 0, low: '0', high: '1' }])
    early.abandon(new Error('stopped'))
    await expect(early.ready).rejects.toThrow('stopped')

    const late = new CatchUp(() => {})
    late.target([])
    late.abandon(new Error('stopped'))
    await expect(late.ready).resolves.toBeUndefined()
  })
})
