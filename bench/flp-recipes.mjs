// The "Training FLP" ablation (README): meta-trains one FLP recipe on incremental sine regression with the
// demo-size network (hidden 64-64-64), evaluates it, and appends one JSON line of figures to a results file.
//
//   node bench/flp-recipes.mjs RECIPE [--protocol demo|full] [--steps N] [--seed S] [--runs R]
//                              [--out DIR] [--results FILE]
//   node bench/flp-recipes.mjs --list
//
// `demo` is the demo's protocol (10 functions × 5 minibatches × 32), `full` the paper's (× 40 minibatches).
// Run it with OMP_NUM_THREADS=1 (one intra-op thread), one process at a time on a small machine.
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { demoConfigs } from '../dist/cli/demo.js';
import { mergeConfig } from '../dist/config.js';
import { trainRun } from '../dist/cli/train.js';
import { evalRun } from '../dist/cli/eval.js';
import { readRunMetrics } from '../dist/cli/runs.js';
import { setThreads } from '../dist/runtime.js';

// Learner overrides on top of the demo's FLP learner as it shipped before issue 8 (the `shipped` recipe).
const SHIPPED = {
  plasticity: { init: 1e-6, parameterization: 'linear', normalize: 'none', layerScale: false },
  meta: { lr: { forward: 1e-3, feedback: 1e-3, plasticity: 3e-6, strength: 1e-3 }, clipNorm: 1 },
};
const RECIPES = {
  shipped: {},
  // Log-space rates: P = exp(θ), Adam moves ln P by about lr per step.
  log: { plasticity: { parameterization: 'log', init: 1e-6 }, meta: { lr: { plasticity: 1e-2 } } },
  'log-3e-5': { plasticity: { parameterization: 'log', init: 3e-5 }, meta: { lr: { plasticity: 1e-2 } } },
  'log-scale': { plasticity: { parameterization: 'log', init: 3e-5, layerScale: true }, meta: { lr: { plasticity: 1e-2 } } },
  'log-layer': { plasticity: { parameterization: 'log', init: 3e-5, granularity: 'layer' }, meta: { lr: { plasticity: 3e-2 } } },
  // Batch-mean update (÷ B): the rate no longer scales with the minibatch.
  batch: { plasticity: { normalize: 'batch', init: 1e-3 }, meta: { lr: { plasticity: 3e-4 } } },
  'batch-log': { plasticity: { normalize: 'batch', parameterization: 'log', init: 1e-3 }, meta: { lr: { plasticity: 1e-2 } } },
  // ÷ (1 + Σ_b ‖a_b‖²): normalised-LMS-like, the rate is relative to the presynaptic energy.
  'pre-log': { plasticity: { normalize: 'presynaptic', parameterization: 'log', init: 1e-3 }, meta: { lr: { plasticity: 1e-2 } } },
  'pre-log-scale': { plasticity: { normalize: 'presynaptic', parameterization: 'log', init: 1e-3, layerScale: true }, meta: { lr: { plasticity: 1e-2 } } },
  'pre-log-linfb': { plasticity: { normalize: 'presynaptic', parameterization: 'log', init: 1e-3 }, feedback: { activation: 'linear' }, meta: { lr: { plasticity: 1e-2 } } },
  'pre-log-lr3': { plasticity: { normalize: 'presynaptic', parameterization: 'log', init: 1e-3 }, meta: { lr: { plasticity: 3e-2 } } },
  // Signed per-synapse rates θ (start 1) times a learned per-layer scale exp(σ_l) (start ln init).
  'scale': { plasticity: { layerScale: true, init: 1e-6 }, meta: { lr: { plasticity: 1e-2 } } },
  'pre-scale': { plasticity: { normalize: 'presynaptic', layerScale: true, init: 1e-3 }, meta: { lr: { plasticity: 1e-2 } } },
  // Linear feedback with strength 1 (ã = B e: the output layer's Oja update is normalised LMS with a decay),
  // presynaptic normalisation, log rates; hidden layers start 1000× slower (their random feedback at first
  // only disturbs the features) and grow multiplicatively if the meta-gradient says so.
  lms: {
    plasticity: { normalize: 'presynaptic', parameterization: 'log', init: 0.1, hiddenMultiplier: 1e-3 },
    feedback: { activation: 'linear', strength: { init: 1 } },
    meta: { lr: { plasticity: 1e-2 } },
  },
  // … and the output's feedback starts at the identity: its update starts as an LMS step, not a random-signed one.
  'lms-id': {
    plasticity: { normalize: 'presynaptic', parameterization: 'log', init: 0.1, hiddenMultiplier: 1e-3 },
    feedback: { activation: 'linear', strength: { init: 1 }, outputIdentity: true },
    meta: { lr: { plasticity: 1e-2 } },
  },
  // Row i ÷ (1 + Σ_b ã_bi²): stable by construction for 0 < P < 1.
  bounded: { plasticity: { normalize: 'bounded', init: 1e-2 }, meta: { lr: { plasticity: 1e-3 } } },
  'bounded-log': { plasticity: { normalize: 'bounded', parameterization: 'log', init: 1e-2 }, meta: { lr: { plasticity: 1e-2 } } },
  'bounded-log-scale': { plasticity: { normalize: 'bounded', parameterization: 'log', init: 1e-2, layerScale: true }, meta: { lr: { plasticity: 1e-2 } } },
};

function recipeConfig(recipe, protocol, seed) {
  const base = demoConfigs({ seed }).flp;
  const learner = mergeConfig(mergeConfig(base.learner, SHIPPED), RECIPES[recipe]);
  const task = protocol === 'full' ? { ...base.task, sine: { ...base.task.sine, batchesPerFunction: 40 } } : base.task;
  return { ...base, name: `flp-${recipe}-${protocol}`, learner, task };
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
    steps: { type: 'string', default: '1000' },
    seed: { type: 'string', default: '0' },
    runs: { type: 'string', default: '20' },
    out: { type: 'string' },
    results: { type: 'string', default: join('runs', 'flp-recipes', 'results.jsonl') },
    list: { type: 'boolean', default: false },
  },
});
if (values.list) {
  for (const [name, o] of Object.entries(RECIPES)) console.log(`${name.padEnd(20)} ${JSON.stringify(o)}`);
  process.exit(0);
}
const recipe = positionals[0];
if (!RECIPES[recipe]) throw new Error(`unknown recipe '${recipe}' (known: ${Object.keys(RECIPES).join(', ')})`);
if (!['demo', 'full'].includes(values.protocol)) throw new Error(`--protocol is demo or full`);
const steps = Number(values.steps);
const seed = Number(values.seed);
const config = recipeConfig(recipe, values.protocol, seed);
const out = values.out ?? join('runs', 'flp-recipes', `${recipe}-${values.protocol}-s${seed}`);
if (!process.env.OMP_NUM_THREADS) setThreads(1);

const t = await trainRun({ config, out, steps, resume: false, checkpointEvery: 250, progress: 'lines' });
const e = await evalRun({ checkpoint: out, runs: Number(values.runs), seed: 0, plots: false });
const records = await readRunMetrics(out);
const marks = [100, 250, 500, 1000, 2000, 4000].filter((s) => s <= steps);
const stat = (s) => ({ mean: s.mean, ci: (s.ci95[1] - s.ci95[0]) / 2 });
const row = {
  recipe,
  protocol: values.protocol,
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
};
mkdirSync(dirname(values.results), { recursive: true });
appendFileSync(values.results, JSON.stringify(row) + '\n');
console.log(JSON.stringify(row));
