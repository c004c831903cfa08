/**
 * @module transport/tcp/sockets
 * Plain TCP or TLS, chosen once by options: the hub, the nodes' call ports and every client of
 * them go through these two functions, so TLS covers all of Parley's native traffic.
 */
import { readFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';

/** TLS for the hub and the TCP transport. The same object serves as server and as client. */
export interface ParleyTlsOptions {
  /** This side's certificate and key (PEM): a server needs them; a client with them can be verified. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Who to trust (PEM); default: the system's roots. */
  ca?: string | Buffer | (string | Buffer)[];
  /** Servers demand a certificate from clients, signed by `ca` (mutual TLS). Default false. */
  requireClientCert?: boolean;
}

export function listen(tls: ParleyTlsOptions | undefined, onSocket: (socket: Socket) => void): Server {
  if (tls === undefined) return createServer(onSocket);
  return createTlsServer(
    {
      ...(tls.cert === undefined ? {} : { cert: tls.cert }),
      ...(tls.key === undefined ? {} : { key: tls.key }),
      ...(tls.ca === undefined ? {} : { ca: tls.ca }),
      requestCert: tls.requireClientCert === true,
      rejectUnauthorized: tls.requireClientCert === true,
    },
    onSocket,
  );
}

/** How long a client of the hub waits for its welcome once it has connected, ms. */
export const WELCOME_MS = 10_000;

/**
 * Connects; `ready` is the event after which the connection is usable (`connect`, or
 * `secureConnect` for TLS). Writes made before it are queued by the socket. With `welcome` (a
 * client of the hub, which answers its hello), unless `welcomed()` is called within `welcome.ms`
 * ({@link WELCOME_MS}), the socket is closed with a log line: a server that accepts and says
 * nothing (a load balancer whose backend is down) held a start, or a reconnect, for ever.
 */
export function connect(
  target: { host: string; port: number },
  tls: ParleyTlsOptions | undefined,
  welcome?: { log: (message: string) => void; ms?: number | undefined },
): { socket: Socket; ready: 'connect' | 'secureConnect'; welcomed: () => void } {
  const socket = open(target, tls);
  const ready = tls === undefined ? 'connect' : 'secureConnect';
  if (welcome === undefined) return { socket, ready, welcomed: () => undefined };
  const ms = welcome.ms ?? WELCOME_MS;
  const timer = setTimeout(() => {
    welcome.log(`${target.host}:${target.port} sent no welcome within ${ms} ms: closing the connection`);
    socket.destroy();
  }, ms);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  return { socket, ready, welcomed: () => clearTimeout(timer) };
}

function open(target: { host: string; port: number }, tls: ParleyTlsOptions | undefined): Socket {
  if (tls === undefined) return createConnection(target);
  return tlsConnect({
    host: target.host,
    port: target.port,
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert }),
    ...(tls.key === undefined ? {} : { key: tls.key }),
    // Certificates name the host; an IP address is checked against the certificate's IP entries.
    ...(/^[\d.]+$|:/.test(target.host) ? {} : { servername: target.host }),
  });
}

/**
 * TLS from the environment, as the `parley` command reads it: `PARLEY_TLS_CA`, `PARLEY_TLS_CERT`,
 * `PARLEY_TLS_KEY` name PEM files; `PARLEY_TLS_MUTUAL=1` asks for client certificates.
 */
export function tlsFromEnv(env: Readonly<Record<string, string | undefined>>): ParleyTlsOptions | undefined {
  const { PARLEY_TLS_CA: ca, PARLEY_TLS_CERT: cert, PARLEY_TLS_KEY: key } = env;
  if (ca === undefined && cert === undefined && key === undefined) return undefined;
  return {
    ...(ca === undefined ? {} : { ca: readFileSync(ca) }),
    ...(cert === undefined ? {} : { cert: readFileSync(cert) }),
    ...(key === undefined ? {} : { key: readFileSync(key) }),
    requireClientCert: env.PARLEY_TLS_MUTUAL === '1',
  };
}
