/**
 * @module gateway/docs-page
 * `/docs`: one self-contained HTML page (no CDN, no external asset: it must work on a closed
 * network) whose script fetches `/openapi.json` and lists each operation with its parameters,
 * body, responses and schemas. Text goes in with `textContent`, never as HTML, and a
 * Content-Security-Policy allows only this page's own script (by hash) and same-origin fetches.
 */
import { createHash } from 'node:crypto';

const SCRIPT = `
(async () => {
  const root = document.getElementById('ops');
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  let doc;
  try {
    const res = await fetch('/openapi.json');
    doc = await res.json();
  } catch (e) {
    root.append(el('p', 'Could not load /openapi.json: ' + e));
    return;
  }
  document.getElementById('title').textContent = doc.info.title + ' ' + doc.info.version;
  const schemas = (doc.components && doc.components.schemas) || {};
  const show = (s) => {
    const ref = s && s.$ref && s.$ref.replace('#/components/schemas/', '');
    return JSON.stringify(ref !== undefined && schemas[ref] ? schemas[ref] : s, null, 2);
  };
  for (const [path, ops] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(ops)) {
      const d = el('details', undefined, 'op');
      const sum = el('summary');
      sum.append(el('span', method.toUpperCase(), 'm ' + method), el('code', path), el('span', ' ' + (op.summary || ''), 's'));
      d.append(sum, el('p', 'operationId: ' + op.operationId));
      for (const p of op.parameters || []) d.append(el('p', p.in + ' parameter ' + p.name + (p.required ? ' (required)' : '') + ': ' + JSON.stringify(p.schema)));
      if (op.requestBody) for (const [type, media] of Object.entries(op.requestBody.content)) { d.append(el('h4', 'Request body, ' + type)); d.append(el('pre', show(media.schema))); }
      for (const [status, r] of Object.entries(op.responses || {})) {
        d.append(el('h4', 'Response ' + status + (r.description ? ': ' + r.description : '')));
        for (const [type, media] of Object.entries(r.content || {})) d.append(el('pre', type + '\\n' + show(media.schema)));
      }
      root.append(d);
    }
  }
})();
`;

const STYLE = `
body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
.op { border: 1px solid #ccc; border-radius: 6px; margin: .5rem 0; padding: .4rem .8rem; }
summary { cursor: pointer; } .m { display: inline-block; min-width: 4.5rem; font-weight: bold; }
.get { color: #06c; } .post { color: #080; } .put, .patch { color: #a60; } .delete { color: #c00; }
pre { background: #f6f6f6; padding: .5rem; overflow: auto; } .s { color: #555; }
`;

/** The page and the CSP that goes with it. */
export function docsPage(): { html: string; csp: string } {
  const hash = createHash('sha256').update(SCRIPT).digest('base64');
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>API documentation</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${STYLE}</style></head>
<body><h1 id="title">API documentation</h1>
<p>Generated from <a href="/openapi.json">/openapi.json</a>. Errors are <code>application/problem+json</code>.</p>
<div id="ops"></div>
<script>${SCRIPT}</script></body></html>`;
  const csp = `default-src 'none'; script-src 'sha256-${hash}'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;
  return { html, csp };
}
