/**
 * @module hub/client
 * Asking a hub who is there, for tools (`parley services`, `parley start` looking for the broker):
 * one connection, one `Members` frame, one answer, closed.
 */
import { ParleyError } from '../errors.ts';
import { FrameReader, FrameType, FrameWriter, parseHubUrl } from '../transport/tcp/frames.ts';
import { connect, type ParleyTlsOptions } from '../transport/tcp/sockets.ts';
import { DEFAULT_MAX_PAYLOAD } from '../transport/transport.ts';
import type { HubSnapshot } from './hub.ts';

export async function queryHub(
  url: string,
  options: { token?: string; timeout?: number; tls?: ParleyTlsOptions } = {},
): Promise<HubSnapshot> {
  const target = parseHubUrl(url);
  const timeout = options.timeout ?? 3000;
  return new Promise<HubSnapshot>((resolve, reject) => {
    const { socket, ready } = connect(target, options.tls);
    const fail = (error: ParleyError) => {
      socket.destroy();
      reject(error);
    };
    const timer = setTimeout(
      () => fail(new ParleyError('UNAVAILABLE', `hub ${url} did not answer within ${timeout} ms`)),
      timeout,
    );
    const reader = new FrameReader(
      DEFAULT_MAX_PAYLOAD,
      (frame) => {
        if (frame.type !== FrameType.Members || frame.id !== 1) return;
        clearTimeout(timer);
        socket.end();
        try {
          resolve(JSON.parse(frame.payload.toString('utf8')) as HubSnapshot);
        } catch (error) {
          reject(new ParleyError('INTERNAL', `hub ${url} answered garbage`, { cause: error }));
        }
      },
      (reason) => fail(new ParleyError('INTERNAL', `hub ${url}: ${reason}`)),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', (error) => {
      clearTimeout(timer);
      fail(new ParleyError('UNAVAILABLE', `hub ${url} is not reachable`, { cause: error }));
    });
    socket.on('close', () => {
      clearTimeout(timer);
      reject(new ParleyError('UNAVAILABLE', `hub ${url} closed the connection (wrong token?)`));
    });
    socket.on(ready, () => {
      new FrameWriter(socket).send(FrameType.Members, 1, Buffer.from(options.token ?? '', 'utf8'));
    });
  });
}
