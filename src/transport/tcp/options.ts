/**
 * @module transport/tcp/options
 * What the TCP transport can be told (`createTcpTransport`).
 */
import type { ParleyTlsOptions } from './sockets.ts';

export interface TcpTransportOptions {
  /** The hub, `parley://host:port`. */
  hub: string;
  /** Address this node listens on for calls. Default 127.0.0.1, any free port. */
  host?: string;
  port?: number;
  maxPayload?: number;
  /** Heartbeat to the hub, ms. Default 2 000 (the hub drops a node silent for 10 s). */
  heartbeatInterval?: number;
  /** Shared token of the hub, presented to it and to peers. */
  token?: string;
  /** Requests pending to one peer before new ones are refused. Default 10 000. */
  maxInFlight?: number;
  /** Requests from one peer handled at once before the node stops reading its connection. Default 1 024. */
  maxConcurrent?: number;
  /**
   * Reconnect delays to the hub: exponential with full jitter, ms (default 100 up to 5 000); and
   * how long a connection to the hub waits for its welcome before it is closed (default 10 000).
   */
  reconnect?: { initial?: number; max?: number; welcome?: number };
  /** Where refused connections and hub trouble are reported. Default: stderr. */
  log?: (message: string) => void;
  /**
   * TLS to the hub, to peers and on this node's call port: `ca` to trust the others, `cert` and
   * `key` to serve calls (and, with `requireClientCert`, to be let in).
   */
  tls?: ParleyTlsOptions;
}
