// The benchmark harness still drives the engine through the current API: a short engine-only run of
// each kind of scenario writes its results file, and two results files compare. Speed is reported by
// `npm run bench`, never tested here.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareReports, formatComparison, pairedRatio } from '../bench/report.mjs';
import { root } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'mp-bench-'));
test.after.always(() => rmSync(work, { recursive: true, force: true }));

const node = (args: string[]) => spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8' });

test.serial('bench/run.mjs measures a train and an eval scenario and writes its JSON', (t) => {
  const out = join(work, 'results.json');
  const r = node(['bench/run.mjs', '--quick', '--no-reference', '--threads', '1', '--filter', 'oml-train-e1,oml-eval', '--json', out]);
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

test.serial('bench/run.mjs --rounds pools every round and --compare sets the run against an earlier file', (t) => {
  const earlier = join(work, 'results.json');
  const out = join(work, 'rounds.json');
  const r = node(['bench/run.mjs', '--quick', '--no-reference', '--threads', '1', '--filter', 'oml-train-e1', '--rounds', '2', '--json', out, '--compare', earlier]);
  t.is(r.status, 0, r.stderr + r.stdout);
  const [now] = JSON.parse(readFileSync(out, 'utf8')).scenarios;
  const [before] = JSON.parse(readFileSync(earlier, 'utf8')).scenarios.filter((s: { name: string }) => s.name === 'oml-train-e1');
  t.is(now.rounds, 2);
  t.is(now.samplesMs.length, 2 * before.samplesMs.length, 'two rounds of the same repeats');
  t.regex(r.stdout, new RegExp(`compared with ${earlier.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  t.regex(r.stdout, /\| oml-train-e1 /);
});

test('bench/run.mjs refuses a round count that is not a positive integer, and an unreadable --compare file, before measuring', (t) => {
  const zero = node(['bench/run.mjs', '--quick', '--no-reference', '--rounds', '0']);
  t.not(zero.status, 0);
  t.regex(zero.stderr, /--rounds must be a positive integer, got 0/);
  const missing = join(work, 'no-such.json');
  const r = node(['bench/run.mjs', '--quick', '--no-reference', '--compare', missing]);
  t.not(r.status, 0);
  t.regex(r.stderr, /cannot read .*no-such\.json: no such file/);
  t.notRegex(r.stdout, /oml-train/, 'nothing was measured');
});

test('the paired ratio is the median of each round’s engine median over its reference median', (t) => {
  // Round 1: median(2, 4, 3) = 3 over 6 → 0.5; round 2: 1 over 4 → 0.25; round 3: 2 over 2 → 1.
  const p = pairedRatio([
    { engine: [2, 4, 3], reference: [6] },
    { engine: [1], reference: [4] },
    { engine: [2], reference: [1, 3] },
  ]);
  t.deepEqual(p?.perRound, [0.5, 0.25, 1]);
  t.is(p?.ratio, 0.5);
  t.is(pairedRatio([{ engine: [1], reference: [] }]), null, 'no round with a reference: no ratio');
});

const report = (over: Record<string, unknown>, scenarios: unknown[]) => ({
  date: '2026-12-05',
  commit: 'abc',
  profile: { name: 'full' },
  machine: { cpu: 'CPU A', cores: 2, threads: 2, device: 'cpu' },
  matmul: { square: { gflops: 200 }, 'bmm 1': { gflops: 90 } },
  scenarios,
  ...over,
});

test('two results files compare scenario by scenario, and a different machine is said', (t) => {
  const before = report({}, [
    { name: 'flp-train-e1', msMedian: 3000, engineOverReference: 0.6, fractionOfMatmulPeak: 0.25, maxRssMiB: 640, loadAverage: 1 },
    { name: 'oml-train-e1', msMedian: 2000 },
    { name: 'flp-eval-r8', error: 'engine exited with 1' },
  ]);
  const after = report({ machine: { cpu: 'CPU B', cores: 2, threads: 2, device: 'cpu' } }, [
    { name: 'flp-train-e1', msMedian: 2000, engineOverReference: 0.4, fractionOfMatmulPeak: 0.375, maxRssMiB: 600, loadAverage: 1.5 },
    { name: 'flp-eval-r8', msMedian: 9000 },
  ]);
  const c = compareReports(before, after);
  t.deepEqual(c.rows.map((r) => r.name), ['flp-train-e1'], 'only scenarios both measured without error');
  t.is(c.rows[0].speedup, 1.5);
  t.is(c.rows[0].afterOverReference, 0.4);
  t.deepEqual(c.missing, ['oml-train-e1']);
  t.deepEqual(c.machines, ['CPU: CPU A → CPU B']);
  t.deepEqual(c.peaks, [200, 200]);
  const text = formatComparison(before, after);
  t.regex(text, /different machines or settings \(CPU: CPU A → CPU B\)/);
  t.regex(text, /\| flp-train-e1 \| +3000 \| +2000 \| +1\.50× \| +0\.60× \| +0\.40× \| +25% \| +38% \|/);
  t.regex(text, /measured only before: oml-train-e1/);
});

test('bench/compare.mjs prints two files side by side and names a file it cannot use', (t) => {
  const a = join(work, 'a.json');
  const b = join(work, 'b.json');
  writeFileSync(a, JSON.stringify(report({}, [{ name: 'oml-train-e1', msMedian: 2400 }])));
  writeFileSync(b, JSON.stringify(report({}, [{ name: 'oml-train-e1', msMedian: 1200 }])));
  const ok = node(['bench/compare.mjs', a, b]);
  t.is(ok.status, 0, ok.stderr);
  t.regex(ok.stdout, /\| oml-train-e1 \| +2400 \| +1200 \| +2\.00× \|/);
  t.notRegex(ok.stdout, /different machines/);

  const corrupt = join(work, 'corrupt.json');
  writeFileSync(corrupt, '{"scenarios": [');
  const bad = node(['bench/compare.mjs', a, corrupt]);
  t.is(bad.status, 1);
  t.regex(bad.stderr, /corrupt\.json is not JSON/);
  const wrong = join(work, 'wrong.json');
  writeFileSync(wrong, '{"date": "x"}');
  t.regex(node(['bench/compare.mjs', wrong, b]).stderr, /wrong\.json has no "scenarios" list/);
  t.is(node(['bench/compare.mjs', a]).status, 2, 'usage');
});
