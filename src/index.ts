/**
 * @module parley
 * The public API. Everything a user imports comes from here, by name; internals are not exported.
 */

export { z } from 'zod';
export {
  type BackoffOptions,
  type Broker,
  type BrokerHistory,
  type BrokerPublishOptions,
  type Consumer,
  type ConsumerHandler,
  type ConsumerSpec,
  comparePositions,
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterStore,
  type Delivery,
  type HistoryEntry,
  type HistoryPage,
  type HistoryReadOptions,
  isPosition,
  type PublishReceipt,
  queueTopic,
  send,
} from './broker/broker.ts';
export {
  createEmbeddedBroker,
  type EmbeddedBroker,
  type EmbeddedBrokerOptions,
} from './broker/embedded/embedded-broker.ts';
export type { Durability } from './broker/embedded/store.ts';
export { type BrokerFactory, type BrokerFactoryOptions, BrokerRegistry } from './broker/from-url.ts';
export { createInbox, type Inbox, type InboxMessage, type InboxOptions } from './broker/inbox.ts';
export { createOutbox, type Outbox, type OutboxOptions, type RejectedRow } from './broker/outbox.ts';
export { type Dev, type DevOptions, type DevProcess, runDev } from './cli/dev.ts';
export {
  defineServiceModule,
  type ServiceModule,
  type ServiceModuleContext,
  type ServiceModuleParts,
} from './cli/service-module.ts';
export { type RunningServices, type StartOptions, startServices } from './cli/start.ts';
export type { Codec } from './codec/codec.ts';
export { createJsonCodec } from './codec/json.ts';
export { createMsgpackCodec } from './codec/msgpack.ts';
export type {
  AccessRule,
  ActionDef,
  ActionName,
  AnyContract,
  CallInputOf,
  CallResultOf,
  Contract,
  ErrorDecls,
  EventDef,
  EventName,
  InputOf,
  OutputOf,
  ParsedInputOf,
  PayloadOf,
  Schema,
  StreamOf,
} from './contract/contract.ts';
export { defineContract } from './contract/contract.ts';
export { type ContractJsonSchema, contractJsonSchema } from './contract/json-schema.ts';
export type { FieldViolation } from './contract/validate.ts';
export type { Envelope } from './envelope/envelope.ts';
export { assertEnvelope, createEnvelope, fromHeaders, toHeaders } from './envelope/envelope.ts';
export { uuidv7, uuidv7Time } from './envelope/ids.ts';
export {
  codeOf,
  ERROR_CODES,
  type ErrorCode,
  errorCodes,
  grpcStatusOf,
  httpStatusOf,
  isErrorCode,
  ParleyError,
  type ParleyErrorOptions,
  type WireError,
} from './errors.ts';
export {
  type Authenticator,
  type AuthenticatorOptions,
  createAuthenticator,
  hashApiKey,
  type JwtVerifierOptions,
  type KeySource,
} from './gateway/auth/index.ts';
export { createGateway, type Gateway } from './gateway/gateway.ts';
export { instrumentPush } from './gateway/metrics.ts';
export type {
  GatewayOptions,
  GatewayRequest,
  GatewayRoute,
  RateLimitDecision,
} from './gateway/options.ts';
export {
  type GatewayAuthOptions,
  type GatewayRateLimitOptions,
  gatewayAuth,
  gatewayRateLimit,
} from './gateway/policies.ts';
export type { Problem } from './gateway/problem.ts';
export {
  createPush,
  type Push,
  type PushOptions,
  type PushSource,
  pushSource,
  registerStorefront,
  type Viewer,
} from './gateway/push/index.ts';
export {
  createMemoryStore,
  createRateLimiter,
  createRedisStore,
  type RateLimiter,
  type RateLimiterOptions,
  type RateLimitStore,
} from './gateway/rate-limit/index.ts';
export { UploadChunk } from './gateway/upload.ts';
export { queryHub } from './hub/client.ts';
export { createHub, type Hub, type HubMember, type HubOptions, type HubSnapshot } from './hub/hub.ts';
export { createRemoteBroker, type RemoteBrokerOptions } from './hub/remote-broker.ts';
export {
  DEFAULT_BUCKETS,
  type MetricsMiddleware,
  type MetricsOptions,
  metrics,
} from './observe/metrics.ts';
export { type MetricsServer, type MetricsServerOptions, serveMetrics } from './observe/metrics-server.ts';
export { type TracingOptions, tracing } from './observe/tracing.ts';
export { backoffDelay } from './resilience/backoff.ts';
export {
  type BreakerChange,
  type BreakerOptions,
  type BreakerState,
  type BreakersMiddleware,
  CircuitBreaker,
  circuitBreakers,
  countsAsFailure,
  type Permit,
} from './resilience/breaker.ts';
export { Bulkhead, type BulkheadLimits, type BulkheadOptions, bulkheads } from './resilience/bulkhead.ts';
export { type Fallback, fallback } from './resilience/fallback.ts';
export { type HedgeOptions, hedge } from './resilience/hedge.ts';
export { type ResilienceOptions, resilience } from './resilience/policies.ts';
export { type RateLimit, rateLimit, TokenBucket } from './resilience/rate-limit.ts';
export {
  RetryBudget,
  type RetryBudgetOptions,
  type RetryOptions,
  type RetryPolicy,
  retry,
  retryableError,
} from './resilience/retry.ts';
export { type Balancer, type BalancerOptions, createBalancer } from './runtime/balancer.ts';
export type { Client } from './runtime/client.ts';
export {
  type Clock,
  createFakeClock,
  type FakeClock,
  systemClock,
  type TimerHandle,
} from './runtime/clock.ts';
export type { ActionContext, Caller, CallOptions, Context, PublishOptions } from './runtime/context.ts';
export { createNode, type NodeOptions, type NodeState, type ParleyNode } from './runtime/node.ts';
export type {
  AttemptGate,
  AttemptPermit,
  EventCall,
  EventCallHandler,
  EventMiddleware,
  InboundCall,
  InboundHandler,
  InboundMiddleware,
  Middleware,
  OutboundCall,
  OutboundHandler,
  OutboundMiddleware,
  PublishCall,
  PublishHandler,
  PublishMiddleware,
} from './runtime/pipeline.ts';
export type { Principal } from './runtime/principal.ts';
export type { Endpoint, Registry, RegistryChange } from './runtime/registry.ts';
export {
  type ActionHandler,
  type ActionHandlers,
  type EventHandler,
  implement,
  type Service,
  type SubscribeOptions,
  type Subscription,
  subscribe,
} from './runtime/service.ts';
export type { FaultOptions } from './transport/faults.ts';
export {
  type TransportFactory,
  type TransportFactoryOptions,
  TransportRegistry,
} from './transport/from-url.ts';
export {
  createMemoryNetwork,
  type DeliveryRecord,
  type MemoryNetwork,
  type MemoryNetworkOptions,
} from './transport/memory.ts';
export { type ParleyTlsOptions, tlsFromEnv } from './transport/tcp/sockets.ts';
export {
  createTcpTransport,
  type TcpTransport,
  type TcpTransportOptions,
} from './transport/tcp/tcp-transport.ts';
export {
  DEFAULT_MAX_PAYLOAD,
  type NodeInfo,
  type RequestOptions,
  type ServiceInfo,
  type Transport,
  type TransportHandler,
} from './transport/transport.ts';
