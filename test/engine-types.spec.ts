// The TypeScript types of configurations, options, records and results are generated from the engine's
// Rust definitions; the checked-in file must be what the current engine generates.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { ENGINE_TYPES, engineTypes } from '../scripts/generate-types.js';
import { checkConfig, Experiment, type ExperimentConfig } from '../src/index.js';
import { native } from '../src/native.js';

test('src/engine-types.ts is up to date with the engine (run `npm run generate:types` after changing a Rust type)', async (t) => {
  const generated = await engineTypes();
  const checkedIn = readFileSync(ENGINE_TYPES, 'utf8');
  t.true(generated === checkedIn, 'regenerating src/engine-types.ts changes it: run `npm run generate:types` and commit the result');
});

test('the generated types carry the Rust doc comments and serde defaults', (t) => {
  const ts = readFileSync(ENGINE_TYPES, 'utf8');
  t.regex(ts, /Number of front layers frozen during the inner loop \(still meta-learned\)\.\n\s*\*\n\s*\* Default: `0`\.\n\s*\*\/\n\s*rln\?: number;/);
  t.regex(ts, /metaLoss: number \| null;/, 'a value that may be non-finite is typed as nullable');
});

const learner: ExperimentConfig['learner'] = { inputShape: [3], layers: [{ type: 'linear', units: 4 }, { type: 'linear', units: 1 }], task: 'regression', rule: { type: 'oja' } };

test('configurations cross as objects: undefined fields are absent, large whole numbers stay integers', async (t) => {
  const exp = await Experiment.create({ learner: { ...learner, seed: 2 ** 40, rln: undefined }, task: { type: 'custom' }, seed: 2 ** 33 + 1 });
  t.is(exp.config.learner.seed, 2 ** 40);
  t.is(exp.config.seed, 2 ** 33 + 1);
  t.is(exp.config.learner.rln, 0, 'the engine fills in the default');
});

test('a non-finite or non-data value in a configuration is a named error', (t) => {
  const nan = t.throws(() => checkConfig({ learner: { ...learner, plasticity: { init: Number.NaN } }, task: { type: 'custom' } })) as { code?: string; message: string };
  t.is(nan.code, 'E_CONFIG');
  t.regex(nan.message, /learner\.plasticity\.init/);
  const big = t.throws(() => checkConfig({ learner: { ...learner, seed: 5n as unknown as number }, task: { type: 'custom' } })) as { code?: string; message: string };
  t.is(big.code, 'E_CONFIG');
  t.regex(big.message, /learner\.seed: expected plain data .*got a BigInt/);
});

test('only an object\'s own properties are read, as JSON.stringify reads them', (t) => {
  const config = Object.assign(Object.create({ inherited: 1 }), { learner, task: { type: 'custom' } });
  t.true(native.checkExperimentConfig(config).length > 0);
  const e = t.throws(() => native.checkExperimentConfig({ ...config, bogus: 1 })) as { code?: string; message: string };
  t.is(e.code, 'E_CONFIG');
  t.regex(e.message, /bogus/);
});
