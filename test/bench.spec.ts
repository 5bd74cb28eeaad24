// The benchmark harness still drives the engine through the current API: a short engine-only run of
// each kind of scenario writes its results file. Speed is reported by `npm run bench`, never tested here.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'mp-bench-'));
test.after.always(() => rmSync(work, { recursive: true, force: true }));

test('bench/run.mjs measures a train and an eval scenario and writes its JSON', (t) => {
  const out = join(work, 'results.json');
  const r = spawnSync(process.execPath, ['bench/run.mjs', '--quick', '--no-reference', '--threads', '1', '--filter', 'oml-train-e1,oml-eval', '--json', out], {
    cwd: root,
    encoding: 'utf8',
  });
  t.is(r.status, 0, r.stderr + r.stdout);
  const report = JSON.parse(readFileSync(out, 'utf8'));
  const names = report.scenarios.map((s: { name: string }) => s.name);
  t.true(names.includes('oml-train-e1'), names.join(', '));
  t.true(names.some((n: string) => n.startsWith('oml-eval')), names.join(', '));
  for (const s of report.scenarios) {
    t.true(s.samplesMs.length > 0 && s.samplesMs.every((ms: number) => ms > 0), `${s.name}: ${JSON.stringify(s.samplesMs)}`);
    t.true(s.maxRssMiB > 0, s.name);
  }
});
