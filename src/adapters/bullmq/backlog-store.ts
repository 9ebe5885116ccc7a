import type { LimitKeys } from '../../limiter/index.js'
import type { BacklogEntry, BacklogStore, PromoteResult, Promotion } from './backlog.js'
import { THROTTLE_FIELD } from './carried.js'

/**
 * RedisScripting is the part of an ioredis client (or BullMQ's wrapper of one) the store
 * uses: EVAL with its keys declared, so that Redis Cluster routes every call to the
 * queue's slot.
 */
export interface RedisScripting {
  eval(script: string, numberOfKeys: number, ...args: Array<string | number>): Promise<unknown>
}

/** QueueKeys is the part of a BullMQ queue (or worker) the store needs: its keys. */
export interface QueueKeys {
  /** toKey gives the queue's key for `type` (`<prefix>:<queue>:<type>`); a job's key is toKey(jobId). */
  toKey(type: string): string
}

/**
 * The keys the store adds sit under the queue's own prefix, so that a hash tag in the
 * prefix (`{mt}`) puts them in the queue's slot on Redis Cluster:
 * `<prefix>:<queue>:mt:backlog:<merchant>` (a sorted set of entries scored by the time the
 * job was added, ties in job-id order: a job parked again after coming back late takes
 * its place by when it was added, not by when it came back) and
 * `<prefix>:<queue>:mt:backlogs` (the set of merchants with a backlog).
 */
const BACKLOG_KEY = 'mt:backlog:'
const MERCHANTS_KEY = 'mt:backlogs'

const APPEND = `
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return redis.call('ZCARD', KEYS[1])`

const HEAD = `
return {redis.call('ZCARD', KEYS[1]), redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)}`

// KEYS: backlog, merchants, delayed, marker, meta, events.
// ARGV: job key prefix, merchant key, now ms, then per promotion: entry, job id,
// attemptsStarted, carried JSON, due ms. A job is promoted only while it is still in the
// delayed set with the attempts it was parked with and its parked mark at the end of its
// data; the mark is replaced by the carried reservation and the job re-scored as BullMQ
// scores delayed jobs (due ms * 4096 plus a sequence within the ms).
const PROMOTE = `
local promoted, dropped = 0, 0
local now = tonumber(ARGV[3])
local mark = '"${THROTTLE_FIELD}":{"parkedAtWallMs":[0-9.e+-]+}}$'
for i = 4, #ARGV, 5 do
  if redis.call('ZRANGE', KEYS[1], 0, 0)[1] ~= ARGV[i] then break end
  redis.call('ZREM', KEYS[1], ARGV[i])
  local jobId = ARGV[i + 1]
  local jobKey = ARGV[1] .. jobId
  local fields = redis.call('HMGET', jobKey, 'ats', 'data')
  local at = nil
  if redis.call('ZSCORE', KEYS[3], jobId) and fields[1] == ARGV[i + 2] and fields[2] then
    at = string.find(fields[2], mark)
  end
  if not at then
    dropped = 1
    break
  end
  local data = string.sub(fields[2], 1, at - 1) .. '"${THROTTLE_FIELD}":' .. ARGV[i + 3] .. '}'
  local due = tonumber(ARGV[i + 4])
  local score = due * 4096
  local last = redis.call('ZREVRANGEBYSCORE', KEYS[3], score + 4095, score, 'WITHSCORES', 'LIMIT', 0, 1)
  if last[2] then score = math.min(tonumber(last[2]) + 1, score + 4095) end
  redis.call('HSET', jobKey, 'data', data, 'delay', math.max(0, due - now))
  redis.call('ZADD', KEYS[3], score, jobId)
  local maxEvents = tonumber(redis.call('HGET', KEYS[5], 'opts.maxLenEvents')) or 10000
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxEvents, '*', 'event', 'delayed', 'jobId', jobId, 'delay', due)
  promoted = promoted + 1
end
if promoted > 0 then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if first[2] then redis.call('ZADD', KEYS[4], tonumber(first[2]) / 4096, '1') end
end
local length = redis.call('ZCARD', KEYS[1])
if length == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return {promoted, dropped, length}`

/** RedisBacklogStore keeps the backlogs in Redis beside a BullMQ queue; see the key layout above. */
export class RedisBacklogStore implements BacklogStore {
  constructor(
    private readonly client: () => Promise<RedisScripting>,
    private readonly queue: QueueKeys,
  ) {}

  async append(merchantKey: string, entry: BacklogEntry): Promise<number> {
    const client = await this.client()
    const keys = [this.backlogKey(merchantKey), this.queue.toKey(MERCHANTS_KEY)]
    const score = Math.round(entry.addedAtWallMs)
    return Number(await client.eval(APPEND, 2, ...keys, encodeEntry(entry), merchantKey, score))
  }

  async head(merchantKey: string, count: number): Promise<{ entries: BacklogEntry[]; length: number }> {
    const client = await this.client()
    const [length, raw] = (await client.eval(HEAD, 1, this.backlogKey(merchantKey), count)) as [
      number,
      string[],
    ]
    return { length: Number(length), entries: raw.map(decodeEntry) }
  }

  async promote(
    merchantKey: string,
    promotions: readonly Promotion[],
    nowWallMs: number,
  ): Promise<PromoteResult> {
    const client = await this.client()
    const { toKey } = this.queue
    const keys = [
      this.backlogKey(merchantKey),
      toKey(MERCHANTS_KEY),
      toKey('delayed'),
      toKey('marker'),
      toKey('meta'),
      toKey('events'),
    ]
    const args: Array<string | number> = [toKey(''), merchantKey, Math.round(nowWallMs)]
    for (const { entry, carried, dueAtWallMs } of promotions) {
      args.push(
        encodeEntry(entry),
        entry.jobId,
        String(entry.attemptsStarted),
        JSON.stringify(carried),
        Math.round(dueAtWallMs),
      )
    }
    const [promoted, dropped, length] = (await client.eval(
      PROMOTE,
      keys.length,
      ...keys,
      ...args,
    )) as number[]
    return { promoted: Number(promoted), dropped: Number(dropped), length: Number(length) }
  }

  async merchants(): Promise<string[]> {
    const client = (await this.client()) as unknown as RedisScripting & {
      smembers(key: string): Promise<string[]>
    }
    return client.smembers(this.queue.toKey(MERCHANTS_KEY))
  }

  private backlogKey(merchantKey: string): string {
    return this.queue.toKey(BACKLOG_KEY + merchantKey)
  }
}

/**
 * encodeEntry makes the set member of an entry: an order key, a space, the entry as JSON.
 * The key is the job id zero-padded when it is a number (BullMQ's own ids), so that jobs
 * added in the same ms sort in id order; other ids sort after, by their JSON.
 */
function encodeEntry(entry: BacklogEntry): string {
  const { jobId } = entry
  const order = /^[0-9]{1,20}$/.test(jobId) ? jobId.padStart(20, '0') : '~'
  const fields: unknown[] = [
    jobId,
    entry.attemptsMade,
    entry.attemptsStarted,
    entry.cost,
    entry.addedAtWallMs,
  ]
  if (entry.limitKeys !== undefined) fields.push(entry.limitKeys)
  return `${order} ${JSON.stringify(fields)}`
}

/** decodeEntry reads a set member back; its limit keys as written (Backlog checks them before it charges them). */
function decodeEntry(member: string): BacklogEntry {
  const fields = JSON.parse(member.slice(member.indexOf(' ') + 1)) as [
    string,
    number,
    number,
    number,
    number,
    LimitKeys?,
  ]
  const [jobId, attemptsMade, attemptsStarted, cost, addedAtWallMs, limitKeys] = fields
  const entry: BacklogEntry = { jobId, attemptsMade, attemptsStarted, cost, addedAtWallMs }
  if (limitKeys !== undefined) entry.limitKeys = limitKeys
  return entry
}
