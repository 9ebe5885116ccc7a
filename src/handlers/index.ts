export { type BackoffOptions, backoffMs } from '../limiter/backoff.js'
export {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_CONNECTIONS_PER_ORIGIN,
  DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
  DEFAULT_MAX_HEADER_BYTES,
  DEFAULT_MAX_RESPONSE_BYTES,
  DEFAULT_TIMEOUT_MS,
  HttpClient,
  type HttpClientOptions,
  type HttpFailed,
  type HttpRefused,
  type HttpResponse,
  type HttpResult,
  type OutboundRequest,
} from './http.js'
export { type ClassifyOptions, classifyResult, describeOutcome, settleOutcome } from './outcome.js'
export {
  createPspHandler,
  idempotencyKeyOf,
  type PspEndpoint,
  type PspHandlerOptions,
  type PspJobData,
  type PspOutcome,
  type PspResponse,
  pspJobSchema,
  pspKeyOf,
} from './psp.js'
export {
  DEFAULT_RETRY_AFTER_MS,
  MAX_RETRY_AFTER_MS,
  parseRetryAfter,
  type RetryAfterLimits,
  retryAfterMsOf,
} from './retry-after.js'
export {
  MIN_SECRET_BYTES,
  parseWebhookSecret,
  type SecretCheck,
  type SigningSecrets,
  secretsInForce,
  signatureHeader,
} from './signature.js'
export {
  type AddressClass,
  type AddressRefusalReason,
  classifyAddress,
  type ResolvedAddress,
  type Resolver,
  systemResolver,
  TargetGuard,
  type TargetGuardOptions,
  type TargetRefusal,
  type TargetRefusalReason,
  type UrlCheck,
} from './ssrf.js'
export type {
  Delivered,
  DeliveryOutcome,
  Handler,
  HandlerJob,
  Permanent,
  PermanentReason,
  Retryable,
  RetryableReason,
  RetryLater,
} from './types.js'
export {
  createWebhookHandler,
  type WebhookHandlerOptions,
  type WebhookJobData,
  webhookJobSchema,
} from './webhook.js'
