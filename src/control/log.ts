import type { Logger } from 'pino'
import { formatRate } from '../limiter/index.js'
import type { ControlChange } from './schema.js'
import type { ControlState } from './state.js'

/**
 * describeChange is a one-line account of a change for logs and `throttlectl watch`,
 * e.g. `set m_123 5000/min (version 42)` or `snapshot default 1000/min, 2 overrides (version 44)`.
 */
export function describeChange(change: ControlChange): string {
  const inheritance = change.inheritance === undefined ? '' : `, inheritance ${change.inheritance}`
  switch (change.type) {
    case 'set':
      return `set ${change.merchant} ${formatRate(change.rate)}${change.maxInFlight === undefined ? '' : `, max ${change.maxInFlight} in flight`}${change.weight === undefined ? '' : `, weight ${change.weight}`} (version ${change.version}${inheritance})`
    case 'clear':
      return `clear ${change.merchant} (version ${change.version}${inheritance})`
    case 'snapshot':
      return `snapshot default ${formatRate(change.default)}, ${change.overrides.size} overrides${change.weights === undefined ? '' : `, ${change.weights.size} weights`} (version ${change.version}${inheritance})`
  }
}

/**
 * logControlEvents logs every event of `state`: applied and forgotten at info, stale at
 * info (a replay or a duplicate is normal), rejected at warn with the reason. `logger`
 * should carry the source (kafka and its topic, or file and its path); each line adds the
 * record's partition and offset when it has them.
 */
export function logControlEvents(state: Pick<ControlState, 'subscribe'>, logger: Logger): () => void {
  return state.subscribe((event) => {
    // the sources' child loggers already carry the source and its path or topic
    const at = { partition: event.origin.partition, offset: event.origin.offset }
    switch (event.kind) {
      case 'applied':
        logger.info(
          { ...at, version: event.change.version },
          `control change applied: ${describeChange(event.change)}`,
        )
        break
      case 'stale':
        logger.info(
          { ...at, version: event.change.version, inForceVersion: event.inForceVersion },
          `control change ignored as stale: ${describeChange(event.change)}, version ${event.inForceVersion} in force`,
        )
        break
      case 'rejected':
        logger.warn(
          { ...at, reason: event.reason },
          `control message rejected (${event.reason}): ${event.error}`,
        )
        break
      case 'forgotten':
        logger.info(
          { ...at, key: event.key, changed: event.changed },
          `control tombstone for ${JSON.stringify(event.key)}`,
        )
        break
    }
  })
}
