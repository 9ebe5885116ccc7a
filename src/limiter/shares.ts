/**
 * Fair shares of a parent among its children (issue 18). When a parent's limit binds (an
 * ask through it finds it would wait), the children asking through it are backlogged for
 * `shareWindowMs`, and each has a share of the parent: its weight over the sum of the
 * weights of the backlogged children. Per (parent, child) a share clock S runs ahead of
 * now by the parent's time the child has taken: each grant through a binding parent moves
 * it to max(S, now) + cost × the parent's emission / share. A child whose S is more than
 * `shareLookaheadMs` ahead of now waits (Deferred 'parent-share'); so over any stretch the
 * backlogged children get the parent in proportion to their weights, and a child that
 * starts asking waits behind the others no more than the lookahead (their S are at most
 * that far ahead, so the parent's reservations are too) plus one parent emission.
 *
 * The parent's own GCRA stays the hard limit, and the shares never leave it idle: a
 * parent that does not bind (it has room now) is taken without looking at shares. Times
 * are ms since the limiter's epoch.
 */

/** ChildShare describes one child of a parent, for the status page. */
export interface ChildShare {
  key: string
  /** weight is the child's weight (default 1). */
  weight: number
  /** backlogged: an ask of the child found the parent binding within the last share window. */
  backlogged: boolean
  /** grantedPerSec is the cost granted to the child through the parent, per second over the last share window. */
  grantedPerSec: number
}

/** FairShareOptions configure the fair shares. */
export interface FairShareOptions {
  /** shareWindowMs is how long a child counts as backlogged after an ask found its parent binding. Default 1,000. */
  shareWindowMs?: number
  /** shareLookaheadMs is how far ahead of now a child's share clock may run before it waits. Default 250. */
  shareLookaheadMs?: number
  /** maxShareEntries bounds the (parent, child) pairs tracked; past it a new child is not share-limited. Default 100,000. */
  maxShareEntries?: number
}

/** SCAN_MS_PER_CHILD spaces a parent's recounts by its number of children (see FairShares.scanEveryMs). */
const SCAN_MS_PER_CHILD = 0.02

/** MAX_WEIGHT bounds a child's weight; weights are relative, so 1e6:1 is as uneven as it gets. */
export const MAX_WEIGHT = 1e6

class ChildEntry {
  /** shareClockMs is S: how far the child has taken the parent, in the parent's time. */
  shareClockMs = Number.NEGATIVE_INFINITY
  /** bindingAtMs is when an ask last found the parent binding. */
  bindingAtMs: number
  /** counted: the child's weight is in its parent's backloggedWeight. */
  counted = true
  /** grants in the current and the previous share window (by cost), and the current one's start. */
  grantedNow = 0
  grantedBefore = 0
  countStartMs: number

  constructor(now: number) {
    this.bindingAtMs = now
    this.countStartMs = now
  }
}

class ParentEntry {
  readonly children = new Map<string, ChildEntry>()
  /** backloggedWeight is the sum of the weights of the children counted (ChildEntry.counted). */
  backloggedWeight = 0
  scannedAtMs = Number.NEGATIVE_INFINITY
}

/**
 * FairShares holds the share clocks, bounded: at most maxShareEntries pairs, and a pair
 * whose child has not been backlogged for a share window and whose clock has caught up
 * with now is forgotten (it is then what a new one would be).
 */
export class FairShares {
  readonly windowMs: number
  readonly lookaheadMs: number
  readonly maxEntries: number
  /**
   * scanEveryMs is how often a parent's backlogged weight is recounted, at least: a parent
   * of n children is recounted at most every n × SCAN_MS_PER_CHILD ms, so that scanning
   * costs at most 1 / SCAN_MS_PER_CHILD child visits a ms per parent.
   */
  private readonly scanEveryMs: number
  /** untracked counts asks of children not tracked because maxShareEntries pairs were. */
  untracked = 0
  private readonly parents = new Map<string, ParentEntry>()
  /** weights are the children's weights set (setWeight, apply); the others weigh 1. */
  private readonly weights = new Map<string, number>()
  private entries = 0
  private sweptAtMs = Number.NEGATIVE_INFINITY

  constructor(options: FairShareOptions) {
    this.windowMs = checkPositive(options.shareWindowMs ?? 1_000, 'shareWindowMs')
    this.lookaheadMs = checkPositive(options.shareLookaheadMs ?? 250, 'shareLookaheadMs')
    this.maxEntries = checkWhole(options.maxShareEntries ?? 100_000, 'maxShareEntries')
    this.scanEveryMs = Math.min(this.windowMs, this.lookaheadMs) / 12
  }

  /** parentsTracked is the number of parents with a child tracked. */
  get parentsTracked(): number {
    return this.parents.size
  }

  /**
   * waitMs marks `child` backlogged under `parent` (whose limit binds at `now`: a unit
   * would wait `parentDelayMs`) and returns how long until its share lets it in: 0 when
   * it may go now.
   */
  waitMs(parent: string, parentDelayMs: number, child: string, now: number): number {
    const entry = this.backlogged(parent, child, now)
    return entry === undefined ? 0 : this.entryWaitMs(entry, parentDelayMs, now)
  }

  /**
   * entryWaitMs is how long a child waits for its share: until its share clock is within
   * the lookahead of now, and, while the parent is reserved further ahead than the
   * lookahead, until the parent comes back within it, unless the child is behind (its
   * clock not ahead of now: it has not had its share lately). The clocks alone would bound
   * each child's lead, not their sum: a child alone runs its clock at a share of 1, and
   * when others arrive the parent time it took stays reserved, so a quiet child would wait
   * behind it all. With the second rule the parent is never reserved much further than the
   * lookahead ahead, and a quiet child waits at most that and a unit.
   */
  private entryWaitMs(entry: ChildEntry, parentDelayMs: number, now: number): number {
    let waitMs = entry.shareClockMs - this.lookaheadMs - now
    if (parentDelayMs > this.lookaheadMs && entry.shareClockMs > now) {
      waitMs = Math.max(waitMs, parentDelayMs - this.lookaheadMs)
    }
    return waitMs > 0 ? waitMs : 0
  }

  /** peekWaitMs is waitMs without marking anything: for explain. */
  peekWaitMs(parent: string, parentDelayMs: number, child: string, now: number): number {
    const entry = this.parents.get(parent)?.children.get(child)
    return entry === undefined ? 0 : this.entryWaitMs(entry, parentDelayMs, now)
  }

  /** charge advances `child`'s share clock for a grant of `cost` through `parent`, binding, at emission `emissionMs`. */
  charge(parent: string, child: string, cost: number, emissionMs: number, now: number): void {
    const entry = this.backlogged(parent, child, now)
    if (entry === undefined) return
    const parentEntry = this.parents.get(parent)!
    const weight = this.weightOf(child)
    const share = weight / (parentEntry.backloggedWeight + (entry.counted ? 0 : weight))
    const start = entry.shareClockMs > now ? entry.shareClockMs : now
    entry.shareClockMs = start + (cost * emissionMs) / share
    this.count(entry, cost, now)
  }

  /** count records a grant of `cost` to a tracked `child` through `parent` while the parent does not bind. */
  countGrant(parent: string, child: string, cost: number, now: number): void {
    const entry = this.parents.get(parent)?.children.get(child)
    if (entry !== undefined) this.count(entry, cost, now)
  }

  /** parentKeys lists the parents with a child tracked at `now` (forgetting quiet ones first, at most once per quarter window). */
  parentKeys(now: number): string[] {
    this.sweep(now)
    return [...this.parents.keys()]
  }

  /** childrenOf describes `parent`'s tracked children at `now`. */
  childrenOf(parent: string, now: number): ChildShare[] {
    const parentEntry = this.parents.get(parent)
    if (parentEntry === undefined) return []
    const children: ChildShare[] = []
    for (const [key, entry] of parentEntry.children) {
      this.roll(entry, now)
      const elapsed = Math.min(1, (now - entry.countStartMs) / this.windowMs)
      const granted = entry.grantedNow + entry.grantedBefore * (1 - elapsed)
      children.push({
        key,
        weight: this.weightOf(key),
        backlogged: now - entry.bindingAtMs <= this.windowMs,
        grantedPerSec: (granted * 1_000) / this.windowMs,
      })
    }
    return children
  }

  /** shiftTimes moves every time back by `shiftMs`, with the limiter's epoch. */
  shiftTimes(shiftMs: number): void {
    for (const parentEntry of this.parents.values()) {
      parentEntry.scannedAtMs -= shiftMs
      for (const entry of parentEntry.children.values()) {
        entry.shareClockMs -= shiftMs
        entry.bindingAtMs -= shiftMs
        entry.countStartMs -= shiftMs
      }
    }
    this.sweptAtMs -= shiftMs
  }

  /**
   * checkWeightBound throws a RangeError when setting `weights` (with `replace`, as the only
   * ones) would leave more than `max` weights set; nothing is changed.
   */
  checkWeightBound(weights: ReadonlyMap<string, number | null>, replace: boolean, max: number): void {
    let count = replace ? 0 : this.weights.size
    for (const [key, weight] of weights) {
      const had = !replace && this.weights.has(key)
      if (weight !== null && !had) count++
      else if (weight === null && had) count--
    }
    if (count > max) {
      throw new RangeError(`apply: ${count} weights would exceed maxOverrides (${max}); nothing was changed`)
    }
  }

  /**
   * setWeights sets the checked `weights` (null: back to 1), with `replace` clearing every
   * other; the next decision through each parent recounts its backlogged weight.
   */
  setWeights(weights: ReadonlyMap<string, number | null>, replace: boolean): void {
    if (!replace && weights.size === 0) return
    if (replace) for (const key of [...this.weights.keys()]) if (!weights.has(key)) this.weights.delete(key)
    for (const [key, weight] of weights) {
      if (weight === null) this.weights.delete(key)
      else this.weights.set(key, weight)
    }
    for (const parentEntry of this.parents.values()) parentEntry.scannedAtMs = Number.NEGATIVE_INFINITY
  }

  /** weightOf is a child's weight: 1 unless set. */
  weightOf(child: string): number {
    return this.weights.get(child) ?? 1
  }

  /** backlogged finds or makes `child`'s entry under `parent`, marked backlogged at `now`; undefined when full. */
  private backlogged(parent: string, child: string, now: number): ChildEntry | undefined {
    let parentEntry = this.parents.get(parent)
    let entry = parentEntry?.children.get(child)
    if (entry === undefined) {
      if (this.entries >= this.maxEntries && !this.sweep(now)) {
        this.untracked++
        return undefined
      }
      if (parentEntry === undefined) {
        parentEntry = new ParentEntry()
        this.parents.set(parent, parentEntry)
      }
      entry = new ChildEntry(now)
      parentEntry.children.set(child, entry)
      parentEntry.backloggedWeight += this.weightOf(child)
      this.entries++
    } else {
      entry.bindingAtMs = now
      if (!entry.counted) {
        // asking again: counted at once, not at the next scan
        entry.counted = true
        parentEntry!.backloggedWeight += this.weightOf(child)
      }
    }
    const scanEveryMs = Math.max(this.scanEveryMs, parentEntry!.children.size * SCAN_MS_PER_CHILD)
    if (now - parentEntry!.scannedAtMs >= Math.min(scanEveryMs, this.windowMs / 4))
      this.scan(parentEntry!, now)
    return entry
  }

  /**
   * scan recounts a parent's backlogged weight and forgets the children that are neither
   * backlogged nor ahead of now. A child counts while it is backlogged and its share clock
   * is ahead of now: one that asked once, or asks less than its share, has its clock fall
   * back to now and leaves its share to the others (asking again, it counts again at once);
   * counting every child that asked within the window for the whole window held a share of
   * a 200/s parent for a second after one ask, the parent then went unused, and the child
   * asking most took what was left: 120 to 80 between two equal children. A child that
   * goes quiet still counts until the next scan: a twelfth of the lookahead late, more for a
   * parent of over a thousand children (recounted every 20 µs a child, at most a quarter of the
   * window). Recounted every quarter of the lookahead, a child at its own limit below its
   * share stayed counted most of the time, and three lanes of a 200/s parent, one capped at
   * 40/s, got 71 and 89/s instead of 80 each.
   */
  private scan(parentEntry: ParentEntry, now: number): void {
    let weight = 0
    for (const [key, entry] of parentEntry.children) {
      entry.counted = now - entry.bindingAtMs <= this.windowMs && entry.shareClockMs > now
      if (entry.counted) weight += this.weightOf(key)
      else if (entry.shareClockMs <= now && now - entry.countStartMs > 2 * this.windowMs) {
        parentEntry.children.delete(key)
        this.entries--
      }
    }
    parentEntry.backloggedWeight = weight
    parentEntry.scannedAtMs = now
  }

  /** sweep scans every parent (at most once per quarter window) to make room; true when there is. */
  private sweep(now: number): boolean {
    if (now - this.sweptAtMs >= this.windowMs / 4) {
      this.sweptAtMs = now
      for (const [parent, parentEntry] of this.parents) {
        this.scan(parentEntry, now)
        if (parentEntry.children.size === 0) this.parents.delete(parent)
      }
    }
    return this.entries < this.maxEntries
  }

  /** count adds a grant of `cost` to the entry's counts of the share window. */
  private count(entry: ChildEntry, cost: number, now: number): void {
    this.roll(entry, now)
    entry.grantedNow += cost
  }

  /** roll moves the entry's counts on to the share window `now` falls in. */
  private roll(entry: ChildEntry, now: number): void {
    const elapsed = now - entry.countStartMs
    if (elapsed < this.windowMs) return
    entry.grantedBefore = elapsed < 2 * this.windowMs ? entry.grantedNow : 0
    entry.grantedNow = 0
    entry.countStartMs = elapsed < 2 * this.windowMs ? entry.countStartMs + this.windowMs : now
  }
}

/** checkWeight returns a weight that is a finite number above 0 and at most MAX_WEIGHT, or throws a TypeError. */
export function checkWeight(weight: unknown, child: string): number {
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0 || weight > MAX_WEIGHT) {
    throw new TypeError(
      `setWeight: expected a weight above 0 and at most ${MAX_WEIGHT} for '${child}', got ${String(weight)}`,
    )
  }
  return weight
}

function checkPositive(value: number, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new TypeError(`${what}: expected a finite number above 0, got ${String(value)}`)
  }
  return value
}

function checkWhole(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new TypeError(`${what}: expected a whole number >= 1, got ${String(value)}`)
  }
  return value
}
