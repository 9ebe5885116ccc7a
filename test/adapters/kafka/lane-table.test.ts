import { describe, expect, it } from 'vitest'
import { LaneTable } from '../../../src/adapters/kafka/lane-table.js'

interface Entry {
  merchantKey: string
  n: number
}

/** xorshift32: a seeded sequence, so that a failing run can be replayed. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 2 ** 32
  }
}

describe('LaneTable: lanes by merchant key in one open-addressing array', () => {
  it('answers as a Map does through random sets, deletes and clears, across grows and shrinks', () => {
    for (const seed of [1, 7, 42, 2026]) {
      const next = random(seed)
      const table = new LaneTable<Entry>()
      const map = new Map<string, Entry>()
      for (let step = 0; step < 20_000; step++) {
        // Few keys in some stretches (dense runs, many deletes in them), many in others (grows).
        const keys = step % 5_000 < 2_500 ? 40 : 3_000
        const key = `merchant-${Math.floor(next() * keys)}`
        const roll = next()
        if (roll < 0.5) {
          const entry = { merchantKey: key, n: step }
          table.set(entry)
          map.set(key, entry)
        } else if (roll < 0.9999) {
          expect(table.delete(key)).toBe(map.delete(key))
        } else {
          table.clear()
          map.clear()
        }
        expect(table.get(key)).toBe(map.get(key))
        expect(table.size).toBe(map.size)
      }
      for (const [key, entry] of map) expect(table.get(key)).toBe(entry)
      expect(new Set(table.values())).toEqual(new Set(map.values()))
      for (const key of [...map.keys()]) expect(table.delete(key)).toBe(true)
      expect(table.size).toBe(0)
      expect(table.values()).toEqual([])
    }
  })

  it('finds every lane after deletes inside a run of colliding keys (backward shift)', () => {
    const table = new LaneTable<Entry>()
    const entries = Array.from({ length: 6 }, (_, n) => ({ merchantKey: `k${n}`, n }))
    for (const entry of entries) table.set(entry)
    // Six keys in eight slots: runs are long, and each delete must move what follows it.
    for (const gone of [2, 0, 5]) {
      expect(table.delete(`k${gone}`)).toBe(true)
      expect(table.get(`k${gone}`)).toBeUndefined()
    }
    for (const n of [1, 3, 4]) expect(table.get(`k${n}`)).toBe(entries[n])
    expect(table.delete('k2')).toBe(false)
    expect(table.size).toBe(3)
  })

  it('values is a copy: deleting while walking it visits every lane once', () => {
    const table = new LaneTable<Entry>()
    for (let n = 0; n < 100; n++) table.set({ merchantKey: `m${n}`, n })
    const seen: number[] = []
    for (const entry of table.values()) {
      seen.push(entry.n)
      table.delete(entry.merchantKey)
    }
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, n) => n))
    expect(table.size).toBe(0)
  })
})
