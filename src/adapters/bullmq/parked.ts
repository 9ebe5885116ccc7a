/** ParkedJob is what the processor keeps of a job it parked: enough to promote it. */
export interface ParkedJob {
  readonly id?: string
  promote(): Promise<void>
}

/** DEFAULT_MAX_PARKED_PER_MERCHANT bounds the parked jobs remembered per merchant. */
export const DEFAULT_MAX_PARKED_PER_MERCHANT = 1_000

/**
 * ParkedJobs remembers, per merchant and oldest first, the jobs this process moved to
 * delayed because their merchant was at its in-flight cap (or over its fair share), so
 * that a finishing job of the merchant can promote the oldest at once. Jobs past the
 * bound are forgotten, not lost: they come back by their fallback delay. A job promoted
 * by its fallback (or taken by another process) is simply found not delayed when promoted.
 */
export class ParkedJobs {
  private readonly byMerchant = new Map<string, ParkedJob[]>()

  constructor(private readonly maxPerMerchant = DEFAULT_MAX_PARKED_PER_MERCHANT) {}

  /** park remembers `job` as the newest parked job of `merchantKey`. */
  park(merchantKey: string, job: ParkedJob): void {
    let list = this.byMerchant.get(merchantKey)
    if (list === undefined) {
      list = []
      this.byMerchant.set(merchantKey, list)
    }
    if (list.length >= this.maxPerMerchant) list.shift()
    list.push(job)
  }

  /** takeOldest forgets and returns the oldest parked job of `merchantKey`, if any. */
  takeOldest(merchantKey: string): ParkedJob | undefined {
    const list = this.byMerchant.get(merchantKey)
    if (list === undefined) return undefined
    const job = list.shift()
    if (list.length === 0) this.byMerchant.delete(merchantKey)
    return job
  }

  /** size is the number of parked jobs remembered over every merchant. */
  get size(): number {
    let size = 0
    for (const list of this.byMerchant.values()) size += list.length
    return size
  }
}
