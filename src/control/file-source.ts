import { type FSWatcher, watch } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'
import { type Logger, pino } from 'pino'
import { InvalidRatesFileError } from '../errors.js'
import { logControlEvents } from './log.js'
import { type ControlLimits, parseControlMessage, resolveLimits } from './schema.js'
import {
  type ControlEvent,
  type ControlOutcome,
  ControlState,
  type ControlStats,
  type ControlTable,
  type RateTarget,
} from './state.js'

/** FileControlSourceOptions configure createFileControlSource. */
export interface FileControlSourceOptions {
  /** path of the rates file, in the snapshot format (config/rates.json). */
  path: string
  /** limiter receives the file's rates as one `apply` per accepted edit. */
  limiter: RateTarget
  /** debounceMs waits for an editor's burst of writes to settle before reading, in ms (100 by default). */
  debounceMs?: number
  /** limits bound the file's content; a file may hold a larger snapshot than a Kafka message by raising maxMessageBytes. */
  limits?: Partial<ControlLimits>
  /** wallNow is the wall clock for the table's change times, in ms since the epoch. */
  wallNow?: () => number
  logger?: Logger
}

/** FileControlSource applies a watched rates file. */
export interface FileControlSource {
  /** start applies the file once and watches it; rejects with InvalidRatesFileError when the file is missing or invalid. */
  start(): Promise<void>
  /** reload reads and applies the file now; what a watched edit does, also for a SIGHUP. */
  reload(): Promise<ControlOutcome | 'unchanged' | 'unreadable'>
  /** stop closes the watcher; the rates in force stay. */
  stop(): Promise<void>
  table(): ControlTable
  stats(): ControlStats
  subscribe(listener: (event: ControlEvent) => void): () => void
}

/**
 * createFileControlSource is the embedded default when no Kafka is configured. The file
 * holds one snapshot. Each edit is validated and applied whole, or rejected whole with
 * the reason logged and the rates in force kept. Edits follow the same ordering as the
 * topic: an edit must raise `version`, or it is reported stale and ignored.
 *
 * The folder is watched, not the file: editors save by writing a new file and renaming
 * it over the old one, which ends a watch on the file itself.
 */
export function createFileControlSource(options: FileControlSourceOptions): FileControlSource {
  const path = resolve(options.path)
  const debounceMs = options.debounceMs ?? 100
  if (!Number.isFinite(debounceMs) || debounceMs < 0) {
    throw new TypeError(
      `createFileControlSource: expected debounceMs to be a finite number >= 0, got ${debounceMs}`,
    )
  }
  const limits = resolveLimits(options.limits)
  const logger = (options.logger ?? pino({ level: 'silent' })).child({
    component: 'control',
    source: 'file',
    path,
  })
  const state = new ControlState({ target: options.limiter, wallNow: options.wallNow, logger })
  logControlEvents(state, logger)
  const origin = { source: 'file', path } as const
  let watcher: FSWatcher | undefined
  let timer: NodeJS.Timeout | undefined
  let lastContent: Buffer | undefined
  let pending: Promise<ControlOutcome | 'unchanged' | 'unreadable'> = Promise.resolve('unchanged')

  const readAndApply = async (): Promise<ControlOutcome | 'unchanged' | 'unreadable'> => {
    let content: Buffer
    try {
      content = await readFile(path)
    } catch (error) {
      logger.warn({ err: error }, 'rates file unreadable; the rates in force stay')
      return 'unreadable'
    }
    if (lastContent !== undefined && content.equals(lastContent)) return 'unchanged'
    lastContent = content
    const parsed = parseControlMessage(content, limits)
    if (!parsed.ok) return state.reject(parsed.reason, parsed.error, origin)
    if (parsed.change.type !== 'snapshot') {
      return state.reject(
        'not-a-snapshot',
        `type: expected "snapshot" in a rates file, got "${parsed.change.type}"`,
        origin,
      )
    }
    return state.accept(parsed.change, origin)
  }

  const reload = (): Promise<ControlOutcome | 'unchanged' | 'unreadable'> => {
    pending = pending.then(readAndApply, readAndApply)
    return pending
  }

  return {
    async start() {
      if (watcher !== undefined)
        throw new TypeError('FileControlSource.start: expected a stopped source, got a started one')
      let content: Buffer
      try {
        content = await readFile(path)
      } catch (error) {
        throw new InvalidRatesFileError(path, `cannot be read (${(error as Error).message})`, {
          cause: error,
        })
      }
      const parsed = parseControlMessage(content, limits)
      if (!parsed.ok) throw new InvalidRatesFileError(path, parsed.error)
      if (parsed.change.type !== 'snapshot') {
        throw new InvalidRatesFileError(path, `type: expected "snapshot", got "${parsed.change.type}"`)
      }
      if (state.accept(parsed.change, origin) === 'rejected') {
        throw new InvalidRatesFileError(path, 'the limiter refused its rates (see the log)')
      }
      lastContent = content
      const name = basename(path)
      watcher = watch(dirname(path), (_event, filename) => {
        if (filename !== null && filename !== name) return
        clearTimeout(timer)
        timer = setTimeout(() => void reload(), debounceMs)
      })
      watcher.on('error', (error) =>
        logger.error({ err: error }, 'watching the rates file failed; edits are no longer applied'),
      )
    },
    reload,
    async stop() {
      clearTimeout(timer)
      watcher?.close()
      watcher = undefined
      await pending
    },
    table: () => state.table(),
    stats: () => state.stats(),
    subscribe: (listener) => state.subscribe(listener),
  }
}
