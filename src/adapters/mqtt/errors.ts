/**
 * @module adapters/mqtt/errors
 * mqtt.js errors as Parley codes, in one place. MQTT 5 failures carry a reason code (CONNACK,
 * PUBACK, SUBACK, DISCONNECT); mqtt.js puts it on `code` (a number), or, for a refused
 * subscription, on the SUBACK packet it attaches. Socket errors carry a Node string code; the rest
 * are plain messages. The driver is not loaded to map an error.
 */
import { type ErrorCode, ParleyError } from '../../errors.ts';

/** MQTT 5 reason codes (0x80 and up are failures), and the MQTT 3.1.1 CONNACK return codes. */
const BY_REASON: Record<number, ErrorCode> = {
  1: 'FAILED_PRECONDITION', // 3.1.1: unacceptable protocol version
  2: 'INVALID_ARGUMENT', // 3.1.1: identifier rejected
  3: 'UNAVAILABLE', // 3.1.1: server unavailable
  4: 'UNAUTHENTICATED', // 3.1.1: bad user name or password
  5: 'PERMISSION_DENIED', // 3.1.1: not authorized
  128: 'UNKNOWN', // unspecified error
  129: 'INTERNAL', // malformed packet
  130: 'INTERNAL', // protocol error
  131: 'UNKNOWN', // implementation specific error
  132: 'FAILED_PRECONDITION', // unsupported protocol version
  133: 'INVALID_ARGUMENT', // client identifier not valid
  134: 'UNAUTHENTICATED', // bad user name or password
  135: 'PERMISSION_DENIED', // not authorized
  136: 'UNAVAILABLE', // server unavailable
  137: 'UNAVAILABLE', // server busy
  138: 'PERMISSION_DENIED', // banned
  139: 'UNAVAILABLE', // server shutting down
  140: 'UNAUTHENTICATED', // bad authentication method
  141: 'UNAVAILABLE', // keep alive timeout
  142: 'UNAVAILABLE', // session taken over
  143: 'INVALID_ARGUMENT', // topic filter invalid
  144: 'INVALID_ARGUMENT', // topic name invalid
  145: 'INTERNAL', // packet identifier in use
  146: 'INTERNAL', // packet identifier not found
  147: 'RESOURCE_EXHAUSTED', // receive maximum exceeded
  148: 'INTERNAL', // topic alias invalid
  149: 'RESOURCE_EXHAUSTED', // packet too large
  150: 'RESOURCE_EXHAUSTED', // message rate too high
  151: 'RESOURCE_EXHAUSTED', // quota exceeded
  152: 'UNAVAILABLE', // administrative action
  153: 'INVALID_ARGUMENT', // payload format invalid
  154: 'FAILED_PRECONDITION', // retain not supported
  155: 'FAILED_PRECONDITION', // QoS not supported
  156: 'UNAVAILABLE', // use another server
  157: 'UNAVAILABLE', // server moved
  158: 'FAILED_PRECONDITION', // shared subscriptions not supported
  159: 'RESOURCE_EXHAUSTED', // connection rate exceeded
  160: 'UNAVAILABLE', // maximum connect time
  161: 'FAILED_PRECONDITION', // subscription identifiers not supported
  162: 'FAILED_PRECONDITION', // wildcard subscriptions not supported
};

/**
 * PUBACK reason code 16 is a success, not an error: the server took the message but no
 * subscription matched, so nobody gets it. mqtt.js resolves such a publish; the broker reads the
 * code where dropping would lose something (a dead-letter replay).
 */
export const NO_MATCHING_SUBSCRIBERS = 16;

/** Errors mqtt.js raises with a message only. */
const BY_MESSAGE: [RegExp, ErrorCode][] = [
  [/^Invalid topic/i, 'INVALID_ARGUMENT'],
  [/^Message removed/i, 'CANCELLED'],
  [/Authentication Method/i, 'UNAUTHENTICATED'],
  [/Topic Alias|^Protocol error|unrecognized packet/i, 'INTERNAL'],
  [/connack timeout|Keepalive timeout|Connection closed|client disconnecting|No connection/i, 'UNAVAILABLE'],
];

function reasonCodeOf(error: { code?: unknown; packet?: { granted?: unknown } }): number | undefined {
  if (typeof error.code === 'number') return error.code;
  // ErrorWithSubackPacket: the refused subscription's reason code is in the SUBACK.
  const granted = error.packet?.granted;
  if (Array.isArray(granted)) {
    const refused = granted.find((g): g is number => typeof g === 'number' && g >= 0x80);
    if (refused !== undefined) return refused;
  }
  return undefined;
}

/** An mqtt.js error (or anything thrown near it) as a ParleyError; ParleyErrors pass unchanged. */
export function mqttError(error: unknown, doing: string): ParleyError {
  if (error instanceof ParleyError) return error;
  const e = (typeof error === 'object' && error !== null ? error : {}) as {
    name?: string;
    message?: string;
    code?: unknown;
    packet?: { granted?: unknown };
  };
  const message = e.message ?? String(error);
  const reasonCode = reasonCodeOf(e);
  let code: ErrorCode | undefined = reasonCode === undefined ? undefined : BY_REASON[reasonCode];
  if (code === undefined && typeof e.code === 'string') {
    // Node socket and TLS errors: a certificate problem is configuration, the rest is the network.
    code = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(e.code) ? 'FAILED_PRECONDITION' : 'UNAVAILABLE';
  }
  if (code === undefined) code = BY_MESSAGE.find(([pattern]) => pattern.test(message))?.[1];
  const details: Record<string, unknown> = { driver: 'mqtt', name: e.name };
  if (reasonCode !== undefined) details.reasonCode = reasonCode;
  else if (typeof e.code === 'string') details.errno = e.code;
  return new ParleyError(code ?? 'UNAVAILABLE', `MQTT: ${doing}: ${message}`, { cause: error, details });
}
