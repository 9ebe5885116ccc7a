import { describe, expect, it } from 'vitest'
import { type ParkedJob, ParkedJobs } from '../../../src/adapters/bullmq/parked.js'

const job = (id: string): ParkedJob => ({ id, promote: async () => undefined })

describe('ParkedJobs', () => {
  it('gives back each merchant’s parked jobs oldest first', () => {
    const parked = new ParkedJobs()
    parked.park('slow', job('1'))
    parked.park('other', job('2'))
    parked.park('slow', job('3'))
    expect(parked.size).toBe(3)
    expect(parked.takeOldest('slow')?.id).toBe('1')
    expect(parked.takeOldest('slow')?.id).toBe('3')
    expect(parked.takeOldest('slow')).toBeUndefined()
    expect(parked.size).toBe(1)
  })

  it('forgets the oldest beyond its bound (they come back by their fallback delay)', () => {
    const parked = new ParkedJobs(2)
    for (const id of ['1', '2', '3']) parked.park('slow', job(id))
    expect(parked.takeOldest('slow')?.id).toBe('2')
    expect(parked.size).toBe(1)
  })
})
