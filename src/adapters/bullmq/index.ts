export { type CarriedReservation, THROTTLE_FIELD } from './carried.js'
export { DEFAULT_MAX_PARKED_PER_MERCHANT, type ParkedJob, ParkedJobs } from './parked.js'
export {
  type BreakerGate,
  createThrottledProcessor,
  DEFAULT_CLOCK_SKEW_TOLERANCE_MS,
  DEFAULT_HORIZON_MS,
  DEFAULT_LATE_TOLERANCE_MS,
  DEFAULT_LEAD_MS,
  DEFAULT_PARK_MS,
  DEFAULT_SAFETY_NET_MS,
  type ThrottledProcessor,
  type ThrottleLimiter,
  type ThrottleOptions,
} from './processor.js'
export type { Instances, ShareSource } from './share.js'
export { fairShareOf, type SlotAnswer, type SlotTable, takeSlot } from './slots.js'
export type { ThrottleEvent, ThrottleOutcome, ThrottleStats } from './stats.js'
export type { MerchantWaiting } from './waiting.js'
export {
  createThrottledWorker,
  DEFAULT_INSTANCES_REFRESH_MS,
  ThrottledWorker,
  type ThrottledWorkerOptions,
  type WorkerLimiter,
} from './worker.js'
