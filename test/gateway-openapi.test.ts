/**
 * `/openapi.json` is a valid OpenAPI 3.1 document (checked by an independent validator, refs
 * resolved) describing exactly the public routes; `/docs` is a self-contained page reading it.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
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
