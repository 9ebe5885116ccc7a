export {
  createFileControlSource,
  type FileControlSource,
  type FileControlSourceOptions,
} from './file-source.js'
export {
  createKafkaControlSource,
  type KafkaControlSource,
  type KafkaControlSourceOptions,
  type KafkaControlStats,
  REJECT_ERROR_HEADER,
  REJECT_REASON_HEADER,
} from './kafka-source.js'
export { describeChange, logControlEvents } from './log.js'
export { type ControlRecord, handleControlRecord, type RecordHandling } from './record.js'
export {
  type ClearChange,
  type ControlChange,
  type ControlLimits,
  type ControlParseFailure,
  type ControlParseResult,
  checkRateValue,
  DEFAULT_CONTROL_LIMITS,
  DEFAULT_RATE_KEY,
  messageKeyOf,
  parseControlMessage,
  resolveLimits,
  type SetChange,
  SNAPSHOT_KEY,
  type SnapshotChange,
} from './schema.js'
export {
  type ControlHeaders,
  createSignatureVerifier,
  KEY_ID_HEADER,
  MIN_SECRET_BYTES,
  SIGNATURE_HEADER,
  type SignatureCheck,
  type SignatureVerifier,
  type SigningKey,
  signControlValue,
  tombstoneSignedBytes,
} from './signing.js'
export {
  type ControlApply,
  type ControlEvent,
  type ControlOrigin,
  type ControlOutcome,
  type ControlRejectReason,
  ControlState,
  type ControlStateOptions,
  type ControlStats,
  type ControlTable,
  type RateEntry,
  type RateTarget,
} from './state.js'
export {
  type ControlTopicOptions,
  DEFAULT_CONTROL_TOPIC,
  encodeControlMessage,
  ensureControlTopic,
  publishControlChange,
} from './topic.js'
