/**
 * `/openapi.json` is a valid OpenAPI 3.1 document (checked by an independent validator, refs
 * resolved) describing exactly the public routes; `/docs` is a self-contained page reading it.
 * Routes take what the document says they take (registered schemas too) and answer what it says
 * they answer.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { pino } from 'pino';
import { createGateway, defineContract, implement, z } from '../src/index.ts';
import { startGateway } from './gateway-fixture.ts';
import { testNode } from './helpers.ts';

type Doc = {
  openapi: string;
  paths: Record<string, Record<string, Record<string, unknown>>>;
  components: { schemas: Record<string, unknown>; securitySchemes?: Record<string, unknown> };
  security?: unknown[];
};

async function assertValid(doc: unknown): Promise<void> {
  const validator = new Validator();
  // A copy: resolveRefs dereferences the document it was given in place.
  const result = await validator.validate(structuredClone(doc) as Parameters<Validator['validate']>[0]);
  assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
  assert.equal(validator.version, '3.1');
  // Every $ref resolves.
  assert.doesNotThrow(() => validator.resolveRefs());
}

describe('gateway OpenAPI and docs', async () => {
  const { url } = await startGateway({
    async authenticate() {
      return undefined;
    },
  });

  it('serves a valid OpenAPI 3.1 document of the public routes', async () => {
    const r = await fetch(`${url}/openapi.json`);
    assert.equal(r.status, 200);
    const doc = (await r.json()) as Doc;
    await assertValid(doc);
    assert.equal(doc.openapi, '3.1.0');
    assert.deepEqual(Object.keys(doc.paths).sort(), [
      '/api/count',
      '/api/items',
      '/api/items/fail',
      '/api/items/slow',
      '/api/items/whoami',
      '/api/items/{id}',
      '/api/uploads',
    ]);
    assert.ok(!JSON.stringify(doc.paths).includes('secret'), 'private actions are not described');
    const get = doc.paths['/api/items/{id}']?.get as {
      operationId: string;
      parameters: { name: string; in: string; required: boolean }[];
      responses: Record<string, { content?: Record<string, unknown> }>;
    };
    assert.equal(get.operationId, 'items.get');
    assert.deepEqual(
      get.parameters.map((p) => [p.name, p.in, p.required]),
      [['id', 'path', true]],
    );
    assert.ok(get.responses['404']?.content?.['application/problem+json'], 'declared NOT_FOUND documented');
    const search = doc.paths['/api/items']?.get as { parameters: { name: string; in: string }[] };
    assert.deepEqual(search.parameters.map((p) => p.name).sort(), ['active', 'limit', 'q', 'sizes', 'tags']);
    const post = doc.paths['/api/items']?.post as { requestBody: { content: Record<string, unknown> } };
    assert.ok(post.requestBody.content['application/json']);
    const upload = doc.paths['/api/uploads']?.post as { requestBody: { content: Record<string, unknown> } };
    assert.ok(upload.requestBody.content['multipart/form-data']);
    const count = doc.paths['/api/count']?.get as {
      responses: { '200': { content: Record<string, unknown> } };
    };
    assert.ok(count.responses['200'].content['application/x-ndjson']);
    assert.ok(doc.components.schemas.Problem);
    assert.deepEqual(doc.components.securitySchemes, { bearer: { type: 'http', scheme: 'bearer' } });
    assert.deepEqual(doc.security, [{ bearer: [] }, {}]);
  });

  it('hoists recursive schemas ($defs and self references) into components', async () => {
    interface Tree {
      name: string;
      children: Tree[];
    }
    const Tree: z.ZodType<Tree> = z.object({
      name: z.string(),
      get children() {
        return z.array(Tree);
      },
    });
    const trees = defineContract({
      name: 'trees',
      version: '1.0.0',
      actions: {
        plant: { input: z.object({ tree: Tree }), output: Tree, public: true },
        echo: { input: Tree, output: z.object({ root: Tree, other: Tree.optional() }), public: true },
      },
    });
    const node = testNode({
      services: [implement(trees, { actions: { plant: ({ tree }) => tree, echo: (t) => ({ root: t }) } })],
    });
    await node.start();
    const gateway = createGateway({ node, contracts: [trees] });
    after(async () => {
      await gateway.close();
      await node.stop();
    });
    const { url: treesUrl } = await gateway.listen();
    const doc = (await (await fetch(`${treesUrl}/openapi.json`)).json()) as Doc;
    await assertValid(doc);
    const text = JSON.stringify(doc);
    assert.ok(!text.includes('"#/$defs'), 'no schema-relative $defs refs left');
    assert.ok(!text.includes('"$ref":"#"'), 'no root self-refs left');
    assert.equal(doc.security, undefined, 'no security without authentication');
  });

  it('names components from Zod ids a component name cannot hold, one name each, their $refs rewritten', async () => {
    const Spaced = z.object({ street: z.string() }).meta({ id: 'Postal Address' });
    const Underscored = z.object({ zip: z.string() }).meta({ id: 'Postal_Address' });
    const Slashed = z.object({ x: z.number() }).meta({ id: 'a/b~c%d' });
    const Color = z.enum(['red', 'blue']).meta({ id: 'Color' });
    const Tags = z.array(z.string()).meta({ id: 'Tag List' });
    const shop = defineContract({
      name: 'shop',
      version: '1.0.0',
      actions: {
        ship: {
          input: z.object({ from: Spaced, to: Underscored, odd: Slashed }),
          output: z.object({ ok: z.boolean() }),
          public: true,
        },
        list: {
          input: z.object({ color: Color.optional(), tags: Tags.optional() }),
          output: z.object({ n: z.number() }),
          public: true,
          http: 'GET /list',
        },
      },
    });
    const node = testNode({
      services: [implement(shop, { actions: { ship: () => ({ ok: true }), list: () => ({ n: 1 }) } })],
    });
    await node.start();
    const gateway = createGateway({ node, contracts: [shop] });
    after(async () => {
      await gateway.close();
      await node.stop();
    });
    const doc = (await gateway.fastify.inject({ url: '/openapi.json' })).json() as Doc;
    await assertValid(doc);
    const names = Object.keys(doc.components.schemas).filter((n) => n.startsWith('shop.ship.input.'));
    assert.deepEqual(names.sort(), [
      'shop.ship.input.Postal_Address',
      'shop.ship.input.Postal_Address_2',
      'shop.ship.input.a_b_c_d',
    ]);
    const input = doc.components.schemas['shop.ship.input'] as {
      properties: Record<string, { $ref: string }>;
    };
    const target = (property: string) =>
      doc.components.schemas[input.properties[property]?.$ref.replace('#/components/schemas/', '') ?? ''];
    assert.deepEqual(Object.keys((target('from') as { properties: object }).properties), ['street']);
    assert.deepEqual(Object.keys((target('to') as { properties: object }).properties), ['zip']);
    assert.deepEqual(Object.keys((target('odd') as { properties: object }).properties), ['x']);
    const list = doc.paths['/api/list']?.get as { parameters: Record<string, unknown>[] };
    assert.deepEqual(list.parameters, [
      {
        name: 'color',
        in: 'query',
        required: false,
        schema: { $ref: '#/components/schemas/shop.list.input.Color' },
      },
      {
        name: 'tags',
        in: 'query',
        required: false,
        schema: { $ref: '#/components/schemas/shop.list.input.Tag_List' },
        style: 'form',
        explode: true,
      },
    ]);
  });

  it('documents the Idempotency-Key header as sent: a quoted key of escaped characters fits', async () => {
    const r = await fetch(`${url}/openapi.json`);
    const doc = (await r.json()) as Doc;
    const post = doc.paths['/api/items']?.post as {
      parameters: { name: string; schema: { maxLength: number } }[];
    };
    const param = post.parameters.find((p) => p.name === 'Idempotency-Key');
    // 255 characters once unescaped, each one escaped, in quotes: the longest header accepted.
    const longest = `"${'\\"'.repeat(255)}"`;
    const accepted = await fetch(`${url}/api/items`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': longest },
      body: JSON.stringify({ name: 'x', price: 1 }),
    });
    assert.notEqual(accepted.status, 400, await accepted.text());
    assert.equal(param?.schema.maxLength, longest.length);
  });

  it('serves /docs: self-contained HTML that reads /openapi.json', async () => {
    const r = await fetch(`${url}/docs`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/html/);
    const html = await r.text();
    assert.match(html, /fetch\('\/openapi\.json'\)/);
    assert.doesNotMatch(html, /<script[^>]+src=|<link[^>]+href=|https?:\/\//, 'no external assets');
    const csp = r.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'sha256-/);
    assert.match(csp, /connect-src 'self'/);
  });
});

describe('gateway: registered schemas and outputs as documented', async () => {
  const lines: { msg?: string; err?: { message?: string } }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const Color = z.enum(['red', 'blue']).meta({ id: 'Color' });
  const Sizes = z.array(z.number()).meta({ id: 'Sizes' });
  const User = z.object({ id: z.string(), name: z.string() });
  const users = defineContract({
    name: 'users',
    version: '1.0.0',
    actions: {
      get: { input: z.object({ id: z.string() }), output: User, public: true, http: 'GET /users/:id' },
      list: { input: z.object({}), output: User, public: true, stream: 'output', http: 'GET /users' },
      paint: {
        input: z.object({ color: Color, sizes: Sizes.optional() }),
        output: z.object({ color: z.string(), sizes: z.array(z.number()) }),
        public: true,
        http: 'GET /paint/:color',
      },
    },
  });
  // Stored rows: typed as the output, extra columns are legal TypeScript.
  const row = (id: string) => ({ id, name: `user ${id}`, passwordHash: '$2b$10$secret' });
  const node = testNode({
    services: [
      implement(users, {
        actions: {
          get: ({ id }) => (id === 'broken' ? ({ id } as never) : row(id)),
          async *list() {
            yield row('a');
            yield row('b');
            yield { id: 'c' } as never;
          },
          paint: ({ color, sizes }) => ({ color, sizes: sizes ?? [] }),
        },
      }),
    ],
  });
  await node.start();
  const gateway = createGateway({ node, contracts: [users], logger });
  after(async () => {
    await gateway.close();
    await node.stop();
  });
  const get = (url: string) => gateway.fastify.inject({ url });

  it('serves a GET whose path and query properties are registered schemas ($refs)', async () => {
    const ok = await get('/api/paint/red?sizes=1&sizes=2');
    assert.equal(ok.statusCode, 200, ok.body);
    assert.deepEqual(ok.json(), { color: 'red', sizes: [1, 2] });
    const bad = await get('/api/paint/green');
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().errors[0].path, 'color');
  });

  it('sends what the output schema describes: unknown keys stripped, an invalid output a logged 500', async () => {
    const ok = await get('/api/users/u1');
    assert.equal(ok.statusCode, 200);
    assert.deepEqual(ok.json(), { id: 'u1', name: 'user u1' });
    lines.length = 0;
    const broken = await get('/api/users/broken');
    assert.equal(broken.statusCode, 500);
    assert.equal(broken.json().code, 'INTERNAL');
    assert.doesNotMatch(broken.body, /name|invalid output/, 'opaque to the client');
    assert.match(
      lines.find((l) => l.msg === 'request failed')?.err?.message ?? '',
      /users\.get .*invalid output at name/,
    );
  });

  it('parses each chunk of an output stream the same way; an invalid chunk ends it with an INTERNAL line', async () => {
    lines.length = 0;
    const r = await get('/api/users');
    const body = r.body
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(body.slice(0, 2), [
      { id: 'a', name: 'user a' },
      { id: 'b', name: 'user b' },
    ]);
    assert.equal(body[2].error.code, 'INTERNAL');
    assert.equal(body.length, 3);
    assert.match(
      lines.find((l) => l.msg === 'stream failed')?.err?.message ?? '',
      /users\.list .*invalid output at name/,
    );
  });
});
