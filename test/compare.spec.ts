import test from 'ava';
import { compareJson, compareRows, compareTable } from '../src/compare.js';
import type { CompareEntry, EvalFile } from '../src/results.js';
import { stableStringify } from '../src/results.js';
import { metricsSeries, omniglotEval, sineEval } from './fixtures/eval-results.js';

const stat = (mean: number, half: number, n = 10) => ({ mean, std: 1, ci95: [mean - half, mean + half] as [number, number], n });

function sineWith(name: string, continual: number, iid: number): EvalFile {
  const file = sineEval(name);
  if (file.result.protocol !== 'sine') throw new Error('fixture');
  file.result.continual.finalMse = stat(continual, 0.021);
  file.result.iid.finalMse = stat(iid, 0.004);
  return file;
}

test('table: learners as columns, mean ± CI half-width, aligned columns', (t) => {
  const text = compareTable([
    { name: 'FLP', eval: sineWith('flp', 0.2514, 0.0612) },
    { name: 'OML', eval: sineWith('oml', 0.352, 0.0705) },
  ]);
  const lines = text.trimEnd().split('\n');
  t.regex(lines[0], /^\s+FLP\s+OML$/);
  t.regex(lines[1], /^runs\s+n = 5\s+n = 5$/);
  const cont = lines.find((l) => l.startsWith('sine continual'))!;
  t.regex(cont, /0\.251 ± 0\.021\s+0\.352 ± 0\.021$/);
  const iid = lines.find((l) => l.startsWith('sine i.i.d.'))!;
  t.regex(iid, /0\.0612 ± 0\.0040\s+0\.0705 ± 0\.0040$/, 'one decimal place per row, enough for 3 significant digits');
  // every line ends where the header ends: right-aligned columns
  const width = lines[0].length;
  for (const l of lines) t.is(l.length, width, l);
  t.true(text.endsWith('\n'));
});

test('table: omniglot rows per class count, "-" where a learner has no value, n = 1 without ±', (t) => {
  const one = omniglotEval('flp', 0.9, 1);
  const text = compareTable([
    { name: 'OML', eval: omniglotEval('oml', 0.85, 5, 0.03) },
    { name: 'FLP', eval: one },
    { name: 'sine', eval: sineEval('s') },
  ]);
  const labels = text.split('\n').slice(3).map((l) => l.split(/\s{3,}/)[0]);
  t.deepEqual(labels.filter((l) => l.startsWith('omniglot held-out')), [10, 50, 100, 200].map((c) => `omniglot held-out acc, ${c} classes`));
  const row10 = text.split('\n').find((l) => l.startsWith('omniglot held-out acc, 10 classes'))!;
  t.regex(row10, /\d\.\d{3} ± \d\.\d{3}\s+\d\.\d{3}\s+-$/);
  const step = text.split('\n').find((l) => l.startsWith('omniglot step size, 10 classes'))!;
  t.regex(step, /0\.0300\s+-\s+-$/);
  t.false(text.includes('meta-loss'), 'no metrics, no meta-loss row');
});

test('table and JSON are deterministic and agree', (t) => {
  const entries: CompareEntry[] = [
    { name: 'FLP', eval: sineEval('flp', 0.2), metrics: metricsSeries(1, 150) },
    { name: 'OML', eval: omniglotEval('oml') },
  ];
  t.is(compareTable(entries), compareTable(entries));
  const json = compareJson(entries);
  t.is(stableStringify(json), stableStringify(compareJson(entries)));
  t.deepEqual(json.learners.map((l) => [l.name, l.preset, l.protocol, l.runs]), [
    ['FLP', 'flp', 'sine', 5],
    ['OML', 'oml', 'omniglot', 5],
  ]);
  t.deepEqual(json.rows, compareRows(entries));
  const loss = json.rows.find((r) => r.key === 'metaTraining.finalLoss')!;
  const last = metricsSeries(1, 150).slice(-100);
  t.is(loss.values[0], last.reduce((s, r) => s + r.metaLoss, 0) / 100);
  t.is(loss.values[1], null);
  t.deepEqual(json.rows.find((r) => r.key === 'sine.continual.finalMse')!.values[1], null);
  t.truthy(json.rows.find((r) => r.key === 'omniglot.heldOut.200'));
});

test('refuses empty and duplicate entries', (t) => {
  t.throws(() => compareTable([]), { message: /nothing to compare/ });
  t.throws(() => compareJson([{ name: 'a', eval: sineEval('a') }, { name: 'a', eval: sineEval('b') }]), { message: /"a" appears twice/ });
});

test('final meta-loss: one definition, labelled with the steps it averages (train and compare agree)', async (t) => {
  const { finalMetaLoss, finalMetaLossLabel, metaLossWindow } = await import('../src/results.js');
  const short = metricsSeries(1, 10);
  const rows = compareRows([{ name: 'A', eval: sineEval('a'), metrics: short }]);
  const row = rows.find((r) => r.key === 'metaTraining.finalLoss')!;
  t.is(row.label, 'final meta-loss (mean of last 10 steps)', 'a 10-step run does not claim 100 steps');
  t.is(row.values[0], finalMetaLoss(short));
  t.is(metaLossWindow(metricsSeries(1, 500)), 100);
  t.is(finalMetaLossLabel(100), 'final meta-loss (mean of last 100 steps)');
  t.regex(finalMetaLossLabel(100, true), /last 100 steps, or all in a shorter run/);
});
