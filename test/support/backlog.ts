import type { SourceBacklog } from '../../src/service/status.js'

/** NO_BACKLOG is a source with nothing waiting, for status tests that do not look at backlogs. */
export const NO_BACKLOG: SourceBacklog = {
  merchants: [],
  totals: {
    parked: 0,
    buffered: 0,
    bufferedBytes: 0,
    parkedMerchants: 0,
    parkTransactions: 0,
    parkFailures: 0,
    lateGrants: 0,
  },
}
