/**
 * @module adapters/kafka/errors
 * librdkafka errors → Parley codes, in one place. librdkafka reports numbers: negative ones are
 * the client's own (`RD_KAFKA_RESP_ERR__*`), positive ones the Kafka protocol's. Decisions read
 * the number, never the message.
 */
import { type ErrorCode, ParleyError } from '../../errors.ts';

/** Codes by librdkafka error number (names as in rdkafka.h, without the prefix). */
const CODES: ReadonlyMap<number, ErrorCode> = new Map<number, ErrorCode>([
  [-197, 'UNAVAILABLE'], // _DESTROY: the client is closing
  [-195, 'UNAVAILABLE'], // _TRANSPORT
  [-193, 'UNAVAILABLE'], // _RESOLVE
  [-192, 'DEADLINE_EXCEEDED'], // _MSG_TIMED_OUT: not confirmed in message.timeout.ms; may be stored
  [-190, 'NOT_FOUND'], // _UNKNOWN_PARTITION
  [-188, 'NOT_FOUND'], // _UNKNOWN_TOPIC
  [-187, 'UNAVAILABLE'], // _ALL_BROKERS_DOWN
  [-186, 'INVALID_ARGUMENT'], // _INVALID_ARG (also bad configuration)
  [-185, 'DEADLINE_EXCEEDED'], // _TIMED_OUT
  [-184, 'RESOURCE_EXHAUSTED'], // _QUEUE_FULL: the producer's local queue
  [-172, 'FAILED_PRECONDITION'], // _STATE
  [-169, 'UNAUTHENTICATED'], // _AUTHENTICATION
  [-165, 'UNIMPLEMENTED'], // _UNSUPPORTED_FEATURE
  [-150, 'INTERNAL'], // _FATAL (e.g. an idempotent producer that lost its sequence)
  [-144, 'UNAVAILABLE'], // _ASSIGNMENT_LOST
  [1, 'OUT_OF_RANGE'], // OFFSET_OUT_OF_RANGE
  [3, 'NOT_FOUND'], // UNKNOWN_TOPIC_OR_PART
  [5, 'UNAVAILABLE'], // LEADER_NOT_AVAILABLE
  [6, 'UNAVAILABLE'], // NOT_LEADER_FOR_PARTITION
  [7, 'DEADLINE_EXCEEDED'], // REQUEST_TIMED_OUT
  [10, 'INVALID_ARGUMENT'], // MSG_SIZE_TOO_LARGE
  [14, 'UNAVAILABLE'], // COORDINATOR_LOAD_IN_PROGRESS
  [15, 'UNAVAILABLE'], // COORDINATOR_NOT_AVAILABLE
  [16, 'UNAVAILABLE'], // NOT_COORDINATOR
  [17, 'INVALID_ARGUMENT'], // TOPIC_EXCEPTION (invalid name)
  [19, 'UNAVAILABLE'], // NOT_ENOUGH_REPLICAS
  [22, 'ABORTED'], // ILLEGAL_GENERATION: a rebalance moved on
  [25, 'ABORTED'], // UNKNOWN_MEMBER_ID
  [27, 'ABORTED'], // REBALANCE_IN_PROGRESS
  [29, 'PERMISSION_DENIED'], // TOPIC_AUTHORIZATION_FAILED
  [30, 'PERMISSION_DENIED'], // GROUP_AUTHORIZATION_FAILED
  [31, 'PERMISSION_DENIED'], // CLUSTER_AUTHORIZATION_FAILED
  [35, 'UNIMPLEMENTED'], // UNSUPPORTED_VERSION
  [36, 'ALREADY_EXISTS'], // TOPIC_ALREADY_EXISTS
  [37, 'INVALID_ARGUMENT'], // INVALID_PARTITIONS
  [38, 'INVALID_ARGUMENT'], // INVALID_REPLICATION_FACTOR
  [45, 'ABORTED'], // OUT_OF_ORDER_SEQUENCE_NUMBER
  [47, 'ABORTED'], // INVALID_PRODUCER_EPOCH
  [58, 'UNAUTHENTICATED'], // SASL_AUTHENTICATION_FAILED
]);

/** The Parley code for a librdkafka error number. */
export function codeOfKafka(code: number, retriable?: boolean): ErrorCode {
  return CODES.get(code) ?? (retriable === true ? 'UNAVAILABLE' : 'UNKNOWN');
}

/** Wraps a driver error (or anything thrown by the driver) as a ParleyError; keeps `cause`. */
export function kafkaError(error: unknown, what: string): ParleyError {
  if (error instanceof ParleyError) return error;
  if (typeof error === 'object' && error !== null && typeof (error as { code?: unknown }).code === 'number') {
    const e = error as { code: number; message?: string; isRetriable?: boolean };
    const code = codeOfKafka(e.code, e.isRetriable);
    const options = { cause: error, details: { kafkaCode: e.code } };
    return new ParleyError(
      code,
      `kafka: ${what}: ${e.message ?? `error ${e.code}`}`,
      e.isRetriable === true ? { ...options, retryable: true } : options,
    );
  }
  return ParleyError.from(error, 'UNAVAILABLE');
}
