/**
 * README snippets are tests: every ```ts block not marked `no-run` runs as its own program, and
 * when a ```text block follows it, the program must print exactly that.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const tmp = `${root}test/.tmp/readme-${process.pid}`;

interface Snippet {
  line: number;
  code: string;
  expected: string | undefined;
}

function snippets(markdown: string): Snippet[] {
  const out: Snippet[] = [];
  const fence = /^```(\w+)([^\n]*)\n([\s\S]*?)^```$/gm;
  let pending: Snippet | undefined;
  for (let m = fence.exec(markdown); m !== null; m = fence.exec(markdown)) {
    const [, lang, info, body] = m as unknown as [string, string, string, string];
    const line = markdown.slice(0, m.index).split('\n').length;
    if (lang === 'ts' && !info.includes('no-run')) {
      pending = { line, code: body, expected: undefined };
      out.push(pending);
    } else if (lang === 'text' && pending !== undefined && pending.expected === undefined) {
      pending.expected = body;
      pending = undefined;
    } else pending = undefined;
  }
  return out;
}

describe('README', () => {
  mkdirSync(tmp, { recursive: true });
  after(() => rmSync(tmp, { recursive: true, force: true }));
  const found = snippets(readFileSync(`${root}README.md`, 'utf8'));

  it('has runnable snippets', () => {
    assert.ok(found.length >= 1);
  });

  for (const snippet of found) {
    it(`snippet at README.md:${snippet.line} runs${snippet.expected ? ' and prints what the README says' : ''}`, async () => {
      const file = `${tmp}/snippet-${snippet.line}.ts`;
      writeFileSync(file, snippet.code);
      const { stdout } = await run(process.execPath, ['--import', 'tsx', file], {
        cwd: root,
        timeout: 30_000,
        env: { ...process.env, PARLEY_LOG_LEVEL: 'silent' },
      });
      if (snippet.expected !== undefined) assert.equal(stdout, snippet.expected);
    });
  }
});
