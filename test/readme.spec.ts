// The TypeScript examples of the README and of the guides in docs/, extracted and run as a user would copy
// them (imports pointed at this checkout); the shapes their comments promise are checked against what they
// print. The README stays a front door (at most 300 lines, linking every guide), and every relative link in
// it, in docs/ and in bench/'s pages leads to a file that exists, and to a heading there when it names one.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { root } from './helpers.js';

const guides = readdirSync(join(root, 'docs'))
  .filter((f) => f.endsWith('.md'))
  .sort()
  .map((f) => `docs/${f}`);
const pages = ['README.md', ...guides, 'bench/README.md', 'bench/HISTORY.md'];
const read = (page: string) => readFileSync(join(root, page), 'utf8');

const blocks = ['README.md', ...guides].flatMap((page) =>
  [...read(page).matchAll(/```ts\n([\s\S]*?)```/g)].map((m, i) => ({ page, n: i + 1, code: m[1] })),
);

test('the README has TypeScript examples', (t) => {
  t.true(blocks.some((b) => b.page === 'README.md'));
});

test("the analysis guide's TypeScript example (exp.analyze, exp.learned) is among those run", (t) => {
  t.true(blocks.some((b) => b.page === 'docs/analysis.md' && b.code.includes('exp.analyze(') && b.code.includes('exp.learned(')));
});

blocks.forEach(({ page, n, code }) => {
  test(`${page} TypeScript example ${n} runs as written`, (t) => {
    // The script sits in the checkout (so tsx and the sources resolve) and works in a fresh folder.
    const work = mkdtempSync(join(tmpdir(), 'mp-readme-'));
    const dir = join(root, 'test', '.readme-run');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${page.replace(/[^A-Za-z0-9]+/g, '-')}-example-${n}-${process.pid}.ts`);
    writeFileSync(file, `process.chdir(${JSON.stringify(work)});\n` + code.replaceAll(`from 'metaplastic'`, `from '../../src/index.js'`));
    const r = spawnSync(process.execPath, ['--import=tsx', file], { cwd: root, encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' }, timeout: 5 * 60_000 });
    t.is(r.status, 0, r.stderr);
    t.notRegex(r.stderr, /Unhandled|UnhandledPromiseRejection/);
    for (const m of code.matchAll(/\/\/ \{ data: Float32Array, shape: \[([\d, ]+)\] \}/g)) {
      const dims = m[1].split(',').map((d) => d.trim());
      t.true(r.stdout.includes(`shape: [ ${dims.join(', ')} ]`), `the comment's shape [${m[1]}] is what the example prints:\n${r.stdout.slice(-400)}`);
    }
  });
});

test('the README has at most 300 lines', (t) => {
  const text = read('README.md');
  const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
  t.true(lines <= 300, `README.md has ${lines} lines; move detail to docs/`);
});

/** Markdown without its fenced code blocks. */
function unfenced(md: string): string {
  return md.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
}

/** Markdown without code blocks and code spans: what is left holds the links. */
function prose(md: string): string {
  return unfenced(md).replace(/`[^`\n]*`/g, '');
}

/** Inline links and images, and reference definitions. */
function linkTargets(md: string): string[] {
  const text = prose(md);
  const inline = [...text.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]);
  const defined = [...text.matchAll(/^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/gm)].map((m) => m[1]);
  return [...inline, ...defined];
}

/** The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function anchors(md: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const m of unfenced(md).matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = m[1].toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-');
    const k = seen.get(base) ?? 0;
    seen.set(base, k + 1);
    out.add(k === 0 ? base : `${base}-${k}`);
  }
  return out;
}

test('the link checker sees links, skips code, and knows GitHub anchors', (t) => {
  t.deepEqual(linkTargets('[a](docs/x.md) `[b](nope.md)` ![c](img.png "t")\n```\n[d](nope2.md)\n```\n[e]: ../y.md#z\n'), ['docs/x.md', 'img.png', '../y.md#z']);
  t.deepEqual([...anchors('# The full sine protocol: FLP against OML\n## Errors and exit codes\n## Errors and exit codes\n```sh\n# not a heading\n```\n## FLOP model (`bench/flops.mjs`)\n')], [
    'the-full-sine-protocol-flp-against-oml',
    'errors-and-exit-codes',
    'errors-and-exit-codes-1',
    'flop-model-benchflopsmjs',
  ]);
});

test('every relative link in the README, docs/*.md and bench/ leads to a file that exists (and its heading)', (t) => {
  t.true(guides.length >= 1, 'docs/ has guides');
  const broken: string[] = [];
  let checked = 0;
  for (const page of pages) {
    for (const target of linkTargets(read(page))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto: …
      checked++;
      const [path, fragment] = target.split('#', 2) as [string, string | undefined];
      const file = path === '' ? page : normalize(join(dirname(page), decodeURI(path)));
      if (file.startsWith('..') || !existsSync(join(root, file))) {
        broken.push(`${page}: ${target} (no ${file})`);
      } else if (fragment !== undefined && file.endsWith('.md') && !anchors(read(file)).has(fragment)) {
        broken.push(`${page}: ${target} (no heading #${fragment} in ${file})`);
      }
    }
  }
  t.true(checked >= guides.length, `${checked} relative links checked`);
  t.deepEqual(broken, []);
});

test("the README's further reading links every guide in docs/", (t) => {
  const linked = new Set(linkTargets(read('README.md')).map((target) => target.split('#')[0]));
  t.deepEqual(guides.filter((g) => !linked.has(g)), []);
});
