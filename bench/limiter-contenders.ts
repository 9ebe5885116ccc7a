import Bottleneck from 'bottleneck'
import { RateLimiter, TokenBucket } from 'limiter'
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible'
import { KeyedLimiter } from '../src/limiter/index.js'

/**
 * The limiters the benchmarks compare, each configured at the same rate, high enough
 * that it never binds during a run (every decision is measured, granted or not).
 */

/** RATE_PER_SEC is every contender's rate per key: far above what one process can ask for. */
export const RATE_PER_SEC = 1e9

/** IN_FLIGHT is how many decisions the promise-based peers' overlapped variants issue at once. */
export const IN_FLIGHT = 100

/** Contender is one limiter as a benchmark drives it. */
export interface Contender {
  /** label names the row in the tables. */
  label: string
  /** packageName is where its version is read from; undefined for code written in the benchmark. */
  packageName: string | undefined
  /** call is the code one decision runs, as it appears in the table. */
  call: string
  /** peer is true for a published library users would pick instead (the targets compare to these). */
  peer: boolean
  /**
   * decide makes one synchronous decision for `key`. `nowMs` is a performance.now()
   * reading taken once per batch; contenders whose API has no time parameter read
   * their own clock and ignore it.
   */
  decide?: (key: string, nowMs: number) => boolean
  /** decideAsync makes one decision through a promise-based API. */
  decideAsync?: (key: string) => Promise<boolean>
  /** inFlight is how many async decisions are issued together; 1 awaits each before the next. */
  inFlight?: number
  /**
   * prefills is false for a contender too heavy to give every key its state before the
   * decisions are timed (its decisions then include creating state for new keys).
   */
  prefills: boolean
  /** size is the number of keys the contender holds state for. */
  size(): number
}

function merchantThrottle(readsClock: boolean): Contender {
  const limiter = new KeyedLimiter({ rate: { limit: RATE_PER_SEC, intervalMs: 1_000 } })
  return {
    label: readsClock ? 'merchant-throttle, clock read per call' : 'merchant-throttle, time read per batch',
    packageName: 'merchant-throttle',
    call: readsClock ? '`limiter.tryAcquire(key)`' : '`limiter.tryAcquireAt(key, 1, nowMs)`',
    peer: false,
    prefills: true,
    decide: readsClock
      ? (key) => limiter.tryAcquire(key)
      : (key, nowMs) => limiter.tryAcquireAt(key, 1, nowMs),
    size: () => limiter.size,
  }
}

function limiterTokenBucket(): Contender {
  const buckets = new Map<string, TokenBucket>()
  return {
    label: 'limiter TokenBucket, one per key in a Map',
    packageName: 'limiter',
    call: '`bucket.tryRemoveTokens(1)`',
    peer: true,
    prefills: true,
    decide: (key) => {
      let bucket = buckets.get(key)
      if (bucket === undefined) {
        bucket = new TokenBucket({
          bucketSize: RATE_PER_SEC,
          tokensPerInterval: RATE_PER_SEC,
          interval: 1_000,
        })
        // A TokenBucket starts empty; start it full like every other contender (as RateLimiter does).
        bucket.content = RATE_PER_SEC
        buckets.set(key, bucket)
      }
      return bucket.tryRemoveTokens(1)
    },
    size: () => buckets.size,
  }
}

function limiterRateLimiter(): Contender {
  const limiters = new Map<string, RateLimiter>()
  return {
    label: 'limiter RateLimiter, one per key in a Map',
    packageName: 'limiter',
    call: '`limiter.tryRemoveTokens(1)`',
    peer: true,
    prefills: true,
    decide: (key) => {
      let limiter = limiters.get(key)
      if (limiter === undefined) {
        limiter = new RateLimiter({ tokensPerInterval: RATE_PER_SEC, interval: 1_000 })
        limiters.set(key, limiter)
      }
      return limiter.tryRemoveTokens(1)
    },
    size: () => limiters.size,
  }
}

/** MemoryStorageView is the part of RateLimiterMemory's private store the size check reads. */
interface MemoryStorageView {
  _memoryStorage: { _storage: Map<string, unknown> }
}

function rateLimiterFlexible(inFlight: number): Contender {
  // A fixed window of 60 s at the common rate; an empty keyPrefix spares every call the
  // `${prefix}:${key}` concatenation (and every key a second string): its best case.
  const limiter = new RateLimiterMemory({ points: RATE_PER_SEC * 60, duration: 60, keyPrefix: '' })
  return {
    label:
      inFlight === 1
        ? 'rate-limiter-flexible RateLimiterMemory, each awaited'
        : `rate-limiter-flexible RateLimiterMemory, ${inFlight} in flight`,
    packageName: 'rate-limiter-flexible',
    call: '`await limiter.consume(key)` (rejects when refused)',
    peer: true,
    prefills: true,
    decideAsync: async (key) => {
      try {
        await limiter.consume(key)
        return true
      } catch (refusal) {
        if (refusal instanceof RateLimiterRes) return false
        throw refusal
      }
    },
    inFlight,
    size: () => (limiter as unknown as MemoryStorageView)._memoryStorage._storage.size,
  }
}

const noJob = () => Promise.resolve()

function bottleneckGroup(inFlight: number): Contender {
  // A token bucket in Bottleneck's terms: a reservoir topped up every second, one limiter per key.
  const group = new Bottleneck.Group({
    reservoir: RATE_PER_SEC,
    reservoirIncreaseAmount: RATE_PER_SEC,
    reservoirIncreaseInterval: 1_000,
    reservoirIncreaseMaximum: RATE_PER_SEC,
  })
  return {
    label: inFlight === 1 ? 'bottleneck Group, each awaited' : `bottleneck Group, ${inFlight} in flight`,
    packageName: 'bottleneck',
    call: '`await group.key(key).schedule(job)` (queues; never refuses)',
    peer: true,
    // 100,000 Bottleneck limiters, each with a 250 ms heartbeat timer, took minutes and 2 GB to create.
    prefills: false,
    decideAsync: async (key) => {
      await group.key(key).schedule(noJob)
      return true
    },
    inFlight,
    size: () => group.keys().length,
  }
}

/** PlainBucket is the state of the hand-written baseline: tokens left and when they were counted. */
interface PlainBucket {
  tokens: number
  last: number
}

function plainMapBucket(): Contender {
  const buckets = new Map<string, PlainBucket>()
  const capacity = RATE_PER_SEC
  const perMs = RATE_PER_SEC / 1_000
  return {
    label: 'plain `Map<string, {tokens, last}>` token bucket',
    packageName: undefined,
    call: 'inline, time read per batch',
    peer: false,
    prefills: true,
    decide: (key, nowMs) => {
      let bucket = buckets.get(key)
      if (bucket === undefined) {
        bucket = { tokens: capacity, last: nowMs }
        buckets.set(key, bucket)
      } else if (nowMs > bucket.last) {
        bucket.tokens = Math.min(capacity, bucket.tokens + (nowMs - bucket.last) * perMs)
        bucket.last = nowMs
      }
      if (bucket.tokens < 1) return false
      bucket.tokens -= 1
      return true
    },
    size: () => buckets.size,
  }
}

function mapLookupFloor(): Contender {
  const keys = new Map<string, number>()
  return {
    label: '`Map<string, number>` lookup: the floor',
    packageName: undefined,
    call: '`map.get(key) !== undefined`',
    peer: false,
    prefills: true,
    decide: (key) => {
      const held = keys.get(key)
      if (held !== undefined) return true
      keys.set(key, 1)
      return false
    },
    size: () => keys.size,
  }
}

function keysAlone(): Contender {
  const keys = new Map<string, number>()
  return {
    label: '`Map<string, number>`: the keys alone',
    packageName: undefined,
    call: '`map.set(key, 1)`',
    peer: false,
    prefills: true,
    decide: (key) => {
      keys.set(key, 1)
      return true
    },
    size: () => keys.size,
  }
}

/** CONTENDERS builds each contender by name, in a fresh state. */
export const CONTENDERS: Readonly<Record<string, () => Contender>> = {
  'merchant-throttle-batch': () => merchantThrottle(false),
  'merchant-throttle-clock': () => merchantThrottle(true),
  'limiter-token-bucket': limiterTokenBucket,
  'limiter-rate-limiter': limiterRateLimiter,
  'rate-limiter-flexible': () => rateLimiterFlexible(1),
  'rate-limiter-flexible-in-flight': () => rateLimiterFlexible(IN_FLIGHT),
  'bottleneck-group': () => bottleneckGroup(1),
  'bottleneck-group-in-flight': () => bottleneckGroup(IN_FLIGHT),
  'plain-map-bucket': plainMapBucket,
  'keys-alone': keysAlone,
  'map-lookup-floor': mapLookupFloor,
}

/** contender builds the contender called `name`, or throws naming the ones there are. */
export function contender(name: string): Contender {
  const make = CONTENDERS[name]
  if (make === undefined) {
    throw new TypeError(`expected a contender among ${Object.keys(CONTENDERS).join(', ')}, got ${name}`)
  }
  return make()
}
