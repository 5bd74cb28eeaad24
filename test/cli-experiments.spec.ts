// The experiment commands (train, eval, compare, presets, demo) end to end on a tiny sine learner.
// Tests run serially: later ones use the runs the earlier ones trained.
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli, root } from './helpers.js';
import { runDemo } from '../src/cli/demo.js';
import { demoConfigs } from '../src/presets.js';
import { applySet, intList, positiveInt } from '../src/cli/args.js';
import { firstDifference } from '../src/config.js';
import { defaultRunDir } from '../src/cli/train.js';
import { preset, presetNames } from '../src/presets.js';

const tmp = mkdtempSync(join(tmpdir(), 'metaplastic-cli-exp-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const tiny = demoConfigs({ scale: 'tiny' });
const flpConfig = join(tmp, 'flp-tiny.json');
const omlConfig = join(tmp, 'oml-tiny.json');
writeFileSync(flpConfig, JSON.stringify(tiny.flp));
writeFileSync(omlConfig, JSON.stringify(tiny.oml));
const flpDir = join(tmp, 'flp');
const omlDir = join(tmp, 'oml');

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47]);
const metricsSteps = (dir: string) =>
  readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l).step);

test.serial('train writes config, metrics, checkpoint and a loss plot, and --json reports the run', (t) => {
  const r = cli(['train', '--config', flpConfig, '--steps', '4', '--out', flpDir, '--json']);
  t.is(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout);
  t.is(res.steps, 4);
  t.is(res.startStep, 0);
  t.is(res.out, flpDir);
  t.is(typeof res.finalMetaLoss, 'number');
  t.true(res.seconds >= 0);
  for (const f of ['config.json', 'metrics.jsonl', 'checkpoint.json', 'meta-loss.svg', 'meta-loss.png']) t.true(existsSync(join(flpDir, f)), f);
  t.deepEqual(metricsSteps(flpDir), [1, 2, 3, 4]);
  const saved = JSON.parse(readFileSync(join(flpDir, 'config.json'), 'utf8'));
  t.is(saved.name, 'flp-sine-demo');
  t.deepEqual(saved.task.sine.functions, 3);
  t.regex(r.stderr, /4\/4/); // progress went to stderr
});

test.serial('train refuses a fresh run into a directory that holds a checkpoint', (t) => {
  const r = cli(['train', '--config', flpConfig, '--steps', '6', '--out', flpDir]);
  t.is(r.status, 2);
  t.regex(r.stderr, /already holds a checkpoint/);
  t.regex(r.stderr, /--resume/);
  t.deepEqual(metricsSteps(flpDir), [1, 2, 3, 4]); // nothing changed
});

test.serial('train --resume continues to the larger total and refuses a directory without a checkpoint', (t) => {
  const r = cli(['train', '--resume', '--out', flpDir, '--steps', '7', '--json']);
  t.is(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout);
  t.is(res.startStep, 4);
  t.is(res.steps, 7);
  t.deepEqual(metricsSteps(flpDir), [1, 2, 3, 4, 5, 6, 7]);

  const none = cli(['train', '--resume', '--out', join(tmp, 'empty'), '--steps', '7']);
  t.is(none.status, 2);
  t.regex(none.stderr, /has no checkpoint/);

  const other = cli(['train', '--resume', '--out', flpDir, '--steps', '8', '--preset', 'oml-sine']);
  t.is(other.status, 2);
  t.regex(other.stderr, /another configuration/);
});

test.serial('train --preset with --set and --seed overrides fields', (t) => {
  const sets = ['learner.layers=[{"type":"linear","units":8},{"type":"linear","units":1}]', 'learner.rln=1', 'learner.inputShape=[4]'];
  for (const [k, v] of Object.entries(tiny.oml.task.type === 'sine' ? tiny.oml.task.sine! : {})) sets.push(`task.sine.${k}=${JSON.stringify(v)}`);
  const r = cli(['train', '--preset', 'oml-sine', ...sets.flatMap((s) => ['--set', s]), '--seed', '3', '--steps', '2', '--out', join(tmp, 'set'), '--json']);
  t.is(r.status, 0, r.stderr);
  const saved = JSON.parse(readFileSync(join(tmp, 'set', 'config.json'), 'utf8'));
  t.is(saved.seed, 3);
  t.is(saved.learner.seed, 3);
  t.is(saved.learner.layers[0].units, 8);
  t.is(saved.task.sine.poolSize, tiny.oml.task.type === 'sine' ? tiny.oml.task.sine!.poolSize : -1);
  t.is(defaultRunDir(saved), join('runs', 'oml-sine-3'));
});

test.serial('eval --json prints the evaluation, writes eval.json, and is byte-identical when repeated', (t) => {
  const r = cli(['eval', '--checkpoint', flpDir, '--runs', '4', '--seed', '1', '--json']);
  t.is(r.status, 0, r.stderr);
  const file = JSON.parse(r.stdout);
  t.is(file.format, 1);
  t.is(file.name, 'flp-sine-demo');
  t.is(file.checkpointStep, 7);
  t.is(file.seed, 1);
  t.is(file.result.protocol, 'sine');
  t.is(file.result.runs, 4);
  t.is(file.result.continual.curve.length, 3);
  t.is(typeof file.result.iid.finalMse.mean, 'number');
  const written = readFileSync(join(flpDir, 'eval.json'), 'utf8');
  t.is(written, r.stdout);
  for (const f of ['sine-curve.svg', 'sine-curve.png', 'sine-per-function.png']) t.true(existsSync(join(flpDir, f)), f);

  const again = cli(['eval', '--checkpoint', flpDir, '--runs', '4', '--seed', '1']);
  t.is(again.status, 0, again.stderr);
  t.regex(again.stdout, /continual/);
  t.regex(again.stdout, /95% CI/);
  t.is(readFileSync(join(flpDir, 'eval.json'), 'utf8'), written);
});

test.serial('compare prints both learners and writes the figures; a run without eval.json is named', (t) => {
  t.is(cli(['train', '--config', omlConfig, '--steps', '3', '--out', omlDir]).status, 0);
  const out = join(tmp, 'cmp');
  const missing = cli(['compare', flpDir, omlDir, '--out', out]);
  t.not(missing.status, 0);
  t.true(missing.stderr.includes(omlDir));
  t.regex(missing.stderr, /metaplastic eval/);

  t.is(cli(['eval', '--checkpoint', omlDir, '--runs', '4']).status, 0);
  const r = cli(['compare', flpDir, omlDir, '--out', out]);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /flp-sine-demo/);
  t.regex(r.stdout, /oml-sine-demo/);
  t.regex(r.stdout, /sine continual/);
  for (const name of ['meta-loss', 'sine-curve', 'sine-per-function']) {
    t.true(readFileSync(join(out, `${name}.png`)).subarray(0, 4).equals(PNG_MAGIC), name);
    t.regex(readFileSync(join(out, `${name}.svg`), 'utf8'), /<svg/);
  }
  const json = JSON.parse(cli(['compare', flpDir, omlDir, '--out', out, '--json']).stdout);
  t.deepEqual(
    json.learners.map((l: { name: string }) => l.name),
    ['flp-sine-demo', 'oml-sine-demo'],
  );
});

test.serial('presets lists every preset and prints one as parseable JSON', (t) => {
  const list = cli(['presets']);
  t.is(list.status, 0);
  for (const name of presetNames()) t.true(list.stdout.includes(name), name);
  const one = cli(['presets', 'flp-sine', '--json']);
  t.is(one.status, 0);
  t.deepEqual(JSON.parse(one.stdout), preset('flp-sine'));
  const bad = cli(['presets', 'nope']);
  t.is(bad.status, 2);
  t.regex(bad.stderr, /unknown preset 'nope'/);
});

test.serial('bad flags exit non-zero with a message naming the problem', (t) => {
  const cases: [string[], RegExp][] = [
    [['train', '--preset', 'nope', '--out', join(tmp, 'x')], /unknown preset 'nope'/],
    [['train', '--preset', 'flp-sine', '--steps', '-1'], /--steps.*'-1'/],
    [['train', '--preset', 'flp-sine', '--steps', 'ten'], /--steps.*positive integer/],
    [['eval', '--checkpoint', flpDir, '--classes', 'x'], /--classes.*'x'/],
    [['eval', '--checkpoint', flpDir, '--classes', '10,50'], /--classes applies to classification/],
    [['eval', '--checkpoint', flpDir, '--rate-bounds', '0.5,0'], /--rate-bounds.*positive numbers.*'0\.5,0'/],
    [['eval', '--checkpoint', flpDir, '--rate-bounds', '0.5'], /--rate-bounds applies to classification/],
    [['eval', '--checkpoint', join(tmp, 'empty')], /has no checkpoint/],
    [['train', '--steps', '3'], /--preset NAME or --config/],
    [['train', '--config', join(tmp, 'missing.json')], /missing\.json/],
    [['train', '--preset', 'flp-sine', '--set', 'novalue', '--out', join(tmp, 'x')], /key\.path=value/],
    [['reproduce', 'sine', '--learners', 'flp,anml', '--out', join(tmp, 'x')], /--learners.*flp and\/or oml.*'anml'/],
    [['reproduce', 'sine', '--every', '0', '--out', join(tmp, 'x')], /--every.*positive integer/],
  ];
  for (const [args, message] of cases) {
    const r = cli(args);
    t.not(r.status, 0, args.join(' '));
    t.regex(r.stderr, message, args.join(' '));
  }
  t.false(existsSync(join(tmp, 'x', 'checkpoint.json')));
});

test.serial('Ctrl-C saves a checkpoint and exits 130 with how to resume', async (t) => {
  const dir = join(tmp, 'interrupted');
  const child = spawn(process.execPath, ['--import=tsx', join(root, 'src', 'cli', 'run.ts'), 'train', '--config', omlConfig, '--steps', '1000000', '--out', dir], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // Interrupt once training has visibly started (the first metrics are on disk).
  const deadline = Date.now() + 60_000;
  while (!existsSync(join(dir, 'metrics.jsonl')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  child.kill('SIGINT');
  const code = await exited;
  t.is(code, 130, stderr);
  t.regex(stderr, /checkpoint saved/);
  t.regex(stderr, /--resume --out .*interrupted --steps 1000000/);
  const manifest = JSON.parse(readFileSync(join(dir, 'checkpoint.json'), 'utf8'));
  t.true(manifest.step > 0 && manifest.step < 1_000_000, String(manifest.step));
});

test.serial('reproduce --learners flp --every N trains one side and evaluates it at each multiple of N', (t) => {
  const out = join(tmp, 'reproduce-flp');
  const r = cli(['reproduce', 'sine', '--learners', 'flp', '--seeds', '0', '--steps', '3', '--every', '2', '--runs', '2', '--threads', '1', '--out', out]);
  t.is(r.status, 0, r.stderr);
  t.deepEqual(readdirSync(out).filter((f) => !f.includes('.')), ['flp-s0'], 'no OML run folder');
  t.deepEqual(readdirSync(join(out, 'flp-s0')).filter((f) => f.startsWith('eval-')).sort(), ['eval-2.json', 'eval-3.json']);
  t.regex(r.stdout, /\| flp-s0 \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \|/);
  t.notRegex(r.stdout, /oml-s0/);
});

test.serial('the demo pipeline trains, evaluates and compares both learners (tiny scale)', async (t) => {
  const out = join(tmp, 'demo');
  const lines: string[] = [];
  const text = await runDemo({ out, scale: 'tiny', steps: 3, runs: 3, log: (l) => lines.push(l), progress: 'silent' });
  t.regex(text, /flp-sine-demo/);
  t.regex(text, /oml-sine-demo/);
  t.regex(text, /sine continual/);
  t.regex(text, /demo finished in/);
  t.true(existsSync(join(out, 'sine-curve.png')));
  t.true(existsSync(join(out, 'flp-sine-demo', 'eval.json')));
  t.true(lines.some((l) => /meta-training flp-sine-demo/.test(l)));
  // A second run finds both checkpoints done and only re-evaluates.
  const again = await runDemo({ out, scale: 'tiny', steps: 3, runs: 3, log: (l) => lines.push(l), progress: 'silent' });
  t.regex(again, /flp-sine-demo/);
  t.true(lines.some((l) => /already at step 3/.test(l)));
});

test('demo configurations are the sine presets, reduced', (t) => {
  const small = demoConfigs();
  t.is(small.flp.learner.rule.type, preset('flp-sine').learner.rule.type);
  t.deepEqual(small.flp.learner.plasticity, preset('flp-sine').learner.plasticity);
  t.is(small.oml.learner.rule.type, 'sgd');
  t.true(small.flp.learner.layers.length < preset('flp-sine').learner.layers.length);
  t.true((small.flp.learner.plasticity?.init ?? 0) > 0);
  t.deepEqual(tiny.flp.learner.inputShape, [4]);
  t.is(demoConfigs({ seed: 5 }).oml.learner.seed, 5);
});

test('option parsers and --set', (t) => {
  t.is(positiveInt('12'), 12);
  t.throws(() => positiveInt('0'));
  t.throws(() => positiveInt('1.5'));
  t.deepEqual(intList('10, 50,100'), [10, 50, 100]);
  t.throws(() => intList('10,,50'));
  const c: Record<string, any> = { learner: { layers: [{ units: 3 }], rule: { type: 'oja' } } };
  applySet(c, 'learner.layers.0.units=64');
  applySet(c, 'learner.rule.type=hebb');
  applySet(c, 'learner.meta.clipNorm=null');
  applySet(c, 'metaBatch=4');
  t.deepEqual(c, { learner: { layers: [{ units: 64 }], rule: { type: 'hebb' }, meta: { clipNorm: null } }, metaBatch: 4 });
  t.throws(() => applySet(c, 'metaBatch.x.y=1'), { message: /metaBatch is 4/ });
  t.is(firstDifference({ a: { b: [1, 2] } }, { a: { b: [1, 2], c: 3 }, d: 4 }), null);
  t.is(firstDifference({ a: { b: [1, 2] } }, { a: { b: [1, 5] } }), 'a.b[1]: 2 ≠ 5');
});
