// The library's public exports, named explicitly.
export {
  type CarriedReservation,
  createThrottledProcessor,
  createThrottledWorker,
  type Instances,
  type ShareSource,
  THROTTLE_FIELD,
  type ThrottledProcessor,
  ThrottledWorker,
  type ThrottledWorkerOptions,
  type ThrottleEvent,
  type ThrottleOptions,
  type ThrottleOutcome,
  type ThrottleStats,
} from './adapters/bullmq/index.js'
