/**
 * @module adapters/mqtt/connect
 * One MQTT 5 connection from an `mqtt://host:port` URL (`mqtts://`, `ws://`, `wss://` too; user
 * and password in the URL, percent-encoded), with reconnects that never give up. Loaded only when
 * an `mqtt:` URL is used.
 *
 * Sessions are clean (`clean: true`, MQTT 5 clean start): the broker keeps nothing for a node
 * that is away, and after a reconnect mqtt.js subscribes again to every live subscription on its
 * own (`resubscribe`, on by default with a reconnect period). Publishes made while the connection
 * is down (QoS 0 ones too: mqtt.js's `queueQoSZero` is on by default) wait in the client's memory
 * and go out once it is back.
 *
 * The first connection must succeed: a broker that cannot be reached at start is an error
 * (UNAVAILABLE), not an endless wait.
 */
import { randomBytes } from 'node:crypto';
import { ParleyError } from '../../errors.ts';
import { loadDriver } from '../driver.ts';
import { mqttError } from './errors.ts';

export type MqttModule = typeof import('mqtt');
export type MqttClient = import('mqtt').MqttClient;
type ClientOptions = import('mqtt').IClientOptions;
type Connack = import('mqtt').IConnackPacket;

/** How long the first connection may take, TCP and CONNACK together. */
const FIRST_CONNECT_MS = 10_000;

export interface MqttConnection {
  client: MqttClient;
  /** The broker's CONNACK: its properties say what it accepts (maximumPacketSize, ...). */
  connack: Connack;
}

/** What the broker's consumers change: a persistent session, a Receive Maximum, their own acks. */
export interface ConnectOverrides {
  /** Merged over the defaults above (`clean`, `clientId`, `properties`, ...). */
  options?: Partial<ClientOptions>;
  /**
   * Called with the client as soon as it exists, before any packet can arrive: a resumed session
   * sends its messages right after the CONNACK, so a custom `handleMessage` must be in place by then.
   */
  onClient?: (client: MqttClient) => void;
}

const noLog = (): void => {};

export async function connectMqtt(
  url: string,
  log: (message: string) => void,
  overrides: ConnectOverrides = {},
): Promise<MqttConnection> {
  const mqtt = await loadDriver<MqttModule>('mqtt', 'mqtt:');
  let u: URL;
  try {
    u = new URL(url);
  } catch (error) {
    throw new ParleyError('INVALID_ARGUMENT', `not an MQTT URL: ${url}`, { cause: error });
  }
  const where = u.host;
  const options: ClientOptions = {
    protocolVersion: 5,
    clean: true,
    clientId: `parley_${randomBytes(6).toString('hex')}`,
    reconnectPeriod: 250,
    connectTimeout: 5000,
    keepalive: 10,
    resubscribe: true,
    // mqtt.js logs every packet through `debug` (a hundred call sites, each building its argument
    // list even when nothing prints): a few percent of a busy consumer. Its log stays on where the
    // process asks for debug output at all (`DEBUG=mqttjs*`).
    ...(process.env.DEBUG === undefined ? { log: noLog } : {}),
    ...overrides.options,
  };
  if (u.username !== '') {
    options.username = decodeURIComponent(u.username);
    options.password = decodeURIComponent(u.password);
  }
  // Credentials go as options, decoded; the URL handed on carries none (mqtt.js would not decode them).
  const bare = `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}${u.search}`;
  let client: MqttClient;
  try {
    client = mqtt.connect(bare, options);
    // mqtt.js opens its TCP socket with Nagle's algorithm on: a small packet written while an
    // earlier one is unacknowledged (a PUBLISH right after the PUBACK of the message that caused
    // it) then waits for the broker's delayed ACK, 40 ms on Linux. Every connection, the first
    // and each reconnect, gets a new socket: set on each CONNACK.
    client.on('connect', () => noDelay(client));
    overrides.onClient?.(client);
  } catch (error) {
    throw new ParleyError('INVALID_ARGUMENT', `MQTT: ${where}: ${(error as Error).message}`, {
      cause: error,
    });
  }

  const connack = await new Promise<Connack>((resolve, reject) => {
    const timer = setTimeout(
      () =>
        fail(
          new ParleyError('UNAVAILABLE', `MQTT: connecting to ${where}: no answer in ${FIRST_CONNECT_MS} ms`),
        ),
      FIRST_CONNECT_MS,
    );
    const onConnect = (packet: Connack) => {
      done();
      resolve(packet);
    };
    const onError = (error: Error) => fail(mqttError(error, `connecting to ${where}`));
    const done = () => {
      clearTimeout(timer);
      client.off('connect', onConnect);
      client.off('error', onError);
    };
    const fail = (error: ParleyError) => {
      done();
      client.end(true);
      reject(error);
    };
    client.on('connect', onConnect);
    client.on('error', onError);
  });

  // From here on the connection heals itself; say what happens, once per outage rather than on
  // every attempt.
  let lastError = '';
  client.on('error', (error) => {
    const message = mqttError(error, where).message;
    if (message !== lastError) log(message);
    lastError = message;
  });
  client.on('offline', () => log(`MQTT: lost the connection to ${where}; reconnecting`));
  client.on('connect', () => {
    lastError = '';
    log(`MQTT: reconnected to ${where}`);
  });
  client.on('disconnect', (packet) => {
    log(`MQTT: ${where} disconnected us (reason code ${packet.reasonCode ?? 0})`);
  });
  return { client, connack };
}

/**
 * Ends `client` within `ms`: a DISCONNECT once the server acknowledged what is in flight, or, past
 * `ms` (or at once when the connection is down), the socket dropped. mqtt.js's own `end(false)`
 * waits for those acknowledgements without limit, and a later `end(true)` does nothing once an end
 * began: until 2026-12-03 the broker and its consumers raced it against an unref'd timer, so with
 * a publish in flight on a lost connection `close()` never resolved in a process with nothing else
 * to wait for (it exited with code 13 instead), publishes left waiting, and on a connection up
 * but not answering the socket was left to mqtt.js's keepalive to close.
 */
export function endMqtt(client: MqttClient, ms: number, log: (message: string) => void): Promise<void> {
  if (!client.connected) {
    client.end(true);
    return Promise.resolve();
  }
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      log(`MQTT: the broker did not acknowledge within ${ms} ms; dropping the connection`);
      client.stream.destroy();
      resolve();
    }, ms);
    client.end(false, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Turns Nagle's algorithm off on the client's socket (TCP and TLS; a WebSocket stream has no such switch). */
function noDelay(client: MqttClient): void {
  const stream = client.stream as { setNoDelay?: (on: boolean) => unknown } | undefined;
  stream?.setNoDelay?.(true);
}
