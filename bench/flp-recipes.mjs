// The "Training FLP" ablation (README): meta-trains one FLP recipe on incremental sine regression with the
// demo-size network (hidden 64-64-64), evaluates it, and appends one JSON line of figures to a results file.
//
//   node bench/flp-recipes.mjs RECIPE [--protocol demo|full] [--order continual|iid] [--steps N] [--seed S]
//                              [--runs R] [--out DIR] [--results FILE]
//   node bench/flp-recipes.mjs --list
//
// `demo` is the demo's protocol (10 functions × 5 minibatches × 32), `full` the paper's (× 40 minibatches).
// Run it with OMP_NUM_THREADS=1 (one intra-op thread), one process at a time on a small machine.
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { createHash } from 'node:crypto';
import { demoConfigs, mergeConfig, setThreads } from '../dist/index.js';
import { trainAndEvaluate } from './train-eval.mjs';

// Learner overrides on top of the demo's FLP learner as it shipped before issue 8 (the `shipped` recipe).
const SHIPPED = {
  rule: { type: 'oja' },
  feedback: { activation: 'relu', strength: { init: 0.5, learned: true }, outputIdentity: false },
  plasticity: { init: 1e-6, parameterization: 'linear', normalize: 'none', layerScale: false, hiddenMultiplier: 1 },
  meta: { lr: { forward: 1e-3, feedback: 1e-3, plasticity: 3e-6, strength: 1e-3 }, clipNorm: 1 },
};
// The recipe's ingredients, read from the demo's FLP learner (the flp-sine-demo preset) rather than restated.
const DEMO_FLP = demoConfigs().flp.learner;
const LMS = { normalize: DEMO_FLP.plasticity.normalize, parameterization: DEMO_FLP.plasticity.parameterization, hiddenMultiplier: DEMO_FLP.plasticity.hiddenMultiplier };
const LINEAR_FEEDBACK = { activation: DEMO_FLP.feedback.activation, strength: { init: DEMO_FLP.feedback.strength.init }, outputIdentity: DEMO_FLP.feedback.outputIdentity };
const RECIPE_RATES = { forward: DEMO_FLP.meta.lr.forward, plasticity: DEMO_FLP.meta.lr.plasticity };
// The recipe on top of SHIPPED, and one ingredient of it changed (the ablations).
const RECIPE = { rule: DEMO_FLP.rule, plasticity: { ...LMS, init: DEMO_FLP.plasticity.init }, feedback: LINEAR_FEEDBACK, meta: { lr: RECIPE_RATES } };
const ablate = (change) => mergeConfig(RECIPE, change);
const RECIPES = {
  // The cumulative path from the demo as shipped to the working recipe (docs/training-flp.md).
  shipped: {},
  // Log-space rates: P = exp(θ), Adam moves ln P by about lr per step; rates stay positive.
  log: { plasticity: { parameterization: 'log', init: 1e-6 }, meta: { lr: { plasticity: 1e-2 } } },
  // ÷ (1 + Σ_b ‖a_b‖²): normalised-LMS-like, the rate is relative to the presynaptic energy.
  'pre-log': { plasticity: { normalize: 'presynaptic', parameterization: 'log', init: 1e-3 }, meta: { lr: { plasticity: 1e-2 } } },
  // Linear feedback with strength 1 (ã = B e), the output's feedback starting at the identity (its update
  // starts as a normalised-LMS step), hidden layers 1000× slower at first.
  'lms-oja': { plasticity: { ...LMS, init: 0.1 }, feedback: LINEAR_FEEDBACK, meta: { lr: { plasticity: 1e-2 } } },
  // … starting at P = 1 with a 3× faster forward meta learning rate.
  'lms-oja-fast': { plasticity: { ...LMS, init: 1 }, feedback: LINEAR_FEEDBACK, meta: { lr: { forward: 3e-3, plasticity: 1e-2 } } },
  // … with the plain Hebbian rule: Oja's decay Σ_b ã² W, with ã carrying the error, erases what was learned.
  recipe: RECIPE,
  // Ablations of the recipe: one ingredient back to the shipped setting.
  'recipe-no-norm': ablate({ plasticity: { normalize: 'none', init: 1e-5 } }),
  'recipe-linear-rates': ablate({ plasticity: { parameterization: 'linear' } }),
  'recipe-relu-feedback': ablate({ feedback: { activation: 'relu' } }),
  'recipe-random-output-feedback': ablate({ feedback: { outputIdentity: false } }),
  // The demo's OML learner, for comparison (the overrides do not apply to it).
  oml: {},
  // Other normalisations tried.
  batch: { plasticity: { normalize: 'batch', parameterization: 'log', init: 1e-3 }, meta: { lr: { plasticity: 1e-2 } } },
  bounded: { plasticity: { normalize: 'bounded', parameterization: 'log', init: 1e-2 }, meta: { lr: { plasticity: 1e-2 } } },
};

function recipeConfig(recipe, protocol, seed, order) {
  const base = recipe === 'oml' ? demoConfigs({ seed }).oml : demoConfigs({ seed }).flp;
  const learner = recipe === 'oml' ? base.learner : mergeConfig(mergeConfig(base.learner, SHIPPED), RECIPES[recipe]);
  const task = { ...base.task, order, ...(protocol === 'full' ? { sine: { ...base.task.sine, batchesPerFunction: 40 } } : {}) };
  return { ...base, name: `flp-${recipe}-${protocol}${order === 'continual' ? '' : `-${order}`}`, learner, task };
}

/** Mean applied meta-loss over the 10% of steps ending at `step` (null when the run is shorter). */
function lossAt(records, step) {
  const w = Math.max(1, Math.round(step / 10));
  const xs = records.filter((r) => r.step > step - w && r.step <= step && r.metaLoss !== null).map((r) => r.metaLoss);
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    protocol: { type: 'string', default: 'demo' },
    // The order of the meta-training lifetimes' streams (evaluation reports both orders either way).
    order: { type: 'string', default: 'continual' },
    steps: { type: 'string', default: '1000' },
    seed: { type: 'string', default: '0' },
    runs: { type: 'string', default: '20' },
    out: { type: 'string' },
    results: { type: 'string', default: join('runs', 'flp-recipes', 'results.jsonl') },
    list: { type: 'boolean', default: false },
    // Continue the run in --out up to --steps (and evaluate again).
    resume: { type: 'boolean', default: false },
    // Extra learner overrides (JSON) on top of the recipe, for exploring; recorded in the results line.
    learner: { type: 'string' },
  },
});
if (values.list) {
  for (const [name, o] of Object.entries(RECIPES)) console.log(`${name.padEnd(20)} ${JSON.stringify(o)}`);
  process.exit(0);
}
const recipe = positionals[0];
if (!RECIPES[recipe]) throw new Error(`unknown recipe '${recipe}' (known: ${Object.keys(RECIPES).join(', ')})`);
if (!['demo', 'full'].includes(values.protocol)) throw new Error(`--protocol is demo or full`);
if (!['continual', 'iid'].includes(values.order)) throw new Error(`--order is continual or iid`);
const steps = Number(values.steps);
const seed = Number(values.seed);
const extra = values.learner ? JSON.parse(values.learner) : undefined;
const config = recipeConfig(recipe, values.protocol, seed, values.order);
if (extra) config.learner = mergeConfig(config.learner, extra);
const out = values.out ?? join('runs', 'flp-recipes', `${recipe}-${values.protocol}${values.order === 'continual' ? '' : `-${values.order}`}-s${seed}${extra ? '-' + createHash('sha1').update(values.learner).digest('hex').slice(0, 8) : ''}`);
if (!process.env.OMP_NUM_THREADS) setThreads(1);

const { train: t, eval: e, metrics: records } = await trainAndEvaluate({ config: values.resume ? undefined : config, out, steps, resume: values.resume, eval: { runs: Number(values.runs) } });
const marks = [100, 250, 500, 1000, 2000, 4000].filter((s) => s <= steps);
const stat = (s) => ({ mean: s.mean, ci: (s.ci95[1] - s.ci95[0]) / 2 });
const row = {
  recipe,
  protocol: values.protocol,
  order: values.order,
  seed,
  steps: t.steps,
  metaLoss: Object.fromEntries(marks.map((s) => [s, lossAt(records, s)])),
  continual: stat(e.file.result.continual.finalMse),
  iid: stat(e.file.result.iid.finalMse),
  diverged: [e.file.result.continual.diverged ?? 0, e.file.result.iid.diverged ?? 0],
  skipped: t.skipped,
  exploded: t.exploded,
  trainSeconds: Math.round(t.seconds),
  config: RECIPES[recipe],
  ...(extra ? { extra } : {}),
};
mkdirSync(dirname(values.results), { recursive: true });
appendFileSync(values.results, JSON.stringify(row) + '\n');
console.log(JSON.stringify(row));
