// The analysis of learned updates (docs/method.md §7) from TypeScript and the CLI, on tiny sine learners.
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from './helpers.js';
import { demoConfigs } from '../src/presets.js';
import { Experiment, mergeConfig, alignmentSpec, overlapSpec, type Analysis } from '../src/index.js';

const tiny = () => demoConfigs({ scale: 'tiny', seed: 3 });

test('analyze returns per-step measurements for every plastic layer and task', async (t) => {
  using exp = await Experiment.create(tiny().flp);
  const a = await exp.analyze({ runs: 2 });
  const sine = exp.config.task as { sine: { functions: number; batchesPerFunction: number } };
  t.is(a.tasks, sine.sine.functions);
  t.is(a.steps, sine.sine.functions * sine.sine.batchesPerFunction);
  t.is(a.runs.length, 2);
  t.is(a.layers.length, exp.config.learner.layers.length); // rln 0: every layer is plastic
  for (const run of a.runs) {
    t.is(run.steps.length, a.steps);
    for (const s of run.steps) {
      t.is(s.layers.length, a.layers.length);
      // Tasks not yet seen have no loss change; the current task always has one.
      for (const [j, c] of s.lossChange.entries()) t.is(c === null, !run.steps.slice(0, s.step + 1).some((p) => p.task === j));
    }
    t.is(run.overlap[0].length, a.tasks);
  }
  t.is(a.rule, 'local');
});

test('measuring a subsample of steps leaves the stream and its losses unchanged', async (t) => {
  using exp = await Experiment.create(tiny().oml);
  const all = await exp.analyze({ every: 1 });
  const some = await exp.analyze({ every: 3 });
  t.deepEqual(some.runs[0].steps.map((s) => s.step), all.runs[0].steps.filter((s) => s.step % 3 === 0).map((s) => s.step));
  t.deepEqual(some.runs[0].curve, all.runs[0].curve);
  t.deepEqual(some.runs[0].effectiveRank, all.runs[0].effectiveRank);
  // OML's inner rule is SGD: its updates are the negative gradient.
  for (const l of all.layers) t.true(Math.abs(l.alignment.mean! - 1) < 1e-4);
});

test('derivative-control feedback with a Hebbian rule is aligned with the gradient', async (t) => {
  const config = mergeConfig(tiny().flp, { learner: { feedback: { type: 'derivative' }, rule: { type: 'hebb' }, plasticity: { granularity: 'layer', parameterization: 'linear', init: 0.01, normalize: 'none', hiddenMultiplier: 1 } } });
  using exp = await Experiment.create(config);
  const a = await exp.analyze({});
  const out = a.layers[a.layers.length - 1];
  t.true(out.alignment.n > 0);
  t.true(Math.abs(out.alignment.mean! - 1) < 1e-4, `output alignment ${out.alignment.mean}`);
  t.true(out.alignment.std! < 1e-4);
  t.is(out.signAgreement.mean, 1);
});

test('learned arrays are the effective rates, feedback and strengths; exported as safetensors', async (t) => {
  using exp = await Experiment.create(tiny().flp);
  const learned = exp.learned();
  const cfg = exp.config.learner;
  const plastic = cfg.layers.map((_, l) => l);
  for (const l of plastic) {
    t.truthy(learned.arrays[`rate.${l}`], `rate.${l}`);
    t.truthy(learned.arrays[`feedback.${l}.0.weight`]);
    t.truthy(learned.arrays[`strength.${l}`]);
  }
  // Log-space rates (the flp-sine recipe): P = exp(θ), times exp(σ) when a layer scale is learned.
  t.is(cfg.plasticity!.parameterization, 'log');
  const theta = exp.param('plasticity.0');
  const scale = exp.params().some((p) => p.name === 'plasticityScale.0') ? Math.exp(exp.param('plasticityScale.0').data[0]) : 1;
  const rate = learned.arrays['rate.0'];
  t.deepEqual(rate.shape, theta.shape);
  for (let i = 0; i < theta.data.length; i += 7) t.true(Math.abs(rate.data[i] - Math.exp(theta.data[i]) * scale) <= 1e-6 * rate.data[i]);
  const s = learned.stats.find((x) => x.name === 'rate.0')!;
  const mean = rate.data.reduce((a, b) => a + b, 0) / rate.data.length;
  t.true(Math.abs(s.values.mean! - mean) < 1e-6 * Math.abs(mean));
  t.true(learned.arrays['rate.0'].data instanceof Float32Array);

  const dir = mkdtempSync(join(tmpdir(), 'mp-learned-'));
  try {
    const path = join(dir, 'learned.safetensors');
    await exp.exportLearned(path);
    const buf = readFileSync(path);
    const header = JSON.parse(buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString('utf8'));
    t.deepEqual(Object.keys(header).filter((k) => k !== '__metadata__').sort(), Object.keys(learned.arrays).sort());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad analysis options are named errors', async (t) => {
  using exp = await Experiment.create(tiny().flp);
  for (const bad of [{ every: 0 }, { runs: 1.5 }, { bogus: 1 }, { classes: 5 }]) {
    const e = await t.throwsAsync(exp.analyze(bad as object));
    t.is((e as { code?: string }).code, 'E_CONFIG', JSON.stringify(bad));
  }
  using custom = await Experiment.forLearner(exp.config.learner);
  const e = await t.throwsAsync(custom.analyze());
  t.is((e as { code?: string }).code, 'E_CONFIG');
});

test('figure specs refuse duplicate learner names', (t) => {
  const a = { name: 'x', layers: [], forgetting: { curve: [] } } as unknown as Analysis;
  t.is((t.throws(() => alignmentSpec([a, a])) as { code?: string }).code, 'E_CONFIG');
  t.is((t.throws(() => overlapSpec([])) as { code?: string }).code, 'E_CONFIG');
});

test('cli: analyze --checkpoint --against writes analysis.json, the learned arrays and the figures', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mp-analyze-'));
  try {
    const { flp, oml } = tiny();
    for (const [name, config] of [['flp', flp], ['oml', oml]] as const) {
      using exp = await Experiment.create(config);
      await exp.save(join(dir, name));
    }
    const out = join(dir, 'out');
    const r = cli(['analyze', '--checkpoint', join(dir, 'flp'), '--against', join(dir, 'oml'), '--out', out, '--every', '2', '--threads', '1']);
    t.is(r.status, 0, r.stderr);
    t.regex(r.stdout, /alignment/);
    const file = JSON.parse(readFileSync(join(out, 'analysis.json'), 'utf8'));
    t.deepEqual(file.learners.map((l: { analysis: Analysis }) => l.analysis.rule), ['local', 'sgd']);
    for (const f of ['analysis-alignment', 'analysis-overlap', 'analysis-forgetting']) t.true(existsSync(join(out, `${f}.svg`)) && existsSync(join(out, `${f}.png`)), f);
    t.true(existsSync(join(out, `learned-${flp.name}.safetensors`)));
    const j = cli(['analyze', '--checkpoint', join(dir, 'flp'), '--out', out, '--json', '--threads', '1']);
    t.is(j.status, 0, j.stderr);
    t.is(JSON.parse(j.stdout).learners.length, 1);
    const bad = cli(['analyze', '--checkpoint', join(dir, 'flp'), '--order', 'sideways']);
    t.not(bad.status, 0);
    t.regex(bad.stderr, /--order/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
