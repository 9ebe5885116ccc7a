import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { Dispatcher } from '../../../src/adapters/kafka/dispatcher.js'
import { WakeQueue } from '../../../src/adapters/kafka/wake-queue.js'
import { RetryableFailureError } from '../../../src/errors.js'
import { CircuitBreakers, FakeClock, InFlightTable, KeyedLimiter } from '../../../src/limiter/index.js'
import { FakeTimers } from './support/fake-timers.js'

// The dispatcher with in-flight caps, fair slots and circuit breakers, on a fake clock:
// handlers end when the test says so.

interface Item {
  merchantKey: string
  n: number
}

function deferred() {
  let resolve!: () => void
  let reject!: (error: unknown) => void
  const promise = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

function harness(options: { concurrency: number; breakers?: boolean }) {
  const clock = new FakeClock(0)
  const timers = new FakeTimers(clock)
  const limiter = new KeyedLimiter({ rate: '1000/s burst 1000', clock })
  const inFlight = new InFlightTable()
  const breakers = options.breakers
    ? new CircuitBreakers({ failureThreshold: 2, windowMs: 10_000, coolDownMs: 1_000, clock })
    : undefined
  const running = new Map<string, ReturnType<typeof deferred>>()
  const started: string[] = []
  const dispatcher = new Dispatcher<Item>({
    limiter,
    wakes: new WakeQueue({ now: () => limiter.now() }, timers),
    concurrency: options.concurrency,
    maxAttempts: 10,
    retryDelayMs: () => 100,
    deadLetterRetryDelayMs: () => 1_000,
    inFlight,
    breakers,
    run: (item) => {
      const name = `${item.merchantKey}#${item.n}`
      started.push(name)
      const d = deferred()
      running.set(name, d)
      return d.promise
    },
    deadLetter: async () => undefined,
    done: () => undefined,
    logger: pino({ level: 'silent' }),
  })
  const end = async (name: string, error?: unknown) => {
    const d = running.get(name)!
    running.delete(name)
    if (error === undefined) d.resolve()
    else d.reject(error)
    await timers.advance(0)
  }
  return { clock, timers, limiter, inFlight, breakers, dispatcher, started, running, end }
}

describe('Dispatcher with in-flight caps', () => {
  it("holds a merchant spread over partitions to its cap, without charging the waiting lanes' tokens", async () => {
    const h = harness({ concurrency: 10 })
    h.inFlight.setCap('slow', 2)
    const groups = [0, 1, 2, 3].map((p) => h.dispatcher.createGroup(`t:${p}`))
    groups.forEach((group, p) => {
      h.dispatcher.push(group, { merchantKey: 'slow', n: p })
    })
    await h.timers.advance(0)
    expect(h.started).toEqual(['slow#0', 'slow#1'])
    expect(h.inFlight.count('slow')).toBe(2)
    // Two tokens charged, not four.
    expect(h.limiter.inspect('slow')!.tokens).toBe(998)
    expect(h.dispatcher.stats().capped).toBe(2)
    await h.end('slow#0')
    expect(h.started).toEqual(['slow#0', 'slow#1', 'slow#2'])
    await h.end('slow#1', new Error('boom'))
    // A failed job frees its place too: the oldest waiting lane starts, the failed one waits its turn.
    expect(h.started).toEqual(['slow#0', 'slow#1', 'slow#2', 'slow#3'])
    expect(h.inFlight.count('slow')).toBe(2)
    await h.end('slow#2')
    await h.timers.advance(100)
    expect(h.started.at(-1)).toBe('slow#1')
    expect(h.inFlight.count('slow')).toBe(2)
  })

  it('gives the next free slot to the ready merchant with the fewest jobs in flight', async () => {
    const h = harness({ concurrency: 3 })
    const groups = [0, 1, 2, 3, 4].map((p) => h.dispatcher.createGroup(`t:${p}`))
    for (const p of [0, 1, 2]) h.dispatcher.push(groups[p]!, { merchantKey: 'hot', n: p })
    await h.timers.advance(0)
    expect(h.started).toEqual(['hot#0', 'hot#1', 'hot#2'])
    // Saturated: another hot lane is ready before the quiet merchant's.
    h.dispatcher.push(groups[3]!, { merchantKey: 'hot', n: 3 })
    h.dispatcher.push(groups[4]!, { merchantKey: 'quiet', n: 0 })
    await h.timers.advance(0)
    await h.end('hot#0')
    expect(h.started.at(-1)).toBe('quiet#0')
  })

  it('releases the places of lanes dropped in a rebalance', async () => {
    const h = harness({ concurrency: 10 })
    h.inFlight.setCap('slow', 1)
    const a = h.dispatcher.createGroup('t:0')
    const b = h.dispatcher.createGroup('t:1')
    h.dispatcher.push(a, { merchantKey: 'slow', n: 0 })
    h.dispatcher.push(b, { merchantKey: 'slow', n: 1 })
    await h.timers.advance(0)
    h.dispatcher.drop(b, 'revoked')
    await h.end('slow#0')
    expect(h.inFlight.count('slow')).toBe(0)
    expect(h.inFlight.size).toBe(0)
  })
})

describe('Dispatcher with circuit breakers', () => {
  it('opens after the failures, keeps the lane waiting without attempts, lets one probe through, and closes on its success', async () => {
    const h = harness({ concurrency: 10, breakers: true })
    const group = h.dispatcher.createGroup('t:0')
    const other = h.dispatcher.createGroup('t:1')
    h.dispatcher.push(group, { merchantKey: 'down', n: 0 })
    h.dispatcher.push(other, { merchantKey: 'down', n: 1 })
    await h.timers.advance(0)
    const failure = new RetryableFailureError('server-error', 500, '500')
    await h.end('down#0', failure)
    await h.end('down#1', failure)
    expect(h.breakers!.view('down').state).toBe('open')
    const attemptsBefore = h.started.length
    await h.timers.advance(999)
    expect(h.started.length).toBe(attemptsBefore)
    expect(h.dispatcher.stats().breakerOpen).toBeGreaterThanOrEqual(2)
    await h.timers.advance(1)
    // Half-open: one probe, the other lane waits for its outcome.
    expect(h.started.length).toBe(attemptsBefore + 1)
    await h.end(h.started.at(-1)!)
    expect(h.breakers!.view('down').state).toBe('closed')
    await h.timers.advance(1_000)
    expect(h.started.length).toBe(attemptsBefore + 2)
  })
})
