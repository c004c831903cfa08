/**
 * @module gateway/push/storefront
 * Serves the shop's storefront page: exactly three files, from a fixed map read once at
 * registration. No part of a request URL ever reaches the filesystem, so there is no path to
 * traverse.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';

const FILES = [
  { route: '/', file: 'index.html', type: 'text/html; charset=utf-8' },
  { route: '/app.js', file: 'app.js', type: 'text/javascript; charset=utf-8' },
  { route: '/style.css', file: 'style.css', type: 'text/css; charset=utf-8' },
] as const;

/** The page talks only to its own origin; no inline script, no external asset. */
const CSP =
  "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

export function registerStorefront(fastify: FastifyInstance, options: { root: string }): void {
  for (const { route, file, type } of FILES) {
    const body = readFileSync(join(options.root, file));
    fastify.get(route, (_request, reply) =>
      reply
        .type(type)
        .header('cache-control', 'no-cache')
        .header('x-content-type-options', 'nosniff')
        .header('content-security-policy', CSP)
        .send(body),
    );
  }
}
