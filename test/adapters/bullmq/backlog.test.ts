import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { Backlog, type Promotion } from '../../../src/adapters/bullmq/backlog.js'
import { FakeClock, KeyedLimiter } from '../../../src/limiter/index.js'
import { entryOf, FakeTimers, MemoryBacklogStore } from './backlog-fakes.js'

// t0 is a wall-clock reading: the backlog's times are BullMQ's, in epoch ms.
const t0 = 1_700_000_000_000
const horizonMs = 1_000
const leadMs = 200

function setup(rate: string, store = new MemoryBacklogStore(), clock = new FakeClock(t0), share = 1) {
  const limiter = new KeyedLimiter({ rate, clock })
  if (share > 1) limiter.setShare(share)
  const timers = new FakeTimers(clock)
  const backlog = new Backlog({
    store,
    limiter,
    wallClock: clock,
    timers,
    horizonMs,
    leadMs,
    batchSize: 100,
    sign: (_jobId, carried) => carried,
    logger: pino({ level: 'silent' }),
  })
  return { store, clock, limiter, timers, backlog }
}

async function park(backlog: Backlog, merchantKey: string, count: number, from = 0): Promise<void> {
  for (let i = from; i < from + count; i++) await backlog.add(merchantKey, entryOf(`${merchantKey}-${i}`), 0)
}

describe('Backlog', () => {
  it('promotes a merchant’s parked jobs in order, each reserved within the horizon, spaced at the rate', async () => {
    const { store, timers, backlog } = setup('10/s burst 1')
    await park(backlog, 'm', 50)
    await timers.runFor(3_000, 10)
    const promoted = store.promoted
    // 3 s of tokens plus half to all of the horizon's worth ahead (it is refilled every half horizon).
    expect(promoted.length).toBeGreaterThanOrEqual(35)
    expect(promoted.length).toBeLessThanOrEqual(41)
    expect(promoted.map((p) => p.entry.jobId)).toEqual(promoted.map((_, i) => `m-${i}`))
    const reserved = promoted.map((p) => p.carried.reservedAtWallMs)
    expect(reserved.slice(1).map((at, i) => at - reserved[i]!)).toEqual(Array(promoted.length - 1).fill(100))
    // Due back from BullMQ the lead before its reservation (or at once, when nearer than that).
    // (The first promotion ran at t0 + 10, the first fake-timer step.)
    for (const p of promoted) {
      expect(p.dueAtWallMs).toBe(Math.max(t0 + 10, p.carried.reservedAtWallMs - leadMs))
    }
    expect(promoted.at(-1)!.dueAtWallMs).toBe(promoted.at(-1)!.carried.reservedAtWallMs - leadMs)
  })

  it('never reserves a promoted job further ahead than the horizon', async () => {
    const { store, timers, backlog, clock } = setup('10/s burst 1')
    const promotedAt: number[] = []
    const promote = store.promote.bind(store)
    store.promote = async (merchantKey: string, promotions: readonly Promotion[]) => {
      for (const _ of promotions) promotedAt.push(clock.now())
      return promote(merchantKey, promotions)
    }
    await park(backlog, 'm', 30)
    await timers.runFor(2_500, 10)
    store.promoted.forEach((p, i) => {
      expect(p.carried.reservedAtWallMs - promotedAt[i]!).toBeLessThanOrEqual(horizonMs)
    })
  })

  it('costs a bounded number of store calls per promoted job, whatever the backlog’s size, with one timer', async () => {
    const { store, timers, backlog } = setup('50/s burst 1')
    await park(backlog, 'm', 10_000)
    const callsAfterParking = store.calls
    await timers.runFor(10_000, 20)
    const promoted = store.promoted.length
    expect(promoted).toBeGreaterThanOrEqual(520)
    // Half a horizon (25 jobs) per head + promote pair: about 0.08 calls per job.
    expect((store.calls - callsAfterParking) / promoted).toBeLessThan(0.2)
    expect(timers.size).toBeLessThanOrEqual(1)
  })

  it('two processes sharing a backlog promote each job once, in order, together at the whole rate', async () => {
    const store = new MemoryBacklogStore()
    const clock = new FakeClock(t0)
    const a = setup('20/s burst 2', store, clock, 2)
    const b = setup('20/s burst 2', store, clock, 2)
    await park(a.backlog, 'm', 100)
    b.backlog.wake('m')
    // Each process's timers fire on the shared clock.
    for (let step = 0; step < 300; step++) {
      await a.timers.runFor(5, 5)
      clock.advance(-5)
      await b.timers.runFor(5, 5)
    }
    const ids = store.promoted.map((p) => p.entry.jobId)
    expect(new Set(ids).size).toBe(ids.length)
    expect(ids).toEqual(ids.map((_, i) => `m-${i}`))
    // 1.5 s at 20/s, plus half to all of the horizon ahead: each process at its share of 10/s.
    expect(ids.length).toBeGreaterThanOrEqual(40)
    expect(ids.length).toBeLessThanOrEqual(53)
  })

  it('a raise reaches a slow merchant’s backlog at once through ratesChanged, not at its next due time', async () => {
    const { store, timers, backlog, limiter } = setup('1/min burst 1')
    await park(backlog, 'm', 40)
    await timers.runFor(5_000, 50)
    expect(store.promoted).toHaveLength(1)
    limiter.setRate('m', '10/s burst 1')
    backlog.ratesChanged(['m'])
    await timers.runFor(2_000, 10)
    // The tokens of the old rate were spent; from the raise on, 10/s plus the horizon.
    expect(store.promoted.length).toBeGreaterThanOrEqual(25)
  })

  it('lets go of a merchant whose backlog is empty: no timer left, its new jobs no longer held', async () => {
    const { timers, backlog } = setup('100/s burst 10')
    await park(backlog, 'm', 5)
    expect(backlog.holds('m')).toBe(true)
    await timers.runFor(1_000, 10)
    expect(backlog.holds('m')).toBe(false)
    expect(timers.size).toBe(0)
  })

  it('drops a job no longer parked (back by its safety net) and gives its tokens to the next one', async () => {
    const { store, timers, backlog } = setup('10/s burst 1')
    await park(backlog, 'm', 5)
    store.gone.add('m-1')
    await timers.runFor(1_000, 10)
    const first = store.promoted[0]!.carried.reservedAtWallMs
    const promoted = store.promoted.map((p) => [p.entry.jobId, p.carried.reservedAtWallMs - first])
    expect(promoted.slice(0, 3)).toEqual([
      ['m-0', 0],
      ['m-2', 100],
      ['m-3', 200],
    ])
  })

  it('start promotes the backlogs left in the store by processes that are gone', async () => {
    const store = new MemoryBacklogStore()
    const gone = setup('10/s burst 1', store)
    await park(gone.backlog, 'm', 3)
    gone.backlog.stop()
    const fresh = setup('10/s burst 1', store)
    await fresh.backlog.start()
    await fresh.timers.runFor(500, 10)
    expect(store.promoted.map((p) => p.entry.jobId)).toEqual(['m-0', 'm-1', 'm-2'])
  })
})

describe('Backlog and limit keys (issue 18)', () => {
  const parked = (merchantKey: string, i: number, limitKeys: readonly string[]) => ({
    ...entryOf(`${merchantKey}-${i}`),
    limitKeys,
  })

  it('charges each parked job to the keys it was parked with: two merchants under a parent share its rate', async () => {
    const { store, timers, backlog, limiter } = setup('20/s burst 1')
    limiter.setRate('psp', '10/s burst 1')
    for (let i = 0; i < 40; i++) {
      await backlog.add('a', parked('a', i, ['psp', 'psp:a']), 0)
      await backlog.add('b', parked('b', i, ['psp', 'psp:b']), 0)
    }
    await timers.runFor(3_000, 10)
    const reserved = store.promoted.map((p) => p.carried.reservedAtWallMs).sort((x, y) => x - y)
    // The parent's 10/s spaces every reservation of both merchants 100 ms apart, whatever
    // their own 20/s would allow; 3 s of tokens plus at most the horizon ahead.
    expect(reserved.slice(1).every((at, i) => at - reserved[i]! >= 100)).toBe(true)
    expect(reserved.length).toBeGreaterThanOrEqual(30)
    expect(reserved.length).toBeLessThanOrEqual(1 + 30 + 10)
    // Each merchant still in its own order.
    for (const m of ['a', 'b']) {
      const ids = store.promoted.filter((p) => p.merchantKey === m).map((p) => p.entry.jobId)
      expect(ids).toEqual(ids.map((_, i) => `${m}-${i}`))
    }
  })

  it("two merchants' backlogs under a parent that does not bind each run at their own rate (the lost-gap probe)", async () => {
    // 20/s each under 50/s: each promotion reserves only at the merchant's own time, never
    // ahead (the limiter defers instead), so neither holds the parent's time before it.
    const { store, timers, backlog, limiter } = setup('20/s')
    limiter.setRate('psp', '50/s')
    for (let i = 0; i < 300; i++) {
      await backlog.add('a', parked('a', i, ['psp', 'psp:a']), 0)
      await backlog.add('b', parked('b', i, ['psp', 'psp:b']), 0)
    }
    await timers.runFor(10_000, 10)
    const reservedIn = (m: string, fromMs: number, toMs: number) =>
      store.promoted.filter(
        (p) =>
          p.merchantKey === m && p.carried.reservedAtWallMs >= fromMs && p.carried.reservedAtWallMs < toMs,
      ).length
    for (const m of ['a', 'b'])
      expect(reservedIn(m, t0 + 2_000, t0 + 10_000) / 8).toBeGreaterThanOrEqual(19.5)
  })

  it('tells the limit keys of the job at the front of each backlog, for explain', async () => {
    const { backlog } = setup('1/min burst 1')
    await backlog.add('a', parked('a', 0, ['psp', 'psp:a']), 60_000)
    await backlog.add('m', entryOf('m-0'), 60_000)
    expect(backlog.merchants().get('a')?.limitKeys).toEqual(['psp', 'psp:a'])
    expect(backlog.merchants().get('m')?.limitKeys).toBeUndefined()
  })

  it('charges a parked job whose stored keys no longer pass to its merchant key, and goes on with the backlog', async () => {
    const { store, timers, backlog, limiter } = setup('10/s burst 1')
    limiter.setRate('psp', '1/min burst 1')
    await backlog.add('m', parked('m', 0, ['psp:m', 'psp:m']), 0)
    await backlog.add('m', parked('m', 1, ['psp', 'psp:m']), 0)
    await timers.runFor(500, 10)
    // m-0 is charged to 'm' alone (not stuck behind a TypeError); m-1 takes the parent's one token.
    expect(store.promoted.map((p) => p.entry.jobId)).toEqual(['m-0', 'm-1'])
    expect(limiter.inspect('psp')?.tokens).toBeLessThan(1)
  })
})
