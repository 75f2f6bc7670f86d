/**
 * Roost's public API. Everything a user imports comes from here; nothing else is public.
 */
export { createRuntime, Runtime } from './runtime/runtime.js';
export { Agent, DEFAULT_QUARANTINE } from './runtime/agent.js';
export { Flow } from './flow/flow.js';
export { node, route, routeBy, join, subflow, edge, Node } from './flow/node.js';
export { TraceStream, DEFAULT_STREAM_BUFFER } from './flow/trace-stream.js';
export { EVENT_TYPES } from './flow/events.js';
export { OVERFLOW_POLICIES } from './flow/bounded-queue.js';
export { DEFAULT_TIMEOUT_MS, defaultRetryable } from './flow/policy.js';
export { DEFAULT_BACKOFF, backoffDelay } from './resilience/backoff.js';
export { RoostError, ERROR_CODES, isRoostError, ensureError } from './errors.js';
export { encodeEnvelope, decodeEnvelope, DEFAULT_MAX_ENVELOPE_BYTES } from './envelope/codec.js';
export { validateEnvelope, ENVELOPE_SCHEMA } from './envelope/schema.js';
export { ENVELOPE_VERSION, ENVELOPE_KINDS } from './envelope/envelope.js';
export { uuidv7, isUuidV7, uuidv7Time, deriveUuidv7 } from './envelope/uuid.js';
export { isName, DEFAULT_TENANT, NAME_PATTERN } from './envelope/names.js';

export type { RuntimeState, DrainOptions, RuntimeStats } from './runtime/runtime.js';
export type { RuntimeOptions, ResolvedRuntimeOptions, LimitOptions, ResultOptions, IdempotencyOptions, RetentionOptions } from './runtime/options.js';
export type { AgentOptions, AgentState, AgentInfo, QuarantineOptions, QuarantineMode } from './runtime/agent.js';
export type { DeadLetter, DeadLetterQuery, DeadLetterQueue } from './runtime/dead-letters.js';
export type { FlowOptions, EmitOptions, EmitResult, FlowStats } from './flow/flow.js';
export type { Outcome } from './flow/host.js';
export type { NodeKind, EdgeOptions, EdgeSpec, Adjacency, JoinOptions, SubflowTarget } from './flow/node.js';
export type { Handler, HandlerContext, ContextEmitOptions, Middleware, StepInfo } from './flow/handler.js';
export { MemoryStore, DEFAULT_MEMORY_FINISHED_TRACES, type MemoryStoreOptions } from './store/memory.js';
export { SqliteStore, type SqliteStoreOptions } from './store/sqlite.js';
export { PostgresStore, type PostgresStoreOptions } from './store/postgres.js';
export { openStore, DEFAULT_STORE_URL, type OpenStoreOptions } from './store/open.js';
export type {
  Store,
  StoreBatch,
  StoredTrace,
  StoredTraceStatus,
  StoredEvent,
  StoredDeadLetter,
  PendingEnvelope,
  TraceQuery,
  TracePage,
  Lease,
  Fence,
  Versioned,
  OutboxEntry,
  OutboxWrite,
} from './store/store.js';
export type { NodePolicy, ResolvedNodePolicy, JsonSchema } from './flow/policy.js';
export type { OverflowPolicy } from './flow/bounded-queue.js';
export type {
  RoostEvent,
  NodeEvent,
  NodeEventType,
  TraceEvent,
  TraceEventType,
  AgentEvent,
  AgentEventType,
  DeadLetterEvent,
  DeadLetterEventType,
  StoreEvent,
  StoreEventType,
  EventError,
  EventListener,
  QuarantineReason,
} from './flow/events.js';
export type { LeaderEvent, LeaderEventType, LeaderLostReason } from './fleet/events.js';
export { DEFAULT_HEARTBEAT_MS as DEFAULT_SINGLETON_HEARTBEAT_MS, DEFAULT_LEASE_MS as DEFAULT_SINGLETON_LEASE_MS, resolveSingletonOptions } from './fleet/singleton.js';
export type { SingletonOptions, ResolvedSingletonOptions, SingletonContext, SingletonFn, SingletonHandle, SingletonState } from './fleet/singleton.js';
export type { TraceStreamItem, ChunkItem, StreamGapItem, TraceEndItem } from './flow/trace-stream.js';
export type { BackoffOptions, ResolvedBackoffOptions } from './resilience/backoff.js';
export type { ErrorCode, RoostErrorOptions } from './errors.js';
export type { Envelope, EnvelopeKind, JsonValue } from './envelope/envelope.js';
export type { CodecOptions } from './envelope/codec.js';
export type { Logger, LogFn } from './telemetry/logger.js';

// The service: `roost serve` as a library, for programs that build their own process.
export { createService, Service, type ServiceOptions } from './service/server.js';
export { loadConfig, configFile, describeConfig, type ServiceConfig, type LoadConfigOptions, type ConfigSource, type ConfigValue } from './config/load.js';
export { CONFIG_KEYS, type ConfigKey, type ConfigType } from './config/schema.js';
export { RuntimeMetrics, type RuntimeMetricsOptions } from './telemetry/metrics.js';
export { Health, type HealthReport, type CheckResult, type CheckStatus } from './telemetry/health.js';
export { Tracing, startTracing, tracingExporter, TRACEPARENT } from './telemetry/tracing.js';
export { serviceLogger, REDACTED_PATHS, type ServiceLoggerOptions } from './telemetry/logger.js';
export { logContext, type LogContext } from './telemetry/context.js';

// Transports: envelopes between processes (in-process, MQTT 5, NATS).
export {
  topicSegment,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type Transport,
  type TransportState,
  type TransportStateEvent,
  type TransportStats,
  type Delivery,
  type EnvelopeHandler,
  type Responder,
  type SubscribeOptions,
  type RespondOptions,
  type RequestOptions,
  type Subscription,
  type PresenceChannel,
  type PresenceListener,
  type PresenceRecordMeta,
  type PresenceWatch,
} from './transport/transport.js';
export type { TransportBaseOptions, TransportTlsOptions } from './transport/base.js';
export type { TransportOutboxOptions } from './transport/outbox.js';
export { InProcessTransport, InProcessBroker, type InProcessTransportOptions } from './transport/in-process.js';
export { MqttTransport, type MqttTransportOptions } from './transport/mqtt.js';
export { NatsTransport, type NatsTransportOptions } from './transport/nats.js';
export { JetStreamTransport, resolveJetStreamOptions, type JetStreamTransportOptions, type ResolvedJetStreamOptions } from './transport/jetstream.js';
export { Dedup, type DedupOptions } from './transport/dedup.js';
export { openTransport, type OpenTransportOptions } from './transport/open.js';

// Presence and the fleet registry: who runs where, how busy, on the fleet's transport.
export {
  preparePresence,
  startPresence,
  watchPresence,
  resolvePresenceOptions,
  DEFAULT_HEARTBEAT_MS as DEFAULT_PRESENCE_HEARTBEAT_MS,
  DEFAULT_EXPIRY_HEARTBEATS,
  type PresenceOptions,
  type ResolvedPresenceOptions,
  type PresenceSnapshot,
  type PresenceHandle,
  type WatchPresenceOptions,
  type PresenceAgent,
  type PresenceInfo,
  type PresenceStatus,
  type PresenceRegistry,
  type PresenceRegistryStats,
  type PresenceChange,
  type FleetView,
} from './fleet/presence.js';
export { PRESENCE_STATUSES, PRESENCE_RECORD_VERSION, MAX_PRESENCE_RECORD_BYTES } from './fleet/presence-record.js';
export { roostVersion } from './version.js';

// The 2389 Agent Protocol over MQTT: flows as 2389 agents, tasks to 2389 agents (runtime.protocol2389).
export { Protocol2389, type Node2389Options } from './protocol2389/protocol.js';
export { Agent2389Error, type Agent2389Info, type Target2389, type Call2389Options } from './protocol2389/client.js';
export { resolveProtocol2389, type Protocol2389Options, type Agent2389Options, type ResolvedProtocol2389, type ResolvedAgent2389 } from './protocol2389/options.js';
export type { Agent2389Event, Agent2389TaskEvent, Agent2389CallEvent, Agent2389TaskOutcome, Agent2389RejectReason, Agent2389TaskEventType, Agent2389CallEventType } from './protocol2389/events.js';
export type { Health2389Snapshot } from './protocol2389/health.js';
export {
  MAX_PACKET_BYTES as MAX_2389_PACKET_BYTES,
  DEFAULT_MAX_DEPTH as DEFAULT_2389_MAX_DEPTH,
  canonicalTopic as canonical2389Topic,
  parseTask as parse2389Task,
  type TaskEnvelope,
  type NextTask,
  type ErrorCode2389,
  type StatusMessage as Status2389,
} from './protocol2389/wire.js';
