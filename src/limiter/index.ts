export { type BackoffOptions, backoffMs } from './backoff.js'
export {
  type Admission,
  type BreakerChange,
  type BreakerOptions,
  type BreakerState,
  type BreakerView,
  CircuitBreakers,
} from './breaker.js'
export {
  type Clock,
  FakeClock,
  monotonicClock,
  type SkewEvent,
  SkewGuard,
  type SkewKind,
  wallClock,
} from './clock.js'
export { type CapChange, InFlightTable } from './inflight.js'
export { checkMerchantKey, MAX_MERCHANT_KEY_LENGTH, type MerchantKeyCheck } from './key.js'
export { checkLimitKeys, MAX_LIMIT_KEYS } from './layered.js'
export {
  type ApplyResult,
  type ChildShare,
  type ConfiguredRates,
  type DeferReason,
  type Deferred,
  type ExplainReason,
  type Explanation,
  type Granted,
  type Inheritance,
  KeyedLimiter,
  type KeyedLimiterOptions,
  type KeyInspection,
  type LimiterStats,
  type LimitKeys,
  type PenaltyOptions,
  type RateChange,
  type Reservation,
  ReservationBook,
} from './limiter.js'
export {
  formatRate,
  MAX_BURST,
  MAX_INTERVAL_MS,
  MAX_RATE_PER_SEC,
  MAX_WINDOWS,
  MIN_RATE_PER_SEC,
  parseRate,
  type Rate,
  type RateInput,
  type RateObject,
  type RateWindow,
  ratePerSec,
  windowsOf,
} from './rate.js'
