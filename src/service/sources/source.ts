import type { Logger } from 'pino'
import { RetryLaterError } from '../../errors.js'
import type { CircuitBreakers, InFlightTable, KeyedLimiter } from '../../limiter/index.js'
import type { ActivityTracker } from '../activity.js'
import type { JobHandler } from '../handlers.js'
import type { ServiceMetrics } from '../metrics.js'
import type { SourceStatus } from '../status.js'

/** Source is one queue or topic the worker consumes, whatever its kind. */
export interface Source extends SourceStatus {
  /** ready: connected and consuming. */
  ready(): boolean
  /**
   * ratesChanged tells the source that rates changed (every rate, or those of
   * `merchantKeys`), after the change was applied to the limiter, so that a standing
   * backlog moves at the new rate at once.
   */
  ratesChanged(merchantKeys?: readonly string[]): void
  /** close stops taking work and lets in-flight work finish within `deadlineMs`. */
  close(deadlineMs: number): Promise<void>
}

/** SourceWiring is what every source shares: the limits, and where outcomes are reported. */
export interface SourceWiring {
  limiter: KeyedLimiter
  inFlight: InFlightTable
  breakers: CircuitBreakers
  metrics: ServiceMetrics
  activity: ActivityTracker
  logger: Logger
}

/** SourceHandler is a source's handler and, when the handler has its own, how a job's data names its merchant. */
export interface SourceHandler {
  handle: JobHandler
  keyOf: ((data: unknown) => unknown) | undefined
}

/**
 * reportFailure counts a failed handler call: its metric outcome and, unless the far side
 * only asked to be called later, the merchant's failure (and dead letter) on the status page.
 */
export function reportFailure(
  wiring: SourceWiring,
  sourceLabel: string,
  merchantKey: string,
  error: unknown,
  deadLettered: boolean,
): void {
  if (error instanceof RetryLaterError) {
    wiring.metrics.handlerOutcome(sourceLabel, 'retry-later', merchantKey)
    return
  }
  wiring.metrics.handlerOutcome(sourceLabel, deadLettered ? 'dead-lettered' : 'retryable', merchantKey)
  wiring.activity.failed(merchantKey, failureReason(error), deadLettered)
}

/** reportDelivered counts a handler call that did the work. */
export function reportDelivered(wiring: SourceWiring, sourceLabel: string, merchantKey: string): void {
  wiring.metrics.handlerOutcome(sourceLabel, 'delivered', merchantKey)
  wiring.activity.delivered(merchantKey)
}

/**
 * failureReason is what the status page says of a failure: the error's message, which for
 * the failures the handlers classify is their own account (`client-error (HTTP 410)`).
 */
export function failureReason(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
