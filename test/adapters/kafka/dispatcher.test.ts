import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import type { DeadLetter } from '../../../src/adapters/kafka/dead-letter.js'
import { Dispatcher, type Outcome } from '../../../src/adapters/kafka/dispatcher.js'
import type { Lane, LaneGroup } from '../../../src/adapters/kafka/lanes.js'
import { WakeQueue } from '../../../src/adapters/kafka/wake-queue.js'
import { PermanentFailureError, RetryLaterError } from '../../../src/errors.js'
import { FakeClock, KeyedLimiter, type KeyedLimiterOptions } from '../../../src/limiter/index.js'
import { FakeTimers } from './support/fake-timers.js'

interface Item {
  merchantKey: string
  n: number
  limitKeys?: string | readonly string[]
}

type Behaviour = (item: Item, attempt: number, signal: AbortSignal) => Promise<void>

/** harness wires a Dispatcher to a real KeyedLimiter on a FakeClock and records what happens. */
function harness(
  options: {
    limiter?: Partial<KeyedLimiterOptions>
    concurrency?: number
    maxAttempts?: number
    behaviour?: Behaviour
    deadLetter?: (item: Item, failure: DeadLetter) => Promise<void>
  } = {},
) {
  const clock = new FakeClock(0)
  const timers = new FakeTimers(clock)
  const limiter = new KeyedLimiter({ rate: '10/s', clock, ...options.limiter })
  const started: string[] = []
  const finished: string[] = []
  const deadLettered: { item: string; failure: DeadLetter }[] = []
  let running = 0
  let maxRunning = 0
  const behaviour: Behaviour = options.behaviour ?? (async () => undefined)
  const dispatcher = new Dispatcher<Item>({
    limiter,
    wakes: new WakeQueue({ now: () => limiter.now() }, timers),
    concurrency: options.concurrency ?? 10,
    maxAttempts: options.maxAttempts ?? 3,
    retryDelayMs: (attempt) => 100 * 2 ** (attempt - 1),
    deadLetterRetryDelayMs: () => 1_000,
    run: async (item, attempt, signal) => {
      started.push(`${item.merchantKey}#${item.n}@${clock.now()}`)
      running++
      maxRunning = Math.max(maxRunning, running)
      try {
        await behaviour(item, attempt, signal)
      } finally {
        running--
      }
    },
    deadLetter:
      options.deadLetter ??
      (async (item, failure) => {
        deadLettered.push({ item: `${item.merchantKey}#${item.n}`, failure })
      }),
    done: (item, _group, outcome: Outcome) => finished.push(`${item.merchantKey}#${item.n}:${outcome}`),
    logger: pino({ level: 'silent' }),
  })
  const group = dispatcher.createGroup('topic:0')
  const push = (merchantKey: string, ...ns: number[]) => {
    for (const n of ns) dispatcher.push(group, { merchantKey, n })
  }
  return {
    clock,
    timers,
    limiter,
    dispatcher,
    group,
    push,
    started,
    finished,
    deadLettered,
    maxRunning: () => maxRunning,
  }
}

/** deferred is a promise the test settles by hand: a handler that takes as long as the test says. */
function deferred() {
  let resolve!: () => void
  let reject!: (error: unknown) => void
  const promise = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

describe('Dispatcher', () => {
  it('lets other merchants of a partition run while a throttled merchant waits for its reservations', async () => {
    const h = harness()
    h.limiter.setRate('hot', '2/s burst 1')
    h.push('hot', 0, 1, 2, 3)
    h.push('cold', 0, 1, 2)
    await h.timers.advance(0)
    // hot#0 uses the burst; cold (10/s, burst 10) runs all three at once.
    expect(h.started).toEqual(['hot#0@0', 'cold#0@0', 'cold#1@0', 'cold#2@0'])
    await h.timers.advance(2_000)
    expect(h.started.filter((s) => s.startsWith('hot'))).toEqual([
      'hot#0@0',
      'hot#1@500',
      'hot#2@1000',
      'hot#3@1500',
    ])
    expect(h.finished).toHaveLength(7)
    const stats = h.dispatcher.stats()
    expect(stats.delayed).toBe(3)
    expect(stats.handled).toBe(7)
    expect(stats.lanes).toBe(0)
  })

  it('runs a merchant one message at a time in push order, whatever the concurrency', async () => {
    const gates = new Map<string, ReturnType<typeof deferred>>()
    const h = harness({
      concurrency: 10,
      behaviour: (item) => {
        const gate = deferred()
        gates.set(`${item.merchantKey}#${item.n}`, gate)
        return gate.promise
      },
    })
    h.push('a', 0, 1, 2)
    h.push('b', 0)
    await h.timers.advance(0)
    expect(h.started).toEqual(['a#0@0', 'b#0@0'])
    gates.get('b#0')!.resolve()
    await h.timers.advance(0)
    expect(h.started).toEqual(['a#0@0', 'b#0@0'])
    gates.get('a#0')!.resolve()
    await h.timers.advance(0)
    expect(h.started).toEqual(['a#0@0', 'b#0@0', 'a#1@0'])
    gates.get('a#1')!.resolve()
    await h.timers.advance(0)
    gates.get('a#2')!.resolve()
    await h.timers.advance(0)
    expect(h.finished).toEqual(['b#0:handled', 'a#0:handled', 'a#1:handled', 'a#2:handled'])
  })

  it('never runs more handlers at once than its concurrency, and fills freed slots', async () => {
    const gates: ReturnType<typeof deferred>[] = []
    const h = harness({
      concurrency: 2,
      behaviour: () => {
        const gate = deferred()
        gates.push(gate)
        return gate.promise
      },
    })
    for (const key of ['a', 'b', 'c', 'd', 'e']) h.push(key, 0)
    await h.timers.advance(0)
    expect(h.started).toHaveLength(2)
    expect(h.dispatcher.stats().lanesReady).toBe(3)
    gates[0]!.resolve()
    await h.timers.advance(0)
    expect(h.started).toHaveLength(3)
    for (let i = 1; i < 5; i++) {
      gates[i]?.resolve()
      await h.timers.advance(0)
    }
    expect(h.finished).toHaveLength(5)
    expect(h.maxRunning()).toBe(2)
  })

  it('on RetryLaterError penalizes the merchant, waits Retry-After and retries the same message without spending an attempt', async () => {
    const attempts: string[] = []
    let refused = false
    const h = harness({
      maxAttempts: 1,
      behaviour: async (item, attempt) => {
        attempts.push(`${item.merchantKey}#${item.n} attempt ${attempt}`)
        if (item.merchantKey === 'a' && item.n === 0 && !refused) {
          refused = true
          throw new RetryLaterError(1_000)
        }
      },
    })
    h.push('a', 0, 1)
    h.push('b', 0)
    await h.timers.advance(0)
    expect(h.limiter.inspect('a')!.penaltyFactor).toBeLessThan(1)
    expect(h.finished).toEqual(['b#0:handled'])
    await h.timers.advance(999)
    expect(h.started.filter((s) => s.startsWith('a'))).toEqual(['a#0@0'])
    await h.timers.advance(2_000)
    const retried = h.started.filter((s) => s.startsWith('a'))
    expect(retried[1]).toMatch(/^a#0@/)
    expect(Number(retried[1]!.split('@')[1])).toBeGreaterThanOrEqual(1_000)
    expect(attempts.filter((a) => a.startsWith('a#0'))).toEqual(['a#0 attempt 1', 'a#0 attempt 1'])
    expect(h.finished).toEqual(['b#0:handled', 'a#0:handled', 'a#1:handled'])
    expect(h.dispatcher.stats().retryLater).toBe(1)
    expect(h.deadLettered).toEqual([])
  })

  it('retries a failing handler with backoff, then dead-letters it and goes on with the lane', async () => {
    const h = harness({
      maxAttempts: 3,
      behaviour: async (item) => {
        if (item.n === 0) throw new Error('far side broken')
      },
    })
    h.push('a', 0, 1)
    await h.timers.advance(1_000)
    // Attempts at 0, then after 100 ms and 200 ms of backoff.
    expect(h.started).toEqual(['a#0@0', 'a#0@100', 'a#0@300', 'a#1@300'])
    expect(h.deadLettered).toEqual([
      {
        item: 'a#0',
        failure: { reason: 'handler-failed', error: new Error('far side broken'), attempts: 3 },
      },
    ])
    expect(h.finished).toEqual(['a#0:dead-lettered', 'a#1:handled'])
    const stats = h.dispatcher.stats()
    expect(stats.failedAttempts).toBe(3)
    expect(stats.deadLettered['handler-failed']).toBe(1)
  })

  it('dead-letters at once on PermanentFailureError, spending no further attempts', async () => {
    const h = harness({
      maxAttempts: 5,
      behaviour: async (item) => {
        if (item.n === 0) throw new PermanentFailureError('client-error', 'HTTP 400')
      },
    })
    h.push('a', 0, 1)
    await h.timers.advance(1_000)
    expect(h.started).toEqual(['a#0@0', 'a#1@0'])
    expect(h.deadLettered.map((d) => [d.item, d.failure.reason, d.failure.attempts])).toEqual([
      ['a#0', 'permanent-failure', 1],
    ])
    expect(h.finished).toEqual(['a#0:dead-lettered', 'a#1:handled'])
  })

  it('retries a failed dead-letter write and reports the message done once', async () => {
    let writes = 0
    const h = harness({
      deadLetter: async () => {
        writes++
        if (writes === 1) throw new Error('broker down')
      },
    })
    h.dispatcher.deadLetterNow(
      h.group,
      { merchantKey: '', n: 7 },
      { reason: 'invalid-key', error: 'missing', attempts: 0 },
    )
    await h.timers.advance(0)
    expect(h.finished).toEqual([])
    await h.timers.advance(1_000)
    expect(writes).toBe(2)
    expect(h.finished).toEqual(['#7:dead-lettered'])
    expect(h.dispatcher.stats().deadLetterWriteFailures).toBe(1)
  })

  it('waits and asks again when the limiter defers (beyond its horizon)', async () => {
    const h = harness({ limiter: { rate: '1/s burst 1', horizonMs: 500 } })
    h.push('a', 0, 1)
    await h.timers.advance(2_000)
    expect(h.started).toEqual(['a#0@0', 'a#1@1000'])
    expect(h.dispatcher.stats().deferred).toBe(1)
  })

  it('drop returns a waiting reservation, aborts the signal and ignores late completions', async () => {
    const gate = deferred()
    let seenSignal: AbortSignal | undefined
    const h = harness({
      limiter: { rate: '1/s burst 1' },
      behaviour: (item, _attempt, signal) => {
        if (item.merchantKey === 'slow') {
          seenSignal = signal
          return gate.promise
        }
        return Promise.resolve()
      },
    })
    h.push('slow', 0)
    h.push('a', 0, 1) // a#1 waits 1 s for its reservation
    await h.timers.advance(0)
    expect(h.dispatcher.stats().lanesWaiting).toBe(1)
    h.dispatcher.drop(h.group, 'partition revoked')
    expect(seenSignal?.aborted).toBe(true)
    // The token a#1 held is back: a new reservation waits as long as a#1 did, not twice as long.
    const again = h.limiter.reserve('a')
    expect(again.ok && again.delayMs).toBe(1_000)
    gate.resolve()
    await h.timers.advance(5_000)
    expect(h.started).toEqual(['slow#0@0', 'a#0@0'])
    expect(h.finished).toEqual(['a#0:handled'])
    await expect(h.dispatcher.whenIdle()).resolves.toBeUndefined()
  })

  it('hold keeps granted lanes from starting until resume', async () => {
    const h = harness()
    h.dispatcher.hold()
    h.push('a', 0)
    await h.timers.advance(100)
    expect(h.started).toEqual([])
    h.dispatcher.resume()
    await h.timers.advance(0)
    expect(h.started).toEqual(['a#0@100'])
  })

  it('close starts nothing new and whenIdle waits for what is in flight', async () => {
    const gate = deferred()
    const h = harness({
      concurrency: 1,
      behaviour: (item) => (item.n === 0 ? gate.promise : Promise.resolve()),
    })
    h.push('a', 0)
    h.push('b', 0)
    await h.timers.advance(0)
    h.dispatcher.close()
    let idle = false
    void h.dispatcher.whenIdle().then(() => {
      idle = true
    })
    await h.timers.advance(0)
    expect(idle).toBe(false)
    gate.resolve()
    await h.timers.advance(1_000)
    expect(idle).toBe(true)
    expect(h.started).toEqual(['a#0@0'])
    expect(h.finished).toEqual(['a#0:handled'])
  })
})

describe('Dispatcher and reservations that come back late (issue 15)', () => {
  it('item 11: after a pause (a rebalance hold) a merchant sees at most burst + rate x W, not every slot it missed', async () => {
    const h = harness({ limiter: { rate: '10/s burst 2' } })
    // The merchant's messages are spread over 12 partitions (keyed by header), one lane each.
    const groups = Array.from({ length: 12 }, (_, i) => h.dispatcher.createGroup(`t:${i}`))
    h.dispatcher.hold()
    for (const [n, group] of groups.entries()) h.dispatcher.push(group, { merchantKey: 'm', n })
    // Reservations at 0, 0, 100, …, 1000 all pass while the lanes are held for 5 s.
    await h.timers.advance(5_000)
    expect(h.started).toEqual([])
    h.dispatcher.resume()
    await h.timers.advance(0)
    const windowMs = 500
    await h.timers.advance(windowMs)
    const inWindow = h.started.filter((s) => {
      const at = Number(s.split('@')[1])
      return at >= 5_000 && at <= 5_000 + windowMs
    })
    // burst 2 + 10/s x 0.5 s = 7 at most (12 without the rule: all at 5 000).
    expect(inWindow.length).toBeLessThanOrEqual(2 + 10 * (windowMs / 1_000))
    expect(h.dispatcher.stats().lateGrants).toBeGreaterThan(0)
    await h.timers.advance(2_000)
    expect(h.finished).toHaveLength(12)
  })

  it('item 11: a grant kept waiting for a concurrency slot keeps it: no second charge (issue 15 item 1)', async () => {
    let release!: () => void
    const h = harness({
      concurrency: 1,
      limiter: { rate: '1/min burst 1' },
      behaviour: (item) =>
        item.merchantKey === 'slow' ? new Promise<void>((resolve) => (release = resolve)) : Promise.resolve(),
    })
    h.push('slow', 0)
    h.push('a', 0)
    await h.timers.advance(1_000)
    expect(h.started).toEqual(['slow#0@0'])
    release()
    await h.timers.advance(0)
    // a's one token was taken at 0 for this head; asking again would wait a minute.
    expect(h.started).toEqual(['slow#0@0', 'a#0@1000'])
    expect(h.dispatcher.stats().lateGrants).toBe(0)
  })

  it('item 11: a wake that fires late (a stalled event loop) asks again', async () => {
    const h = harness({ limiter: { rate: '10/s burst 1' } })
    h.push('m', 0, 1)
    await h.timers.advance(0)
    // m#1 holds a reservation for 100 ms; the loop stalls until 600 ms.
    h.clock.set(600)
    await h.timers.advance(0)
    expect(h.started).toEqual(['m#0@0', 'm#1@600'])
    expect(h.dispatcher.stats().lateGrants).toBe(1)
  })

  it('item 2: drop() cancels only reservations still ahead; one whose time has passed restores nothing', async () => {
    // Two identical runs, but the second drops the partition holding a passed reservation.
    async function tokensAfter(dropPassed: boolean): Promise<number> {
      const h = harness({ limiter: { rate: '10/s burst 3' } })
      const held = h.dispatcher.createGroup('t:held')
      h.dispatcher.hold()
      for (let n = 0; n < 3; n++)
        h.dispatcher.push(h.dispatcher.createGroup(`t:${n}`), { merchantKey: 'm', n })
      // The fourth holds a reservation for 100 ms, which passes while the lanes are held.
      h.dispatcher.push(held, { merchantKey: 'm', n: 3 })
      await h.timers.advance(150)
      if (dropPassed) h.dispatcher.drop(held, 'partition revoked')
      return h.limiter.inspect('m')!.tokens
    }
    expect(await tokensAfter(true)).toBe(await tokensAfter(false))
  })

  it('item 2: close() cancels a reservation still ahead, so its tokens are there for the next owner', async () => {
    const h = harness({ limiter: { rate: '1/s burst 1' } })
    h.push('m', 0, 1)
    await h.timers.advance(0)
    // m#1 holds a reservation for t = 1 000.
    expect(h.limiter.inspect('m')!.tokens).toBeLessThan(0)
    h.dispatcher.close()
    expect(h.limiter.inspect('m')!.tokens).toBeGreaterThanOrEqual(0)
  })
})

describe('Dispatcher lanes behind lanes (parking)', () => {
  it('starts a lane only once the lane it is behind (same merchant, older messages) has emptied', async () => {
    const clock = new FakeClock(0)
    const timers = new FakeTimers(clock)
    const limiter = new KeyedLimiter({ rate: '10/s burst 1', clock })
    const started: string[] = []
    const groups: { source?: LaneGroup<Item>; parking?: LaneGroup<Item> } = {}
    const dispatcher = new Dispatcher<Item>({
      limiter,
      wakes: new WakeQueue({ now: () => limiter.now() }, timers),
      concurrency: 10,
      maxAttempts: 1,
      retryDelayMs: () => 100,
      deadLetterRetryDelayMs: () => 100,
      run: async (item) => {
        started.push(`${item.merchantKey}#${item.n}@${clock.now()}`)
      },
      deadLetter: async () => undefined,
      done: () => undefined,
      behind: (lane): Lane<Item> | undefined =>
        lane.group === groups.parking ? groups.source!.lanes.get(lane.merchantKey) : undefined,
      logger: pino({ level: 'silent' }),
    })
    const source = dispatcher.createGroup('t:0')
    const parking = dispatcher.createGroup('t-parking:0')
    Object.assign(groups, { source, parking })
    dispatcher.push(source, { merchantKey: 'm', n: 0 })
    dispatcher.push(source, { merchantKey: 'm', n: 1 })
    dispatcher.push(parking, { merchantKey: 'm', n: 2 })
    dispatcher.push(parking, { merchantKey: 'm', n: 3 })
    await timers.advance(1_000)
    expect(started).toEqual(['m#0@0', 'm#1@100', 'm#2@200', 'm#3@300'])
  })
})

describe('Dispatcher and limit keys (issue 18)', () => {
  const psp = (merchantKey: string) => ['psp', `psp:${merchantKey}`]

  it("asks for each head's limit keys: two merchants' lanes under a parent share its rate, each in its own order", async () => {
    const h = harness({ limiter: { rate: '10/s burst 1' } })
    h.limiter.setRate('psp', '4/s burst 1')
    for (let n = 0; n < 10; n++) {
      h.dispatcher.push(h.group, { merchantKey: 'a', n, limitKeys: psp('a') })
      h.dispatcher.push(h.group, { merchantKey: 'b', n, limitKeys: psp('b') })
    }
    await h.timers.advance(2_000)
    const at = h.started.map((s) => Number(s.split('@')[1])).sort((x, y) => x - y)
    // burst 1 + 4/s over 2 s, whatever the merchants' own 10/s: starts 250 ms apart.
    expect(at).toHaveLength(9)
    expect(at.slice(1).every((t, i) => t - at[i]! >= 250)).toBe(true)
    for (const m of ['a', 'b']) {
      const ns = h.started.filter((s) => s.startsWith(`${m}#`)).map((s) => Number(s.split(/[#@]/)[1]))
      expect(ns).toEqual(ns.map((_, i) => i))
    }
  })

  it('a lane without limit keys is limited by its merchant key alone, beside lanes that have them', async () => {
    const h = harness({ limiter: { rate: '10/s burst 10' } })
    h.limiter.setRate('psp', '1/min burst 1')
    h.dispatcher.push(h.group, { merchantKey: 'a', n: 0, limitKeys: psp('a') })
    h.dispatcher.push(h.group, { merchantKey: 'a', n: 1, limitKeys: psp('a') })
    h.push('plain', 0, 1, 2)
    await h.timers.advance(1_000)
    expect(h.started).toEqual(['a#0@0', 'plain#0@0', 'plain#1@0', 'plain#2@0'])
  })

  it('penalizes the innermost key on RetryLaterError, not the parent every merchant shares', async () => {
    let calls = 0
    const h = harness({
      behaviour: async () => {
        if (calls++ === 0) throw new RetryLaterError(1_000)
      },
    })
    h.limiter.setRate('psp', '100/s')
    h.dispatcher.push(h.group, { merchantKey: 'a', n: 0, limitKeys: psp('a') })
    await h.timers.advance(2_000)
    expect(h.finished).toEqual(['a#0:handled'])
    expect(h.limiter.inspect('psp:a')?.penaltyFactor).toBeLessThan(1)
    expect(h.limiter.inspect('psp')?.penaltyFactor ?? 1).toBe(1)
  })

  it("shares a parent that binds between two backlogged merchants' lanes, half each", async () => {
    const h = harness({ limiter: { rate: '20/s burst 1' } })
    h.limiter.setRate('psp', '10/s burst 1')
    for (let n = 0; n < 200; n++) {
      h.dispatcher.push(h.group, { merchantKey: 'a', n, limitKeys: psp('a') })
      if (n < 100) h.dispatcher.push(h.group, { merchantKey: 'b', n, limitKeys: psp('b') })
    }
    await h.timers.advance(10_000)
    const count = (m: string) => h.started.filter((s) => s.startsWith(`${m}#`)).length
    // 10 s of the parent's 10/s (plus its burst): ~50 each, though a holds twice b's backlog.
    expect(count('a') + count('b')).toBeLessThanOrEqual(101)
    expect(Math.abs(count('a') - count('b'))).toBeLessThanOrEqual(4)
  })
})
