import test from 'ava';
import { mkdtemp, readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import {
  compareFigures,
  metaLossSpec,
  omniglotAccuracySpec,
  sineCurveSpec,
  sinePerFunctionSpec,
  plotMetaLoss,
  plotOmniglotAccuracy,
  plotSineCurve,
  renderFigure,
  smoothEma,
  bulkLogDomain,
  type Figure,
} from '../src/plots.js';
import type { OmniglotEvalResult, SineEvalResult } from '../src/results.js';
import { metricsSeries, omniglotEval, sineEval } from './fixtures/eval-results.js';

const tmp = () => mkdtemp(join(tmpdir(), 'metaplastic-plots-'));
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Checks both files of a figure and returns the SVG text. */
async function checkFigure(t: import('ava').ExecutionContext, fig: Figure, dir: string, name: string): Promise<string> {
  t.is(fig.name, name);
  t.is(fig.svg, join(dir, `${name}.svg`));
  t.is(fig.png, join(dir, `${name}.png`));
  const svg = await readFile(fig.svg, 'utf8');
  t.true(svg.startsWith('<svg'), 'SVG root element');
  t.notThrows(() => new Resvg(svg), 'SVG parses');
  const png = await readFile(fig.png);
  t.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
  t.true(png.length > 10_000, `PNG has content (${png.length} bytes)`);
  // IHDR: width and height at bytes 16..24; rendered at 2x the SVG's size
  t.true(png.readUInt32BE(16) > 600 && png.readUInt32BE(20) > 400);
  return svg;
}

const sine = (name: string, base: number) => ({ name, result: sineEval(name, base).result as SineEvalResult });
const omni = (name: string, top: number) => ({ name, result: omniglotEval(name, top).result as OmniglotEvalResult });

test('sine curve: one series per learner, both orders, axis titles', async (t) => {
  const dir = await tmp();
  const fig = await plotSineCurve(dir, [sine('FLP <oja> & co', 0.2), sine('OML', 0.35)]);
  const svg = await checkFigure(t, fig, dir, 'sine-curve');
  for (const text of ['FLP &lt;oja&gt; &amp; co', 'OML', "Data seen (functions' worth)", 'MSE', 'continual', 'i.i.d.']) t.true(svg.includes(text), text);
  t.deepEqual((await readdir(dir)).sort(), ['sine-curve.png', 'sine-curve.svg']);
});

test('omniglot accuracy: held-out and train panels', async (t) => {
  const dir = await tmp();
  const svg = await checkFigure(t, await plotOmniglotAccuracy(dir, [omni('FLP', 0.9), omni('OML', 0.8)]), dir, 'omniglot-accuracy');
  for (const text of ['FLP', 'OML', 'Classes learned', 'Accuracy', 'held-out images', 'training images']) t.true(svg.includes(text), text);
});

test('meta-loss: log axis, smoothing adds a smoothed line, long series are thinned', async (t) => {
  const dir = await tmp();
  const fig = await plotMetaLoss(dir, [{ name: 'FLP', records: metricsSeries(2) }, { name: 'OML', records: metricsSeries(3) }], { smoothing: 0.8 });
  const svg = await checkFigure(t, fig, dir, 'meta-loss');
  for (const text of ['FLP', 'OML', 'Meta-training step', 'Meta-loss (log scale)']) t.true(svg.includes(text), text);

  const values = (spec: unknown) => (spec as { data: { values: { kind: string; loss: number }[] } }).data.values;
  const rows = values(metaLossSpec([{ name: 'A', records: metricsSeries(1, 5000) }], { maxPoints: 100, smoothing: 0.5 }));
  t.is(rows.filter((r) => r.kind === 'raw').length, 100);
  t.is(rows.filter((r) => r.kind === 'smoothed').length, 100);
  const withZero = [{ ...metricsSeries(1, 1)[0], metaLoss: 0 }, ...metricsSeries(1, 3)];
  t.is(values(metaLossSpec([{ name: 'A', records: withZero }])).length, 3, 'non-positive losses are left off a log axis');
});

test('meta-loss: skipped and exploded steps are marked, left out of the smoothing, and the y-range comes from the bulk', (t) => {
  const base = metricsSeries(1, 200).map((r) => ({ ...r, metaLoss: 2 }));
  // Step 101 exploded (finite 1e19), step 151 non-finite (null).
  const records = base.map((r, i) => ({ ...r, metaLoss: i === 100 ? 1e19 : i === 150 ? null : r.metaLoss, exploded: i === 100, explodedTotal: i >= 100 ? 1 : 0, skipped: i === 150, skippedTotal: i >= 150 ? 1 : 0 }));
  const spec = metaLossSpec([{ name: 'FLP', records }], { smoothing: 0.9 }) as unknown as {
    data: { values: { kind: string; loss: number; step: number }[] };
    layer: { encoding: { y: { scale: { domain: [number, number] } } } }[];
  };
  const rows = spec.data.values;
  t.deepEqual(rows.filter((r) => r.kind === 'exploded').map((r) => r.step), [records[100].step]);
  t.deepEqual(rows.filter((r) => r.kind === 'skipped').map((r) => r.step), [records[150].step]);
  t.false(rows.some((r) => r.kind === 'raw' && r.loss > 1e3), 'the exploded loss is not drawn as a raw point');
  t.true(rows.filter((r) => r.kind === 'smoothed').every((r) => Math.abs(r.loss - 2) < 1e-9), 'the smoothed line is untouched');
  const [lo, hi] = spec.layer[0].encoding.y.scale.domain;
  t.true(lo < 2 && hi > 2 && hi / lo < 20, `domain ${lo}..${hi}`);
});

test('bulkLogDomain ignores a few outliers', (t) => {
  const losses = [...Array.from({ length: 500 }, (_, i) => 1 + i / 500), 1e20, 1e15];
  const [lo, hi] = bulkLogDomain(losses)!;
  t.true(lo < 1 && hi > 2 && hi < 10, `${lo}..${hi}`);
  t.is(bulkLogDomain([]), undefined);
});

test('smoothEma is bias-corrected and validates its weight', (t) => {
  t.deepEqual(smoothEma([4, 4, 4], 0.9), [4, 4, 4]);
  const s = smoothEma([0, 10], 0.5);
  t.is(s[0], 0);
  t.true(Math.abs(s[1] - (0.5 * 10) / 0.75) < 1e-12);
  t.throws(() => smoothEma([1], 1), { message: /smoothing/ });
});

test('compareFigures writes the figures the entries have data for', async (t) => {
  const dir = await tmp();
  const sineOnly = await compareFigures(dir, [
    { name: 'FLP', eval: sineEval('flp', 0.2) },
    { name: 'OML', eval: sineEval('oml', 0.35) },
  ]);
  t.deepEqual(sineOnly.map((f) => f.name), ['sine-curve', 'sine-per-function']);
  const perFn = await checkFigure(t, sineOnly[1], dir, 'sine-per-function');
  t.true(perFn.includes('after learning all 10'));

  const dir2 = await tmp();
  const mixed = await compareFigures(dir2, [
    { name: 'FLP', eval: omniglotEval('flp', 0.9), metrics: metricsSeries(2) },
    { name: 'OML', eval: omniglotEval('oml', 0.8), metrics: [] },
  ]);
  t.deepEqual(mixed.map((f) => f.name), ['meta-loss', 'omniglot-accuracy']);
  t.deepEqual((await readdir(dir2)).sort(), ['meta-loss.png', 'meta-loss.svg', 'omniglot-accuracy.png', 'omniglot-accuracy.svg']);
  // The Omniglot figure draws the published long-stream figures as hollow markers, labelled with their source.
  const withPublished = await readFile(join(dir2, 'omniglot-accuracy.svg'), 'utf8');
  t.true(withPublished.includes('ANML, public replications') && withPublished.includes('hollow: published figures'));
  const dir3 = await tmp();
  await compareFigures(dir3, [{ name: 'FLP', eval: omniglotEval('flp', 0.9) }], { published: [] });
  t.false((await readFile(join(dir3, 'omniglot-accuracy.svg'), 'utf8')).includes('ANML'));
});

test('bad input is refused before anything is written', async (t) => {
  const dir = await tmp();
  await t.throwsAsync(compareFigures(dir, []), { message: /nothing to plot/ });
  await t.throwsAsync(
    compareFigures(dir, [
      { name: 'A', eval: sineEval('a') },
      { name: 'A', eval: sineEval('b') },
    ]),
    { message: /"A" appears twice/ },
  );
  await t.throwsAsync(renderFigure(metaLossSpec([{ name: 'A', records: metricsSeries(1, 3) }]), dir, '../escape'), { message: /figure name/ });
  t.deepEqual(await readdir(dir), []);
});

// Issue 13: bands within what the quantity can be, readable scales, one log tick style.
type Layered = { data: { values: Record<string, number>[] }; spec: { layer: { encoding: { y: { scale?: { type?: string; domain?: number[] }; axis?: { format?: string } } } }[] } };

test('sine curve: the band never goes below 0 MSE; the x axis fits both panels', (t) => {
  const wide = sine('FLP', 0.2).result;
  const stretched = { ...wide, continual: { ...wide.continual, curve: wide.continual.curve.map((s) => ({ ...s, ci95: [s.mean - 10, s.mean + 10] as [number, number] })) } };
  const spec = sineCurveSpec([{ name: 'FLP', result: stretched }]) as unknown as Layered;
  t.true(spec.data.values.every((r) => r.lo >= 0));
  t.notRegex(JSON.stringify(spec), /Functions seen/);
});

test('per-function errors and the meta-loss use log axes with one tick style; Omniglot accuracy spans 0-100%', (t) => {
  const per = sinePerFunctionSpec([sine('FLP', 5), sine('OML', 0.01)]) as unknown as Layered;
  t.is(per.spec.layer[0].encoding.y.scale?.type, 'log');
  t.true(per.data.values.every((r) => r.lo > 0), 'a log axis gets positive lower bounds');
  const loss = metaLossSpec([{ name: 'A', records: metricsSeries(2) }]) as unknown as { encoding?: unknown };
  const formats = [...JSON.stringify([per, loss]).matchAll(/"type":"log"[^}]*}(?:,"axis":\{"format":"([^"]+)")?/g)].map((m) => m[1]).filter(Boolean);
  t.true(formats.length >= 1 && formats.every((f) => f === '~e'), JSON.stringify(formats));
  const omni = omniglotAccuracySpec([{ name: 'FLP', result: omniglotEval('flp', 0.99).result as OmniglotEvalResult }]) as unknown as Layered;
  t.deepEqual(omni.spec.layer[0].encoding.y.scale?.domain, [0, 1]);
  t.true(omni.data.values.every((r) => r.lo >= 0 && r.hi <= 1));
});
