import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkConfig, customTask, Experiment, Run, listPresets, MetaplasticError, preset, presetNames, tensor, type ExperimentConfig } from '../src/index.js';

const tinySine = (rule: ExperimentConfig['learner']['rule'] = { type: 'oja' }): ExperimentConfig =>
  preset('flp-sine', {
    name: 'tiny',
    seed: 4,
    metaBatch: 2,
    learner: {
      inputShape: [4],
      layers: [{ type: 'linear', units: 12 }, { type: 'linear', units: 12 }, { type: 'linear', units: 1 }],
      rule,
      rln: 0,
      // The reference's rate semantics (summed Oja updates, linear rates), so that rates read back as set.
      plasticity: { init: 1e-4, parameterization: 'linear', normalize: 'none', hiddenMultiplier: 1 },
      feedback: { activation: 'relu', strength: { init: 0.5 }, outputIdentity: false },
      meta: { lr: { forward: 1e-3, plasticity: 1e-4 } },
      seed: 2,
    },
    task: { sine: { poolSize: 20, functions: 3, slots: 3, batchesPerFunction: 2, batchSize: 4, queryPerFunction: 5 } },
  });

const tmp = (name: string) => mkdtempSync(join(tmpdir(), `metaplastic-${name}-`));

test('every preset builds, and presets can be overridden field by field', (t) => {
  const names = presetNames();
  for (const required of ['flp-sine', 'oml-sine', 'flp-omniglot', 'oml-omniglot', 'flp-sine-random-feedback', 'flp-sine-no-feedback', 'flp-sine-derivative', 'flp-sine-oja', 'flp-sine-output-only', 'flp-sine-reference', 'flp-sine-hebb-reference', 'oml-sine-reference', 'flp-omniglot-reference', 'oml-omniglot-reference']) {
    t.true(names.includes(required), required);
  }
  t.is(listPresets().length, names.length);
  for (const name of names) {
    const params = checkConfig(name);
    t.true(params.some((p) => p.name === 'forward.0.weight'), name);
  }
  // The paper's sine network: 9 linear layers, OML plastic from layer 6 on.
  const oml = checkConfig('oml-sine');
  t.is(oml.filter((p) => p.name.endsWith('.weight') && p.name.startsWith('forward.')).length, 9);
  const flp = checkConfig('flp-sine');
  t.true(flp.some((p) => p.name === 'plasticity.0' && p.group === 'plasticity'));
  t.true(flp.some((p) => p.name === 'feedback.8.0.weight' && p.trainable));
  const random = checkConfig('flp-sine-random-feedback');
  t.true(random.some((p) => p.name === 'feedback.0.0.weight' && !p.trainable));
  // Overrides are deep and do not touch the preset itself.
  const cfg = preset('flp-sine', { learner: { plasticity: { granularity: 'neuron' } } });
  t.is(cfg.learner.plasticity?.granularity, 'neuron');
  t.is(cfg.learner.plasticity?.init, 1);
  t.is(preset('flp-sine').learner.plasticity?.granularity, 'synapse');
  t.throws(() => preset('no-such'), { instanceOf: MetaplasticError, message: /unknown preset 'no-such'/ });
});

test("reference presets reproduce the reference code's recipe", (t) => {
  const flp = preset('flp-sine-reference');
  t.is(flp.task.type === 'sine' && flp.task.order, 'iid');
  t.is(flp.learner.rule.type, 'oja');
  t.like(flp.learner.meta, { resetAdamEvery: 1000, explodeFactor: null, lr: { plasticity: 1e-8 } });
  t.is(flp.learner.plasticity?.init, 0);
  t.true(preset('flp-sine-hebb-reference').learner.plasticity?.hebbFirstStep);
  const oml = preset('oml-sine-reference');
  t.deepEqual(oml.learner.meta?.gradient, { type: 'firstOrder' });
  t.is(oml.task.type === 'sine' && oml.task.order, 'iid');
  t.deepEqual(preset('oml-omniglot-reference').learner.meta?.gradient, { type: 'firstOrder' });
  t.is(preset('flp-omniglot-reference').learner.meta?.resetAdamEvery, 1000);
  // The working presets keep the defaults: no Adam resets, exploded lifetimes skipped, continual order.
  for (const name of ['flp-sine', 'oml-sine', 'flp-omniglot', 'oml-omniglot']) {
    t.is(preset(name).learner.meta?.resetAdamEvery, undefined, name);
    t.is(preset(name).learner.meta?.explodeFactor, undefined, name);
  }
  t.is(preset('flp-sine').task.type === 'sine' && (preset('flp-sine').task as { order?: string }).order, 'continual');
});

test('invalid configurations are rejected naming the field', async (t) => {
  const bad = tinySine();
  (bad.learner.plasticity as any).granularity = 'axon';
  const err = await t.throwsAsync(Experiment.create(bad), { instanceOf: MetaplasticError });
  t.is(err.code, 'E_CONFIG');
  t.regex(err.message, /learner\.plasticity\.granularity/);
  const e2 = t.throws(() => checkConfig(tinySine(), { learner: { rln: 3 } }), { instanceOf: MetaplasticError });
  t.regex(e2.message, /rln/);
  for (const maxRate of [0, -1]) {
    const e = t.throws(() => checkConfig(tinySine(), { learner: { plasticity: { maxRate } } }), { instanceOf: MetaplasticError });
    t.regex(e.message, /learner\.plasticity\.maxRate: must be finite and > 0/);
  }
  const e3 = await t.throwsAsync(Experiment.create(tinySine(), { metaBatch: 0 }));
  t.regex(e3.message, /metaBatch/);
});

test('save, load and resume give the same result as an uninterrupted run', async (t) => {
  const straight = await Experiment.create(tinySine());
  await straight.metaTrain({ steps: 6 });
  const dir = tmp('resume');
  const first = await Run.open(dir, { config: tinySine() });
  await first.train({ steps: 3, checkpointEvery: 2 });
  t.is(first.experiment.step, 3);
  first.close();
  const run = await Run.open(dir);
  const resumed = run.experiment;
  t.is(resumed.step, 3);
  t.deepEqual(resumed.config, straight.config);
  await run.train({ steps: 6 });
  for (const p of straight.params()) {
    t.deepEqual(Array.from(resumed.param(p.name).data), Array.from(straight.param(p.name).data), p.name);
  }
  run.close();
  // metrics.jsonl holds each step once, in order, across the interruption.
  const steps = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
  t.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
  t.is(readdirSync(dir).filter((f) => f.endsWith('.safetensors')).length, 1);
});

test("Oja's learned decay: its parameters, its learned γ, a save and load, and a named error for a bad init", async (t) => {
  const exp = await Experiment.create(tinySine({ type: 'oja', decay: { init: 0.25, granularity: 'neuron' } }));
  const decay = exp.params().filter((p) => p.name.startsWith('decay.'));
  t.deepEqual(
    decay.map((p) => [p.name, p.shape, p.group, p.trainable]),
    [
      ['decay.0', [12, 1], 'plasticity', true],
      ['decay.1', [12, 1], 'plasticity', true],
      ['decay.2', [1, 1], 'plasticity', true],
    ],
  );
  t.true(Math.abs(exp.learned().arrays['decayCoefficient.0'].data[0] - 0.25) < 1e-6);
  const before = Array.from(exp.param('decay.1').data);
  await exp.metaTrain({ steps: 2 });
  const dir = tmp('decay');
  await exp.save(dir);
  const loaded = await Experiment.load(dir);
  t.deepEqual(Array.from(loaded.param('decay.1').data), Array.from(exp.param('decay.1').data));
  t.notDeepEqual(Array.from(exp.param('decay.1').data), before, 'φ was meta-trained');
  const err = t.throws(() => checkConfig(tinySine({ type: 'oja', decay: { init: 1 } })), { instanceOf: MetaplasticError });
  t.is(err.code, 'E_CONFIG');
  t.regex(err.message, /rule\.decay\.init/);
});

test('a checkpoint from an unknown format version or with corrupt tensors is refused', async (t) => {
  const dir = tmp('badckpt');
  const exp = await Experiment.create(tinySine());
  await exp.save(dir);
  const manifest = join(dir, 'checkpoint.json');
  const text = readFileSync(manifest, 'utf8');
  writeFileSync(manifest, text.replace('"formatVersion": 1', '"formatVersion": 2'));
  const err = await t.throwsAsync(Experiment.load(dir), { instanceOf: MetaplasticError });
  t.is(err.code, 'E_CHECKPOINT');
  t.regex(err.message, /format version 2 is not supported/);
  writeFileSync(manifest, text);
  const tensors = readdirSync(dir).find((f) => f.endsWith('.safetensors'))!;
  const bytes = readFileSync(join(dir, tensors));
  bytes[bytes.length - 3] ^= 0x55;
  writeFileSync(join(dir, tensors), bytes);
  const corrupt = await t.throwsAsync(Experiment.load(dir));
  t.regex(corrupt.message, /corrupt/);
  const missing = await t.throwsAsync(Experiment.load(join(dir, 'nope')));
  t.regex(missing.message, /checkpoint\.json is missing/);
});

test('meta-training reports progress, stops on abort and leaves a checkpoint', async (t) => {
  const dir = tmp('abort');
  await using run = await Run.open(dir, { config: tinySine() });
  const exp = run.experiment;
  const events: number[] = [];
  const controller = new AbortController();
  const err = await t.throwsAsync(
    run.train({
      steps: 100_000,
      signal: controller.signal,
      onProgress: (e) => {
        events.push(e.step);
        t.true(Number.isFinite(e.metaLoss) && e.stepsPerSec > 0);
        t.deepEqual(Object.keys(e.lr).sort(), ['feedback', 'forward', 'plasticity', 'strength']);
        if (e.step >= 5) controller.abort();
      },
    }),
    { instanceOf: MetaplasticError },
  );
  t.is(err.code, 'E_CANCELLED');
  t.true(exp.step >= 5 && exp.step < 100_000);
  t.true(events.length >= 1);
  t.true(existsSync(join(dir, 'checkpoint.json')));
  const back = await Experiment.load(dir);
  t.is(back.step, exp.step);
});

test('a second operation while one runs is refused with E_BUSY', async (t) => {
  const exp = await Experiment.create(tinySine());
  const running = exp.metaTrain({ steps: 30 });
  const err = t.throws(() => exp.params(), { instanceOf: MetaplasticError });
  t.is(err.code, 'E_BUSY');
  const evalErr = await t.throwsAsync(exp.evaluate({ runs: 2 }), { instanceOf: MetaplasticError });
  t.is(evalErr.code, 'E_BUSY');
  await running;
  t.true(exp.params().length > 0, 'usable again once the operation is done');
  t.is(exp.step, 30);
});

test('sine evaluation: structure, confidence intervals, determinism', async (t) => {
  const exp = await Experiment.create(tinySine());
  await exp.metaTrain({ steps: 5 });
  const a = await exp.evaluate({ runs: 6, seed: 3 });
  const b = await exp.evaluate({ runs: 6, seed: 3 });
  t.deepEqual(a, b);
  t.is(a.format, 1);
  t.is(a.checkpointStep, 5);
  t.is(a.result.protocol, 'sine');
  if (a.result.protocol !== 'sine') return;
  t.is(a.result.runs, 6);
  for (const order of [a.result.continual, a.result.iid]) {
    t.is(order.curve.length, 3);
    t.is(order.perFunction.length, 3);
    const s = order.finalMse;
    t.is(s.n, 6);
    // The percentile-bootstrap interval holds the mean, stays >= 0 for an MSE, and is recorded as such.
    t.true(s.ci95[0] >= 0 && s.ci95[0] <= s.mean && s.mean <= s.ci95[1], `[${s.ci95}] around ${s.mean}`);
    t.true(s.std === 0 || s.ci95[1] > s.ci95[0]);
  }
  t.regex(a.interval ?? '', /95% percentile bootstrap/);
  const other = await exp.evaluate({ runs: 6, seed: 4 });
  t.notDeepEqual(other.result, a.result);
});

test('episodes from TypeScript: a custom task drives meta-steps and runs', async (t) => {
  const task = customTask(
    (rng) => {
      const T = 3, B = 2, Q = 4;
      const xs = (n: number) => Array.from({ length: n * 2 }, () => rng.uniform(-1, 1));
      const sx = xs(T * B);
      const qx = xs(Q);
      const f = (v: number[]) => v.filter((_, i) => i % 2 === 0).map((a, i) => a - v[2 * i + 1]);
      return {
        supportX: tensor(sx, [T, B, 2]),
        supportY: tensor(f(sx), [T, B, 1]),
        queryX: tensor(qx, [Q, 2]),
        queryY: tensor(f(qx), [Q, 1]),
      };
    },
    { inputShape: [2], outputs: 1, classification: false, seed: 1 },
  );
  const exp = await Experiment.forLearner({ inputShape: [2], layers: [{ type: 'linear', units: 6 }, { type: 'linear', units: 1 }], task: 'regression', rule: { type: 'sgd', lr: 0.05 }, meta: { lr: { forward: 1e-2 } } });
  // Nothing to sample or evaluate in a custom task: those calls say so.
  const noTrain = await t.throwsAsync(exp.metaTrain({ steps: 1 }));
  t.regex(noTrain.message, /custom task has no sampler/);
  const noEval = await t.throwsAsync(exp.evaluate({ runs: 1 }));
  t.regex(noEval.message, /custom task has no evaluation protocol/);
  const episodes = [task.sample(), task.sample()];
  const before = await exp.runEpisodes(episodes);
  t.is(before.queryLoss.length, 2);
  t.deepEqual(before.predictions.shape, [2, 4, 1]);
  const rec = await exp.metaStep(episodes);
  t.is(rec.step, 1);
  t.true(Number.isFinite(rec.metaLoss));
  // The meta-loss is the mean of the episodes' query losses before the step.
  t.true(Math.abs(rec.metaLoss - (before.queryLoss[0] + before.queryLoss[1]) / 2) < 1e-5);
  const bad = { ...episodes[0], supportX: tensor(new Float32Array(6 * 3), [3, 2, 3]) };
  const err = await t.throwsAsync(exp.metaStep([bad]), { instanceOf: MetaplasticError });
  t.is(err.code, 'E_SHAPE');
  const nan = { ...episodes[0], queryY: tensor([NaN, 0, 0, 0], [4, 1]) };
  const nanErr = await t.throwsAsync(exp.runEpisodes([nan]));
  t.regex(nanErr.message, /non-finite/);
});

test('learned parameters can be read out by name', async (t) => {
  const exp = await Experiment.create(tinySine());
  const p = exp.param('plasticity.1');
  t.deepEqual(p.shape, [12, 12]);
  t.true(p.data.every((v) => Math.abs(v - 1e-4) < 1e-9));
  const s = exp.param('strength.0');
  t.deepEqual(s.shape, []);
  t.true(Math.abs(s.data[0] - 0.5) < 1e-7);
  exp.setParam('strength.0', tensor([0.25], []));
  t.true(Math.abs(exp.param('strength.0').data[0] - 0.25) < 1e-7);
  const err = t.throws(() => exp.param('nope'), { instanceOf: MetaplasticError });
  t.regex(err.message, /no parameter named 'nope'/);
  exp.dispose();
  t.throws(() => exp.params(), { message: /disposed/ });
});

test('a diverging learner: skipped steps are recorded, metrics stay readable, evaluation says it diverged', async (t) => {
  const { readMetrics } = await import('../src/index.js');
  const dir = tmp('diverge');
  await using run = await Run.open(dir, { config: tinySine(), overrides: { learner: { plasticity: { init: 0.5 }, meta: { maxConsecutiveSkips: 5 } } } });
  const exp = run.experiment;
  const result = await run.train({ steps: 3 });
  t.is(result.finalMetaLoss, null);
  t.is(result.skipped, 3);
  t.is(exp.skipped, 3);
  const metrics = await readMetrics(join(dir, 'metrics.jsonl'));
  t.deepEqual(metrics.map((m) => [m.step, m.metaLoss, m.skippedTotal]), [[1, null, 1], [2, null, 2], [3, null, 3]]);
  t.true(metrics.every((m) => m.skipped));
  const err = await t.throwsAsync(exp.evaluate({ runs: 3 }), { instanceOf: MetaplasticError });
  t.is(err.code, 'E_DATA');
  t.regex(err.message, /diverged during evaluation: the continual-order MSE is not finite in any of the 3 runs/);
  // Every step skipped: after maxConsecutiveSkips in a row, meta-training stops and says why.
  const stuck = await t.throwsAsync(exp.metaTrain({ steps: 100 }), { instanceOf: MetaplasticError });
  t.is(stuck.code, 'E_DATA');
  t.regex(stuck.message, /last 5 meta-steps \(up to step 5\) were all non-finite/);
});

test('two experiments train concurrently and both finish with the results of training alone', async (t) => {
  const [a, b] = await Promise.all([Experiment.create(tinySine()), Experiment.create(tinySine({ type: 'sgd', lr: 0.01 }))]);
  const [ra, rb] = await Promise.all([a.metaTrain({ steps: 4 }), b.metaTrain({ steps: 4 })]);
  t.is(ra.length, 4);
  t.is(rb.length, 4);
  const alone = await Experiment.create(tinySine());
  const r = await alone.metaTrain({ steps: 4 });
  t.deepEqual(r.map((x) => x.metaLoss), ra.map((x) => x.metaLoss));
});

test('evaluation summaries leave out and count the runs that diverged', async (t) => {
  const { summarizeRaw } = await import('../src/index.js');
  const order = (finalMse: (number | null)[]) => ({ finalMse, curve: finalMse.map((v) => [v, v]), perFunction: finalMse.map((v) => [v, v]) });
  const raw = { protocol: 'sine', runs: 3, functions: 2, continual: order([1, null, 3]), iid: order([2, 2, 2]) };
  const s = summarizeRaw(raw);
  if (s.protocol !== 'sine') return t.fail();
  t.is(s.continual.diverged, 1);
  t.is(s.continual.finalMse.n, 2);
  t.is(s.continual.finalMse.mean, 2);
  t.is(s.iid.diverged, undefined);
  t.is(s.iid.finalMse.n, 3);
});
