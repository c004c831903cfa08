/** The shape every RPC system under test has (`systems.ts`, `http-systems.ts`). */

export interface Req {
  a: number;
  b: number;
  note: string;
}

export interface Served {
  port: number;
  close(): Promise<void>;
}

export interface Connected {
  call(req: Req): Promise<unknown>;
  close(): Promise<void>;
}

export interface RpcSystem {
  /** A broker the system needs, checked before it runs. */
  needs?: 'nats' | 'redis' | 'rabbitmq' | 'mqtt';
  serve(): Promise<Served>;
  connect(port: number): Promise<Connected>;
}
