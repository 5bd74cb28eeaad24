// FLP against OML on Omniglot at equal budget with a reduced network (README "Training FLP"): both
// learners get the same small conv front at 28×28 (4 convs of 32 channels, frozen in the inner loop) and a
// plastic 128 → 1000 tail, the same number of meta-steps, then the continual meta-test at 10 and 50 classes.
//
//   METAPLASTIC_DATA=DIR node bench/omniglot-reduced.mjs PRESET [--steps N] [--runs R] [--seed S]
//                                                      [--out DIR] [--results FILE]
//
// PRESET is flp-omniglot, oml-omniglot or one of their -reference versions. Run with OMP_NUM_THREADS=1.
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { preset, setThreads } from '../dist/index.js';
import { trainAndEvaluate } from './train-eval.mjs';

const conv = (stride) => ({ type: 'conv', channels: 32, kernel: 3, stride, padding: 0 });
// 28 → 13 → 11 → 5 → 2: 32 × 2 × 2 = 128 features.
const FRONT = [conv(2), conv(1), conv(2), conv(2)];

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    steps: { type: 'string', default: '300' },
    runs: { type: 'string', default: '10' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string' },
    results: { type: 'string', default: join('runs', 'omniglot-reduced', 'results.jsonl') },
  },
});
const name = positionals[0];
if (!/^(flp|oml)-omniglot(-reference)?$/.test(name ?? '')) throw new Error('PRESET is flp-omniglot, oml-omniglot or a -reference version');
const seed = Number(values.seed);
const config = preset(name, { seed, task: { data: { size: 28 } }, learner: { inputShape: [1, 28, 28], rln: FRONT.length, seed } });
config.learner.layers = [...FRONT, { type: 'linear', units: 128 }, { type: 'linear', units: 1000 }];
const out = values.out ?? join('runs', 'omniglot-reduced', `${name}-s${seed}`);
if (!process.env.OMP_NUM_THREADS) setThreads(1);

const { train: t, eval: e } = await trainAndEvaluate({ config, out, steps: Number(values.steps), checkpointEvery: 100, eval: { runs: Number(values.runs), classes: [10, 50] } });
const row = {
  preset: name,
  seed,
  steps: t.steps,
  finalMetaLoss: t.finalMetaLoss,
  skipped: t.skipped,
  exploded: t.exploded,
  trainSeconds: Math.round(t.seconds),
  evalSeconds: Math.round(e.seconds),
  heldOut: Object.fromEntries(e.file.result.points.map((p) => [p.classes, { mean: p.heldOut.mean, ci: (p.heldOut.ci95[1] - p.heldOut.ci95[0]) / 2 }])),
};
mkdirSync(dirname(values.results), { recursive: true });
appendFileSync(values.results, JSON.stringify(row) + '\n');
console.log(JSON.stringify(row));
