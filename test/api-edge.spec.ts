// Whatever a TypeScript caller passes, every error is a MetaplasticError with a code naming the argument.
import test from 'ava';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir, hostname } from 'node:os';
import { join } from 'node:path';
import { Experiment, MetaplasticError, preset, Run, runtimeInfo, setThreads, tensor, type EpisodeData, type ExperimentConfig } from '../src/index.js';
import { LOCK_FILE } from '../src/run-lock.js';

const learner: ExperimentConfig['learner'] = { inputShape: [2], layers: [{ type: 'linear', units: 4 }, { type: 'linear', units: 1 }], task: 'regression', rule: { type: 'sgd', lr: 0.05 } };

const tinySine = () =>
  preset('oml-sine', { learner: { inputShape: [4], layers: [{ type: 'linear', units: 8 }, { type: 'linear', units: 1 }], rln: 0 }, task: { sine: { poolSize: 20, functions: 3, slots: 3, batchesPerFunction: 2, batchSize: 4, queryPerFunction: 5 } } });

function episode(T = 2, B = 2, Q = 3): EpisodeData {
  const v = (n: number) => new Float32Array(n).map((_, i) => Math.sin(i));
  return { supportX: tensor(v(T * B * 2), [T, B, 2]), supportY: tensor(v(T * B), [T, B, 1]), queryX: tensor(v(Q * 2), [Q, 2]), queryY: tensor(v(Q), [Q, 1]) };
}

async function rejects(t: any, p: Promise<unknown> | (() => unknown), code: string, re: RegExp): Promise<void> {
  const e = typeof p === 'function' ? t.throws(p) : await t.throwsAsync(p);
  t.true(e instanceof MetaplasticError, `not a MetaplasticError: ${e?.message}`);
  t.is(e.code, code, e.message);
  t.regex(e.message, re);
}

test('episodes of the wrong kind are named errors, not binding failures', async (t) => {
  const exp = await Experiment.forLearner(learner);
  const ep = episode();
  await rejects(t, exp.metaStep([{ ...ep, supportX: { data: Array.from(ep.supportX.data) as any, shape: ep.supportX.shape } }]), 'E_CONFIG', /episodes\[0\]\.supportX\.data: expected a Float32Array, got a plain Array/);
  await rejects(t, exp.metaStep([{ ...ep, queryX: { data: Float64Array.from(ep.queryX.data) as any, shape: ep.queryX.shape } }]), 'E_CONFIG', /queryX\.data: expected a Float32Array, got a Float64Array/);
  const { queryY: _, ...noQueryY } = ep;
  await rejects(t, exp.metaStep([noQueryY as any]), 'E_CONFIG', /episodes\[0\]\.queryY: is missing/);
  await rejects(t, exp.runEpisodes([null as any]), 'E_CONFIG', /episodes\[0\]: expected an episode object, got null/);
  await rejects(t, exp.metaStep(ep as any), 'E_CONFIG', /episodes: expected an array of episodes/);
  await rejects(t, exp.runEpisodes([]), 'E_CONFIG', /at least one episode/);
  await rejects(t, () => exp.setParam('forward.1.weight', { data: [1, 2, 3, 4] as any, shape: [1, 4] }), 'E_CONFIG', /value\.data: expected a Float32Array/);
  await rejects(t, () => exp.param(3 as any), 'E_CONFIG', /name/);
  t.is(exp.step, 0, 'nothing changed');
});

test('empty support or query sets and impossible shapes are named errors', async (t) => {
  const exp = await Experiment.forLearner(learner);
  await rejects(t, exp.metaStep([episode(0)]), 'E_SHAPE', /support set is empty/);
  await rejects(t, exp.metaStep([episode(2, 2, 0)]), 'E_SHAPE', /query set is empty/);
  t.is(exp.step, 0, 'an empty episode is not a (skipped) meta-step');
  t.is(exp.skipped, 0);
  const huge = { ...episode(), supportX: { data: new Float32Array(8), shape: [2 ** 31, 2 ** 31, 2] } };
  const e = (await t.throwsAsync(exp.metaStep([huge]))) as MetaplasticError;
  t.is(e.code, 'E_SHAPE');
  t.notRegex(e.message, /-\d{10,}/, 'no wrapped-around count');
  t.regex(e.message, /supportX\.shape \[2147483648, 2147483648, 2\]/);
});

test('evaluate: options that do not apply to the task are errors', async (t) => {
  const exp = await Experiment.create(tinySine());
  await rejects(t, exp.evaluate({ runs: 2, classes: [10] }), 'E_CONFIG', /options\.classes: applies to classification tasks; this experiment's task is sine/);
  await rejects(t, exp.evaluate({ runs: 2, stepScales: [1] }), 'E_CONFIG', /options\.stepScales/);
  await rejects(t, exp.evaluate({ runs: 2, rateBounds: [0.5] }), 'E_CONFIG', /options\.rateBounds: applies to classification tasks/);
  await rejects(t, exp.evaluate({ runz: 2 } as any), 'E_CONFIG', /options\.runz: unknown field/);
  await rejects(t, exp.evaluate({ runs: 0 }), 'E_CONFIG', /options\.runs/);
});

test('threads: metaTrain and evaluate take a thread count', async (t) => {
  const exp = await Experiment.create(tinySine());
  try {
    await exp.metaTrain({ steps: 1, threads: 2 });
    t.is(runtimeInfo().threads, 2);
    await exp.evaluate({ runs: 2, threads: 1 });
    t.is(runtimeInfo().threads, 1);
    await rejects(t, exp.metaTrain({ steps: 2, threads: 0 }), 'E_CONFIG', /threads/);
  } finally {
    setThreads(1);
  }
});

test('a run folder has one writer: a second one gets E_LOCKED; a stale lock is taken over', async (t) => {
  const cfg = tinySine();
  const dir = mkdtempSync(join(tmpdir(), 'mp-lock-'));
  const a = await Run.open(dir, { config: cfg });
  const first = a.train({ steps: 30 });
  await rejects(t, Run.open(dir, { config: cfg }), 'E_LOCKED', /in use by another run/);
  await first;
  t.true(existsSync(join(dir, LOCK_FILE)), 'held while the run is open');
  a.close();
  t.false(existsSync(join(dir, LOCK_FILE)), 'released on close');
  // Another live process on this host (our parent) holds it:
  writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: process.ppid, host: hostname(), started: 'then' }));
  await rejects(t, Run.open(dir, { config: cfg }), 'E_LOCKED', new RegExp(`pid ${process.ppid} on ${hostname()}`));
  // A dead owner: stale, taken over.
  writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: 2 ** 22 + 12345, host: hostname(), started: 'then' }));
  await using b = await Run.open(dir, { config: cfg });
  await b.train({ steps: 31 });
  t.is(b.experiment.step, 31);
});

test('an output folder that cannot be used is E_IO naming it', async (t) => {
  const file = join(mkdtempSync(join(tmpdir(), 'mp-io-')), 'a-file');
  writeFileSync(file, 'x');
  const config = { name: 'learner', learner, task: { type: 'custom' } } as ExperimentConfig;
  await rejects(t, Run.open(file, { config }), 'E_IO', new RegExp(`${file}.*--out`));
  await rejects(t, Run.open(join(file, 'below'), { config }), 'E_IO', /a-file\/below/);
});

test('cancellation reaches the engine inside a meta-step: the interrupted step changes nothing', async (t) => {
  // Long lifetimes (many inner steps): one meta-step takes seconds, so an abort lands inside it.
  const cfg = preset('flp-sine', { learner: { layers: [{ type: 'linear', units: 64 }, { type: 'linear', units: 64 }, { type: 'linear', units: 1 }], rln: 0 }, task: { sine: { functions: 10, batchesPerFunction: 400, batchSize: 32 } } });
  const exp = await Experiment.create(cfg);
  const before = exp.param('forward.0.weight').data.slice();
  const ctl = new AbortController();
  const run = exp.metaTrain({ steps: 1, signal: ctl.signal });
  setTimeout(() => ctl.abort(), 300);
  const e = (await t.throwsAsync(run)) as MetaplasticError;
  t.is(e.code, 'E_CANCELLED');
  t.is(exp.step, 0, 'the step in progress was stopped, not finished');
  t.deepEqual(exp.param('forward.0.weight').data, before);
});
