import test from 'ava';
import { Experiment, type ExperimentConfig } from '../src/index.js';
import { omniglotFixture } from './omniglot-fixture.js';

const omniglotDir = omniglotFixture();

// A small Omniglot learner: 28×28 input, one frozen conv, plastic 16 → 20-way output.
function tiny(rule: ExperimentConfig['learner']['rule'], extra: Partial<ExperimentConfig['learner']> = {}): ExperimentConfig {
  return {
    name: rule.type === 'sgd' ? 'tiny-oml' : 'tiny-flp',
    seed: 1,
    learner: {
      inputShape: [1, 28, 28],
      layers: [{ type: 'conv', channels: 4, kernel: 3, stride: 2 }, { type: 'linear', units: 16 }, { type: 'linear', units: 20 }],
      rln: 1,
      task: 'classification',
      rule,
      plasticity: { init: 1e-3 },
      feedback: { strength: { init: 1, learned: false } },
      ...extra,
    },
    task: { type: 'omniglot', data: { dir: omniglotDir, size: 28 }, episode: { ways: 3, shots: 2, queryShots: 2, labelSpace: 20 } },
  };
}

test('Omniglot: meta-train a few steps and evaluate on the class schedule', async (t) => {
  for (const cfg of [tiny({ type: 'oja' }), tiny({ type: 'sgd', lr: 0.05 }, { outputReset: 'episodeClasses' })]) {
    const exp = await Experiment.create(cfg);
    const records = await exp.metaTrain({ steps: 3 });
    t.is(records.length, 3);
    t.true(records.every((r) => Number.isFinite(r.metaLoss)));
    const ev = await exp.evaluate({ runs: 2, classes: [5, 10], validationRuns: 1, stepScales: [0.5, 1] });
    t.is(ev.result.protocol, 'omniglot');
    if (ev.result.protocol !== 'omniglot') continue;
    t.deepEqual(ev.result.points.map((p) => p.classes), [5, 10]);
    for (const p of ev.result.points) {
      for (const s of [p.heldOut, p.train]) {
        t.is(s.n, 2);
        t.true(s.mean >= 0 && s.mean <= 1);
        t.true(s.ci95[0] >= 0 && s.ci95[0] <= s.mean && s.mean <= s.ci95[1] && s.ci95[1] <= 1, `interval [${s.ci95}] leaves [0, 1]`);
      }
      // Gradient learners report the step size chosen on validation; local rules have none.
      if (cfg.learner.rule.type === 'sgd') t.true(p.stepSize === 0.025 || p.stepSize === 0.05, String(p.stepSize));
      else t.is(p.stepSize, undefined);
    }
    t.deepEqual(await exp.evaluate({ runs: 2, classes: [5, 10], validationRuns: 1, stepScales: [0.5, 1] }), ev);
    // Accuracy intervals stay in [0, 1] at 50 runs too.
    const many = await exp.evaluate({ runs: 50, classes: [5], validationRuns: 1, stepScales: [1] });
    if (many.result.protocol !== 'omniglot') continue;
    for (const s of many.result.points.flatMap((p) => [p.heldOut, p.train])) t.true(s.ci95[0] >= 0 && s.ci95[1] <= 1, `interval [${s.ci95}]`);
  }
});

test('Omniglot: rate bounds for local rules are chosen on validation, reported, and ignored by gradient learners', async (t) => {
  const flp = await Experiment.create(tiny({ type: 'oja' }, { plasticity: { init: 0.5, maxRate: 2 } }));
  const options = { runs: 2, classes: [5, 10], validationRuns: 1, rateBounds: [1, 0.01] };
  const ev = await flp.evaluate(options);
  if (ev.result.protocol !== 'omniglot') return t.fail('not an Omniglot evaluation');
  // The candidates: the learner's own bound (2) and each given one.
  for (const p of ev.result.points) t.true([2, 1, 0.01].includes(p.rateBound ?? Number.NaN), `rate bound ${p.rateBound}`);
  t.deepEqual(await flp.evaluate(options), ev, 'the choice is a pure function of learner, seed and options');
  // Without candidates there is no sweep: the learner's own bound is used and not reported.
  const plain = await flp.evaluate({ runs: 2, classes: [5], validationRuns: 1 });
  if (plain.result.protocol === 'omniglot') t.is(plain.result.points[0].rateBound, undefined);
  for (const bad of [[0], [-1], [Number.POSITIVE_INFINITY]]) {
    const e = await t.throwsAsync(flp.evaluate({ runs: 2, classes: [5], rateBounds: bad }));
    t.regex(e.message, /rateBounds/);
  }
  const oml = await Experiment.create(tiny({ type: 'sgd', lr: 0.05 }, { outputReset: 'episodeClasses' }));
  const evo = await oml.evaluate({ ...options, stepScales: [1] });
  if (evo.result.protocol === 'omniglot') t.true(evo.result.points.every((p) => p.rateBound === undefined && p.stepSize === 0.05));
});

test('Omniglot: a learner that does not fit the task is refused naming the field', async (t) => {
  const wrongShape = tiny({ type: 'oja' }, { inputShape: [1, 84, 84] });
  const e1 = await t.throwsAsync(Experiment.create(wrongShape));
  t.regex(e1.message, /learner\.inputShape/);
  const tooFewOutputs = tiny({ type: 'oja' }, { layers: [{ type: 'conv', channels: 4, kernel: 3, stride: 2 }, { type: 'linear', units: 16 }, { type: 'linear', units: 10 }] });
  const e2 = await t.throwsAsync(Experiment.create(tooFewOutputs));
  t.regex(e2.message, /learner\.layers.*needs at least 20/);
  const exp = await Experiment.create(tiny({ type: 'oja' }));
  const e3 = await t.throwsAsync(exp.evaluate({ runs: 1, classes: [25] }));
  t.regex(e3.message, /classes/);
});

test('Omniglot: analysis of a class stream; the clamped output layer changes one row per image', async (t) => {
  using exp = await Experiment.create(tiny({ type: 'hebb' }));
  const a = await exp.analyze({ classes: 4, every: 2 });
  t.is(a.protocol, 'images');
  t.is(a.tasks, 4);
  t.is(a.steps, 4 * 15); // drawings 1–15 of each class, one per step
  const out = a.layers[a.layers.length - 1];
  // Hebb with ã clamped to onehot(y): ΔW = P ⊙ onehot(y) aᵀ, one row of 20; rows of different classes are disjoint.
  t.true(Math.abs(out.rowsChanged.mean! - 1 / 20) < 1e-12 && out.rowsChanged.std! < 1e-12);
  t.is(out.overlapAcross.mean, 0);
  t.true(out.overlapWithin.mean! > 0);
  for (const r of a.runs[0].effectiveRank[a.layers.length - 1]) t.true(r! >= 1 - 1e-6);
  const e = await t.throwsAsync(exp.analyze({ classes: 50 }));
  t.is((e as { code?: string }).code, 'E_CONFIG');
});
