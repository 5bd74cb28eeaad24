// The README's TypeScript examples, extracted and run as a user would copy them (imports pointed at
// this checkout); the shapes their comments promise are checked against what they print.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './helpers.js';

const blocks = [...readFileSync(join(root, 'README.md'), 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);

test('the README has TypeScript examples', (t) => {
  t.true(blocks.length >= 1);
});

blocks.forEach((code, i) => {
  test(`README TypeScript example ${i + 1} runs as written`, (t) => {
    // The script sits in the checkout (so tsx and the sources resolve) and works in a fresh folder.
    const work = mkdtempSync(join(tmpdir(), 'mp-readme-'));
    const dir = join(root, 'test', '.readme-run');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `example-${i + 1}-${process.pid}.ts`);
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
