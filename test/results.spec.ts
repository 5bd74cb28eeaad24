import test from 'ava';
import { mkdtemp, readFile, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  parseEvalFile,
  parseMetrics,
  readEvalFile,
  readMetrics,
  stableStringify,
  writeEvalFile,
  type EvalFile,
  meanMetaLoss,
} from '../src/results.js';
import { metricsSeries, omniglotEval, sineEval } from './fixtures/eval-results.js';

const tmp = () => mkdtemp(join(tmpdir(), 'metaplastic-results-'));

test('eval files round-trip through write and read, byte-identical on rewrite', async (t) => {
  const dir = await tmp();
  for (const file of [sineEval('flp'), omniglotEval('oml', 0.85, 5, 0.03)]) {
    const path = join(dir, `${file.name}.json`);
    await writeEvalFile(path, file);
    const back = await readEvalFile(path);
    t.deepEqual(back, file);
    const bytes = await readFile(path, 'utf8');
    await writeEvalFile(path, back);
    t.is(await readFile(path, 'utf8'), bytes);
  }
  t.false((await readdir(dir)).some((f) => f.endsWith('.tmp')));
});

test('readEvalFile names the file for a missing file, bad JSON and a schema violation', async (t) => {
  const dir = await tmp();
  const missing = join(dir, 'nope.json');
  const e1 = await t.throwsAsync(readEvalFile(missing));
  t.is((e1 as { code?: string }).code, 'E_IO');
  t.true(e1!.message.includes(missing) && e1!.message.includes('does not exist'));

  const bad = join(dir, 'bad.json');
  await writeFile(bad, '{\n  "format": 1,\n  "name": \n}');
  const e2 = await t.throwsAsync(readEvalFile(bad));
  t.is((e2 as { code?: string }).code, 'E_DATA');
  t.true(e2!.message.startsWith(bad), e2!.message);
  t.regex(e2!.message, /not valid JSON/);

  const wrong = sineEval('flp') as unknown as { result: { continual: { curve: unknown[] } } };
  wrong.result.continual.curve.pop();
  const e3 = t.throws(() => parseEvalFile(JSON.stringify(wrong), 'x.json'));
  t.regex(e3!.message, /^x\.json: not a valid eval file: result\.continual\.curve: has 9 entries, expected one per function \(10\)/);

  const badStat = sineEval('flp') as unknown as { result: { iid: { finalMse: { ci95: unknown } } } };
  badStat.result.iid.finalMse.ci95 = [1, 'x'];
  t.throws(() => parseEvalFile(JSON.stringify(badStat), 'y.json'), { message: /result\.iid\.finalMse\.ci95\[1\]/ });

  const proto = { ...sineEval('flp'), result: { protocol: 'mnist' } };
  t.throws(() => parseEvalFile(JSON.stringify(proto), 'z.json'), { message: /z\.json: not a valid eval file: result\.protocol/ });
  t.throws(() => parseEvalFile(JSON.stringify({ ...sineEval('a'), format: 2 }), 'f.json'), { message: /format 2 is not supported/ });
});

test('writeEvalFile refuses an invalid result and leaves nothing behind', async (t) => {
  const dir = await tmp();
  const file = omniglotEval('oml') as EvalFile;
  (file.result as { runs: number }).runs = 0;
  await t.throwsAsync(writeEvalFile(join(dir, 'e.json'), file), { message: /result\.runs/ });
  t.deepEqual(await readdir(dir), []);
});

test('metrics: one record per line, errors name file and line, partial last line tolerated', async (t) => {
  const dir = await tmp();
  const recs = metricsSeries(1, 3);
  const path = join(dir, 'metrics.jsonl');
  await writeFile(path, recs.map((r) => JSON.stringify(r)).join('\n') + '\n\n');
  t.deepEqual(await readMetrics(path), recs);

  const truncated = recs.map((r) => JSON.stringify(r)).join('\n') + '\n{"step": 40, "meta';
  t.deepEqual(parseMetrics(truncated, 'm.jsonl'), recs);
  t.throws(() => parseMetrics(truncated, 'm.jsonl', { allowPartialLastLine: false }), { message: /^m\.jsonl:4: not valid JSON/ });

  const corrupt = [JSON.stringify(recs[0]), '{oops', JSON.stringify(recs[1])].join('\n') + '\n';
  t.throws(() => parseMetrics(corrupt, 'm.jsonl'), { message: /^m\.jsonl:2: not valid JSON/ });

  const invalid = [JSON.stringify(recs[0]), JSON.stringify({ ...recs[1], metaLoss: 'x' })].join('\n') + '\n';
  t.throws(() => parseMetrics(invalid, 'm.jsonl'), { message: /^m\.jsonl:2: not a valid metrics record: metaLoss/ });

  await t.throwsAsync(readMetrics(join(dir, 'none.jsonl')), { message: /none\.jsonl: cannot read metrics file: does not exist/ });
});

test('stableStringify sorts keys at every level and prints numbers one way', (t) => {
  const a = stableStringify({ b: 1, a: { d: [3, { z: 1, y: -0 }], c: 'x' }, u: undefined }, { indent: 0 });
  t.is(a, '{"a":{"c":"x","d":[3,{"y":0,"z":1}]},"b":1}');
  t.is(stableStringify({ x: 1, y: 2 }), stableStringify({ y: 2, x: 1 }));
  t.is(stableStringify({ x: 1 }), '{\n  "x": 1\n}');
  t.is(stableStringify([0.1 + 0.2], { indent: 0 }), '[0.30000000000000004]');
  t.is(stableStringify([0.1 + 0.2, 123456.789], { indent: 0, significantDigits: 6 }), '[0.3,123457]');
  t.is(stableStringify([1e-7, 2e21], { indent: 0 }), '[1e-7,2e+21]');
  t.throws(() => stableStringify({ a: { b: Number.NaN } }), { message: /a\.b is NaN/ });
  const loop: Record<string, unknown> = {};
  loop.self = loop;
  t.throws(() => stableStringify(loop), { message: /circular/ });
  // matches JSON.parse semantics
  const file = sineEval('flp');
  t.deepEqual(JSON.parse(stableStringify(file)), file);
});

test('exploded steps are left out of the mean meta-loss; lines of the earlier format are read where the cumulative count rises', (t) => {
  const flags = [false, true, false, false];
  const recs = metricsSeries(1, 4).map((r, i) => ({ ...r, metaLoss: [1, 1e12, 3, null][i], exploded: flags[i], explodedTotal: i >= 1 ? 1 : 0, skipped: i === 3, skippedTotal: i >= 3 ? 1 : 0 }));
  t.is(meanMetaLoss(recs), 2);
  // The earlier format: cumulative counts under `skipped` and `exploded`, group rates and speed.
  const legacy = recs.map((r) => JSON.stringify({ step: r.step, metaLoss: r.metaLoss, lr: { forward: 1e-3 }, skipped: r.skippedTotal, exploded: r.explodedTotal, stepsPerSec: 12.5 })).join('\n');
  const read = parseMetrics(legacy, 'old.jsonl');
  t.deepEqual(read.map((r) => r.exploded), flags);
  t.deepEqual(read.map((r) => r.skipped), [false, false, false, true]);
  t.is(meanMetaLoss(read), 2);
  t.is(read[0].seconds, 1 / 12.5);
  // Metrics written before the check existed have no count: nothing exploded.
  const older = [JSON.stringify({ step: 1, metaLoss: 2, lr: {}, skipped: 0, stepsPerSec: 1 }), JSON.stringify({ step: 2, metaLoss: 1, lr: {}, skipped: 0, stepsPerSec: 1 })].join('\n');
  t.deepEqual(parseMetrics(older).map((r) => r.exploded), [false, false]);
  // A run resumed by this version after an earlier one: both kinds of line, in order.
  t.deepEqual(parseMetrics([legacy, JSON.stringify({ ...recs[3], step: 50 })].join('\n')).map((r) => r.step), [10, 20, 30, 40, 50]);
});
