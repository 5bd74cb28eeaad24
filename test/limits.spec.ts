// What a user can type that once killed the process or lost a run: sizes that cannot be allocated, thread
// counts, run counts, deep or non-JSON configurations, a broken addon, a run started over another one.
// Each is a named error, the process lives, and nothing on disk changes.
import test from 'ava';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Experiment, MetaplasticError, preset, Run, setThreads, type ExperimentConfig } from '../src/index.js';
import { addonFileProblem, nativeLocation } from '../src/native.js';
import { demoConfigs } from '../src/presets.js';
import { analyzeRun } from '../src/cli/analyze.js';
import { cli, root, snapshot } from './helpers.js';
import { omniglotFixture } from './omniglot-fixture.js';

const tmp = mkdtempSync(join(tmpdir(), 'metaplastic-limits-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const tiny = () => demoConfigs({ scale: 'tiny' });

async function rejects(t: any, p: Promise<unknown> | (() => unknown), code: string, re: RegExp): Promise<void> {
  const e = typeof p === 'function' ? t.throws(p) : await t.throwsAsync(p);
  t.true(e instanceof MetaplasticError, `not a MetaplasticError: ${e?.message}`);
  t.is(e?.code, code, e?.message);
  t.regex(e?.message ?? '', re);
}

test('sizes that cannot be allocated are named before anything is allocated (API)', async (t) => {
  const sine = preset('flp-sine-demo');
  const cases: [string, (c: ExperimentConfig) => void, RegExp][] = [
    ['units', (c) => ((c.learner.layers[0] as { units: number }).units = 2 ** 31), /learner\.layers\[0\].*2\^31/],
    ['queryPerFunction', (c) => (c.task.sine!.queryPerFunction = 2 ** 32), /task\.sine\.queryPerFunction/],
    ['poolSize', (c) => (c.task.sine!.poolSize = 1e11), /task\.sine\.poolSize.*GiB.*memory/],
    ['metaBatch', (c) => (c.metaBatch = 1e10), /metaBatch.*GiB.*memory/],
  ];
  for (const [, edit, message] of cases) {
    const c = structuredClone(sine);
    edit(c);
    await rejects(t, Experiment.create(c), 'E_CONFIG', message);
  }
});

test('the same sizes through the command line exit 2 with the field named, and leave no folder behind', (t) => {
  for (const set of ['learner.layers.0.units=2147483648', 'task.sine.queryPerFunction=4294967296', 'task.sine.poolSize=100000000000', 'metaBatch=10000000000']) {
    const out = join(tmp, `size-${set.split('=')[0]}`);
    const r = cli(['train', '--preset', 'flp-sine-demo', '--set', set, '--steps', '1', '--out', out]);
    t.is(r.status, 2, `${set}: ${r.stderr}`);
    t.regex(r.stderr, /\[E_CONFIG\]/);
    t.deepEqual(snapshot(out), {}, `${set} left files behind`);
  }
});

test('thread counts are bounded: a named error instead of thousands of threads', async (t) => {
  await rejects(t, () => setThreads(100_000), 'E_CONFIG', /threads: at most \d+ .*got 100000/);
  const exp = await Experiment.create(tiny().oml);
  await rejects(t, exp.metaTrain({ steps: 1, threads: 1e6 }), 'E_CONFIG', /threads: at most/);
  await rejects(t, exp.evaluate({ runs: 2, threads: 1e6 }), 'E_CONFIG', /threads: at most/);
  const r = cli(['train', '--config', writeConfig('threads', tiny().oml), '--threads', '100000', '--steps', '1', '--out', join(tmp, 'threads')]);
  t.is(r.status, 2, r.stderr);
  t.regex(r.stderr, /threads: at most/);
});

function writeConfig(name: string, config: unknown): string {
  const path = join(tmp, `${name}.json`);
  writeFileSync(path, typeof config === 'string' ? config : JSON.stringify(config));
  return path;
}

test('evaluation run counts are bounded before anything is computed', async (t) => {
  const exp = await Experiment.create(tiny().oml);
  await rejects(t, exp.evaluate({ runs: 100_000 }), 'E_CONFIG', /runs: at most 10000/);
  const dir = join(tmp, 'eval-bound');
  await exp.metaTrain({ steps: 1 });
  await exp.save(dir);
  const t0 = Date.now();
  const r = cli(['eval', '--checkpoint', dir, '--runs', '100000']);
  t.is(r.status, 2, r.stderr);
  t.regex(r.stderr, /\[E_CONFIG\].*runs: at most 10000/);
  t.true(Date.now() - t0 < 60_000);
  t.false(existsSync(join(dir, 'eval.json')));
});

test('configurations that are not plain JSON data are named: deep nesting, non-finite numbers, functions, symbols, prototype keys', async (t) => {
  let deep: Record<string, unknown> = {};
  const top = deep;
  for (let i = 0; i < 3000; i++) deep = deep.x = {} as Record<string, unknown>;
  await rejects(t, Experiment.create(tiny().oml, top as never), 'E_CONFIG', /nested more than 32 levels/);
  await rejects(t, Experiment.create({ ...tiny().oml, learner: { ...tiny().oml.learner, seed: Infinity } }), 'E_CONFIG', /learner\.seed: Infinity is not a finite number/);
  await rejects(t, Experiment.create(tiny().oml, { learner: { seed: (() => 1) as never } }), 'E_CONFIG', /learner\.seed: expected plain data \(JSON\), got a function/);
  await rejects(t, Experiment.create(tiny().oml, { name: Symbol('x') as never }), 'E_CONFIG', /name: expected plain data \(JSON\), got a Symbol/);
  await rejects(t, Experiment.create(tiny().oml, JSON.parse('{"__proto__": {"polluted": 1}}')), 'E_CONFIG', /__proto__/);
  t.is(({} as Record<string, unknown>).polluted, undefined);
  await rejects(t, () => preset('flp-sine', { learner: new Map() as never }), 'E_CONFIG', /learner: expected plain data/);
  await rejects(t, () => preset('toString'), 'E_CONFIG', /unknown preset 'toString'/);

  // From a file: 3,000 levels of JSON, and 1e400.
  const deepFile = writeConfig('deep', '{"learner":'.repeat(3000) + '1' + '}'.repeat(3000));
  const deepRun = cli(['train', '--config', deepFile, '--steps', '1', '--out', join(tmp, 'deep')]);
  t.is(deepRun.status, 2, deepRun.stderr);
  t.regex(deepRun.stderr, /\[E_CONFIG\].*nested more than 32 levels/);
  const big = cli(['train', '--preset', 'flp-sine-demo', '--config', writeConfig('big', '{"learner":{"meta":{"lr":{"forward":1e400}}}}'), '--steps', '1', '--out', join(tmp, 'big')]);
  t.is(big.status, 2, big.stderr);
  t.regex(big.stderr, /learner\.meta\.lr\.forward: Infinity is not a finite number/);
  const bigSet = cli(['train', '--preset', 'flp-sine-demo', '--set', 'learner.meta.lr.forward=1e400', '--steps', '1', '--out', join(tmp, 'big')]);
  t.is(bigSet.status, 2, bigSet.stderr);
  t.regex(bigSet.stderr, /Infinity is not a finite number/);
  for (const set of ['__proto__.polluted=1', 'learner.__proto__.x=1', 'constructor.prototype.x=1']) {
    const r = cli(['train', '--preset', 'flp-sine-demo', '--set', set, '--steps', '1', '--out', join(tmp, 'proto')]);
    t.is(r.status, 2, `${set}: ${r.stderr}`);
    t.regex(r.stderr, /is not a configuration field/);
    t.false(existsSync(join(tmp, 'proto')), `${set} created the run folder`);
  }
});

test('metaTrain options of the wrong kind are named', async (t) => {
  const exp = await Experiment.create(tiny().oml);
  await rejects(t, exp.metaTrain({ steps: 1, signal: 'x' as never }), 'E_CONFIG', /signal: expected an AbortSignal/);
  await rejects(t, exp.metaTrain({ steps: 1, onProgress: 3 as never }), 'E_CONFIG', /onProgress: expected a function/);
  await rejects(t, exp.metaTrain({ steps: 1, outDir: 'runs/x' } as never), 'E_CONFIG', /outDir: an experiment knows no folder: open a Run/);
  t.is(exp.step, 0);
  await rejects(t, Run.open(5 as never, { config: tiny().oml }), 'E_CONFIG', /dir: expected a run folder path/);
  await rejects(t, Run.open(join(tmp, 'opts'), null as never), 'E_CONFIG', /options: expected an object/);
  const run = await Run.open(join(tmp, 'opts'), { config: tiny().oml });
  await rejects(t, run.train({ steps: -1 }), 'E_CONFIG', /steps: expected a non-negative integer/);
  await rejects(t, run.train({ steps: 1, checkpointEvery: 1.5 }), 'E_CONFIG', /checkpointEvery: expected a non-negative integer/);
  run.close();
});

test('a Run refuses to start over another run in its folder unless asked, and continues its own', async (t) => {
  const dir = join(tmp, 'owned');
  const first = await Run.open(dir, { config: tiny().flp });
  await first.train({ steps: 3 });
  first.close();
  const before = snapshot(dir);

  // Another configuration, resumed or fresh: refused, the folder untouched and unlocked.
  await rejects(t, Run.open(dir, { config: tiny().oml }), 'E_USAGE', /holds a run trained with another configuration \(name: /);
  await rejects(t, Run.open(dir, { config: tiny().oml, resume: false }), 'E_USAGE', /already holds a checkpoint .*overwrite: true/);
  await rejects(t, Run.open(join(tmp, 'owned-none'), { resume: true }), 'E_USAGE', /no checkpoint to resume/);
  t.deepEqual(snapshot(dir), before, 'a refused Run.open changed the folder');

  // Its own folder: opened again (with its configuration or none), it continues.
  const again = await Run.open(dir, { config: tiny().flp });
  t.is((await again.train({ steps: 4 })).startStep, 3);
  again.close();
  const loaded = await Run.open(dir);
  await loaded.train({ steps: 5 });
  loaded.close();
  t.is((await Experiment.load(dir)).step, 5);

  // Asked: the old run's files go, the new run's checkpoint, configuration and metrics take their place.
  const other = await Run.open(dir, { config: tiny().oml, overwrite: true });
  await other.train({ steps: 2 });
  other.close();
  const replaced = await Experiment.load(dir);
  t.is(replaced.step, 2);
  t.is(replaced.name, tiny().oml.name);
  t.is(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).name, tiny().oml.name, "the old run's config.json stayed");
  t.deepEqual(readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step), [1, 2]);
});

test('a checkpoint manifest that names a file outside its folder is refused before the file is opened', async (t) => {
  const dir = join(tmp, 'escape');
  const exp = await Experiment.create(tiny().oml);
  await exp.save(dir);
  const manifest = JSON.parse(readFileSync(join(dir, 'checkpoint.json'), 'utf8'));
  writeFileSync(join(dir, 'checkpoint.json'), JSON.stringify({ ...manifest, tensorsFile: '../../../../etc/passwd' }));
  await rejects(t, Experiment.load(dir), 'E_CHECKPOINT', /not a file name inside the checkpoint folder/);
});

test('compare and analyze refuse to put a sine run and an image run on one axis', async (t) => {
  const sineDir = join(tmp, 'cmp-sine');
  const sine = await Experiment.create(tiny().oml);
  await sine.metaTrain({ steps: 1 });
  await sine.save(sineDir);
  const imageDir = join(tmp, 'cmp-image');
  const image = await Experiment.create({
    name: 'tiny-image',
    learner: { inputShape: [1, 28, 28], layers: [{ type: 'conv', channels: 2, kernel: 3, stride: 2 }, { type: 'linear', units: 8 }, { type: 'linear', units: 10 }], rln: 1, task: 'classification', rule: { type: 'sgd', lr: 0.05 } },
    task: { type: 'omniglot', data: { dir: omniglotFixture(), size: 28 }, episode: { ways: 2, shots: 1, queryShots: 1, labelSpace: 10 } },
  });
  await image.metaTrain({ steps: 1 });
  await image.save(imageDir);
  await rejects(t, analyzeRun({ checkpoint: sineDir, against: imageDir, log: () => {} }), 'E_USAGE', /run of the sine task and .* one of the omniglot task: .*mean squared error against cross-entropy/);
  t.false(existsSync(join(sineDir, 'analysis')));
  for (const dir of [sineDir, imageDir]) t.is(cli(['eval', '--checkpoint', dir, '--runs', '2', ...(dir === imageDir ? ['--classes', '2'] : [])]).status, 0);
  const r = cli(['compare', sineDir, imageDir, '--out', join(tmp, 'cmp')]);
  t.is(r.status, 2, r.stderr);
  t.regex(r.stderr, /run of the sine task and .* one of the omniglot task/);
});

test('--out below a read-only mount names the read-only file system, not ENOENT', (t) => {
  const mount = join(tmp, 'ro');
  mkdirSync(mount);
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro', 'tmpfs', mount]);
  if (mounted.status !== 0) {
    t.log(`cannot mount a read-only tmpfs here (${mounted.stderr}); checked the message on a file instead`);
    t.pass();
    return;
  }
  try {
    const r = cli(['train', '--config', writeConfig('ro', tiny().oml), '--steps', '1', '--out', join(mount, 'a', 'b')]);
    t.is(r.status, 1, r.stderr);
    t.regex(r.stderr, /\[E_IO\].*is on a read-only file system/);
    t.notRegex(r.stderr, /ENOENT/);
  } finally {
    spawnSync('umount', [mount]);
  }
});

test('a truncated or garbage addon is a named error, not SIGBUS or a raw loader message', (t) => {
  const addon = nativeLocation().addon;
  t.is(addonFileProblem(addon), null, 'the real addon passes the check');
  const truncated = join(tmp, 'truncated.node');
  writeFileSync(truncated, readFileSync(addon).subarray(0, 1000));
  const garbage = join(tmp, 'garbage.node');
  writeFileSync(garbage, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 251)));
  t.regex(addonFileProblem(truncated) ?? '', /cut short/);
  t.regex(addonFileProblem(garbage) ?? '', /not a shared library/);
  const copy = join(tmp, 'copy.node');
  copyFileSync(addon, copy);
  t.is(addonFileProblem(copy), null);
  for (const [file, message] of [[truncated, /cut short/], [garbage, /not a shared library/]] as const) {
    const r = spawnSync(process.execPath, ['--import=tsx', join(root, 'src', 'cli', 'run.ts'), 'info'], { cwd: root, encoding: 'utf8', env: { ...process.env, METAPLASTIC_ADDON: file } });
    t.is(r.signal, null, `${file}: killed by ${r.signal}`);
    t.is(r.status, 1, r.stderr);
    t.regex(r.stderr, /\[E_NATIVE_INVALID\]/);
    t.regex(r.stderr, message);
    t.regex(r.stderr, /Fix: rebuild it with `npm run setup`/);
  }
});
