import type { BucketRate } from './bucket-rates.js'
import { describeKey } from './rate-change.js'
import type { HeldReservation } from './reservation.js'

/**
 * LimitKeys name what one decision is gated by: one key, or 1 to MAX_LIMIT_KEYS distinct
 * keys outermost first (`['psp:adyen', 'psp:adyen:m_42']`). A one-element list is the
 * same as its key.
 */
export type LimitKeys = string | readonly string[]

/** MAX_LIMIT_KEYS bounds a list of keys. */
export const MAX_LIMIT_KEYS = 4

/**
 * checkLimitKeys returns `keys` as a list, or throws a TypeError that says what is wrong:
 * not a list, empty, more than MAX_LIMIT_KEYS, a bad key (its place named), a duplicate.
 */
export function checkLimitKeys(keys: unknown, maxKeyLength: number): readonly string[] {
  if (!Array.isArray(keys)) {
    throw new TypeError(
      `KeyedLimiter: expected a key or a list of 1 to ${MAX_LIMIT_KEYS} keys, got ${keys === null ? 'null' : typeof keys}`,
    )
  }
  if (keys.length === 0 || keys.length > MAX_LIMIT_KEYS) {
    throw new TypeError(
      `KeyedLimiter: expected a list of 1 to ${MAX_LIMIT_KEYS} keys, got ${keys.length === 0 ? 'an empty list' : `${keys.length} keys`}`,
    )
  }
  for (let i = 0; i < keys.length; i++) {
    const key: unknown = keys[i]
    if (typeof key !== 'string' || key.length === 0 || key.length > maxKeyLength) {
      throw new TypeError(
        `KeyedLimiter: expected keys of 1 to ${maxKeyLength} characters, got ${describeKey(key)} at index ${i}`,
      )
    }
    for (let j = 0; j < i; j++) {
      if (keys[j] === key) {
        throw new TypeError(`KeyedLimiter: expected distinct keys, got '${key}' at index ${j} and ${i}`)
      }
    }
  }
  return keys as readonly string[]
}

/**
 * LayerPort is what the limiter lends the layered decision: its own probe and charge
 * steps (the ones its single-key path uses), by slot, and the share check (shares.ts).
 */
export interface LayerPort {
  /**
   * slotOf finds or places `key`: its slot, its rate then in slotRate(); -1 when the table
   * is full; -2 for an `outer` key that does not limit (only one with a rate of its own does).
   */
  slotOf(key: string, now: number, outer: boolean): number
  slotRate(): BucketRate
  /** placements counts the keys the table has placed: when it moved, an earlier key may have been evicted. */
  placements(): number
  /** held says whether `key` is still held (placing a later key may have evicted an earlier, full one). */
  held(key: string): boolean
  /** checkCost throws when `cost` can never be granted at `rate`. */
  checkCost(cost: number, rate: BucketRate): void
  /** probe is the least delay at which every window of `slot` takes `cost` (see KeyedLimiter.probe). */
  probe(slot: number, rate: BucketRate, cost: number, now: number, maxDelayMs: number): number
  /** probedTats is, after probe, what it found of the key's further windows, to hand to charge. */
  probedTats(): Float64Array | undefined
  /**
   * holeMs is how much of an outer key's time a charge at `now + delayMs` would leave
   * unused before it, beyond what its burst still covers: 0 when none.
   */
  holeMs(slot: number, rate: BucketRate, now: number, delayMs: number): number
  /** charge takes `cost` from every window of `slot` at `now + delayMs`; for a reservation, returns its part. */
  charge(
    key: string,
    slot: number,
    rate: BucketRate,
    cost: number,
    now: number,
    delayMs: number,
    reserving: boolean,
    probedTats: Float64Array | undefined,
  ): HeldReservation | undefined
  /**
   * shareWaitMs is, for a child asking through a parent whose limit binds (it would wait
   * `parentDelayMs`), how long until its fair share lets it in (0: now); it marks the
   * child backlogged either way.
   */
  shareWaitMs(parent: string, parentDelayMs: number, child: string, now: number): number
  /** shareCharge advances the child's share clock for a grant of `cost` through the parent. */
  shareCharge(parent: string, parentRate: BucketRate, child: string, cost: number, now: number): void
  /** shareCount counts a grant of `cost` to a child through a parent that does not bind, if tracked. */
  shareCount(parent: string, child: string, cost: number, now: number): void
}

/** LayeredVerdict is the outcome of a layered decision. */
export type LayeredVerdict = 'granted' | 'too-soon' | 'table-full' | 'parent-share' | 'hole'

/**
 * LayeredDecision decides for a list of keys, atomically: every limiting key is found (or
 * placed) and probed at one time `now`, the grant goes at the latest delay any of them
 * needs (each is GCRA, so a time one meets every later time meets too), and only then is
 * every one charged at that time; a refusal, a deferral or a full table charges none.
 * A key's limit binds the decision when it alone would delay it; a parent that binds
 * shares itself among its children (see shares.ts). Its results are read from its fields.
 */
export class LayeredDecision {
  delayMs = 0
  /** bindingKey is the key whose limit set the delay, or the one that could not be placed. */
  bindingKey = ''
  /** parts are, after a reservation, each charged key's part, outermost first (the innermost last). */
  parts: HeldReservation[] = []
  private readonly slots = new Int32Array(MAX_LIMIT_KEYS)
  /** indices[n] is the place in the list of the n-th limiting key. */
  private readonly indices = new Int32Array(MAX_LIMIT_KEYS)
  private readonly rates: BucketRate[] = []
  private readonly delays = new Float64Array(MAX_LIMIT_KEYS)
  private readonly tats: Array<Float64Array | undefined> = []

  constructor(private readonly port: LayerPort) {}

  /** decide grants `cost` to every limiting key of `keys` (checked) if all can meet it within `maxDelayMs`. */
  decide(
    keys: readonly string[],
    cost: number,
    now: number,
    maxDelayMs: number,
    reserving: boolean,
  ): LayeredVerdict {
    const count = this.find(keys, cost, now)
    if (count < 0) return 'table-full'
    const port = this.port
    let delayMs = 0
    let binding = count - 1
    for (let n = 0; n < count; n++) {
      const d = port.probe(this.slots[n]!, this.rates[n]!, cost, now, maxDelayMs)
      this.tats[n] = port.probedTats()
      this.delays[n] = d
      if (d > delayMs) {
        delayMs = d
        binding = n
      }
    }
    this.delayMs = delayMs
    this.bindingKey = keys[this.indices[binding]!]!
    const shareWaitMs = this.shareWaitMs(keys, count, now)
    if (shareWaitMs > 0) {
      this.delayMs = Math.max(shareWaitMs, delayMs - maxDelayMs)
      return 'parent-share'
    }
    if (delayMs > maxDelayMs) return 'too-soon'
    const holeMs = this.holeMs(count, now, delayMs)
    if (holeMs > 0) {
      this.delayMs = holeMs
      return 'hole'
    }
    this.chargeAll(keys, count, cost, now, delayMs, reserving)
    return 'granted'
  }

  /**
   * holeMs is the largest hole the grant would leave in an outer key. GCRA keeps one
   * arrival time per key, so a unit charged to a parent at a time its child's own limit
   * (or a Retry-After) set, ahead of where the parent stands, takes all the parent's time
   * before it from every other child: a merchant reserving a second ahead at its own rate
   * would hold its whole PSP a second ahead. Such a grant waits (`hole`, asked again
   * after the hole) until it leaves no time of the parent unused, or stays within the
   * parent's burst (which others can still take now).
   */
  private holeMs(count: number, now: number, delayMs: number): number {
    let holeMs = 0
    for (let n = 0; n < count - 1; n++) {
      if (!(delayMs > this.delays[n]!)) continue
      const h = this.port.holeMs(this.slots[n]!, this.rates[n]!, now, delayMs)
      if (h > holeMs) holeMs = h
    }
    return holeMs
  }

  /**
   * find resolves the limiting keys of `keys` into slots, rates and places; returns their
   * count, or -1 (bindingKey set) when one cannot be held. A cost no key can ever take throws.
   */
  private find(keys: readonly string[], cost: number, now: number): number {
    const port = this.port
    const last = keys.length - 1
    const placements = port.placements()
    let count = 0
    for (let i = 0; i <= last; i++) {
      const key = keys[i]!
      const slot = port.slotOf(key, now, i < last)
      if (slot === -2) continue
      if (slot < 0) {
        this.bindingKey = key
        return -1
      }
      const rate = port.slotRate()
      port.checkCost(cost, rate)
      this.slots[count] = slot
      this.indices[count] = i
      this.rates[count] = rate
      count++
    }
    if (port.placements() === placements) return count
    for (let n = 0; n < count; n++) {
      const key = keys[this.indices[n]!]!
      if (!port.held(key)) {
        this.bindingKey = key
        return -1
      }
    }
    return count
  }

  /**
   * shareWaitMs is the longest wait a fair share sets for this decision: for each limiting
   * parent whose limit binds now (it would delay a unit), the child below it in the list
   * waits for its share. 0 when none binds or every share lets it in; bindingKey names the parent.
   */
  private shareWaitMs(keys: readonly string[], count: number, now: number): number {
    let waitMs = 0
    for (let n = 0; n < count - 1; n++) {
      if (!(this.delays[n]! > 0)) continue
      const i = this.indices[n]!
      const parent = keys[i]!
      const w = this.port.shareWaitMs(parent, this.delays[n]!, keys[i + 1]!, now)
      if (w > waitMs) {
        waitMs = w
        this.bindingKey = parent
      }
    }
    return waitMs
  }

  /** chargeAll charges every limiting key at `now + delayMs` and advances the share clocks of binding parents. */
  private chargeAll(
    keys: readonly string[],
    count: number,
    cost: number,
    now: number,
    delayMs: number,
    reserving: boolean,
  ): void {
    const port = this.port
    const parts: HeldReservation[] = []
    for (let n = 0; n < count; n++) {
      const i = this.indices[n]!
      const key = keys[i]!
      const rate = this.rates[n]!
      const part = port.charge(key, this.slots[n]!, rate, cost, now, delayMs, reserving, this.tats[n])
      if (part !== undefined) parts.push(part)
      if (n === count - 1) continue
      if (this.delays[n]! > 0) port.shareCharge(key, rate, keys[i + 1]!, cost, now)
      else port.shareCount(key, keys[i + 1]!, cost, now)
    }
    this.parts = parts
  }
}
