import type { ConnectionOptions, Queue } from 'bullmq'

/** connectionOf turns a redis:// URL into the connection options BullMQ takes. */
export function connectionOf(url: string): ConnectionOptions {
  const parsed = new URL(url)
  return {
    host: parsed.hostname,
    port: Number(parsed.port || 6379),
    username: parsed.username || undefined,
    password: parsed.password || undefined,
    db: parsed.pathname.length > 1 ? Number(parsed.pathname.slice(1)) : 0,
    maxRetriesPerRequest: null,
  }
}

/** gapsOf returns the differences between consecutive values of a sorted list. */
export function gapsOf(sorted: readonly number[]): number[] {
  return sorted.slice(1).map((value, i) => value - sorted[i]!)
}

/** medianOf a non-empty list. */
export function medianOf(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** removeBacklogKeys deletes the throttle's backlog keys of `queue` (obliterate leaves keys it does not know). */
export async function removeBacklogKeys(queue: Queue): Promise<void> {
  const client = (await queue.backend.client) as unknown as {
    scan(cursor: string, ...args: Array<string | number>): Promise<[string, string[]]>
    del(...keys: string[]): Promise<number>
  }
  const pattern = `${queue.opts.prefix ?? 'bull'}:${queue.name}:mt:*`
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    if (keys.length > 0) await client.del(...keys)
    cursor = next
  } while (cursor !== '0')
}
