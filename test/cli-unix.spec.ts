// The command line as a Unix tool: a reader that closes the pipe early, unknown commands, the demo's
// learners as presets, and intervals that stay within what the quantity can be.
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli, root } from './helpers.js';
import { demoConfigs } from '../src/presets.js';
import { listPresets } from '../src/presets.js';
import type { EvalFile, SineOrderResult } from '../src/results.js';
import type { Stat } from '../src/stats.js';

const tmp = mkdtempSync(join(tmpdir(), 'metaplastic-cli-unix-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const tinyConfig = join(tmp, 'oml-tiny.json');
writeFileSync(tinyConfig, JSON.stringify(demoConfigs({ scale: 'tiny' }).oml));
const run = join(tmp, 'run');
const other = join(tmp, 'other');

interface PipeResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  read: string;
}

/**
 * Runs the CLI with stdout going to a reader that stops reading early: at once (`closeAfter` 0, so the first
 * write already meets a closed pipe), or after its first `closeAfter` bytes (as `| head -c N` does).
 */
function closedEarly(args: string[], closeAfter: number): Promise<PipeResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import=tsx', join(root, 'src', 'cli', 'run.ts'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let read = '';
    child.stderr.on('data', (d) => (stderr += d));
    if (closeAfter === 0) child.stdout.destroy();
    else {
      child.stdout.on('data', (d: Buffer) => {
        read += d.toString();
        if (read.length >= closeAfter) child.stdout.destroy();
      });
    }
    child.on('exit', (status, signal) => resolve({ status, signal, stderr, read }));
  });
}

test.serial('runs for the checks below', (t) => {
  for (const dir of [run, other]) {
    const r = cli(['train', '--config', tinyConfig, '--steps', '2', '--out', dir, '--threads', '1']);
    t.is(r.status, 0, r.stderr);
  }
  for (const dir of [run, other]) t.is(cli(['eval', '--checkpoint', dir, '--runs', '2']).status, 0);
});

// Every command that can print more than a pipe buffer, and the help.
const longOutputs: [string, string[]][] = [
  ['--help', ['--help']],
  ['train --help', ['train', '--help']],
  ['presets', ['presets']],
  ['presets NAME', ['presets', 'flp-omniglot']],
  ['presets --json', ['presets', '--json']],
  ['eval --json, many runs', ['eval', '--checkpoint', run, '--runs', '200', '--json', '--out', join(tmp, 'eval-many.json')]],
  ['compare', ['compare', run, other, '--out', join(tmp, 'cmp')]],
];

for (const [name, args] of longOutputs) {
  for (const closeAfter of [0, 1]) {
    test.serial(`${name}: a reader that closes the pipe ${closeAfter ? 'after the first bytes' : 'at once'} ends it quietly with exit 0`, async (t) => {
      const r = await closedEarly(args, closeAfter);
      t.is(r.signal, null);
      t.is(r.status, 0, r.stderr);
      t.notRegex(r.stderr, /EPIPE|Error| {4}at /, 'no stack trace');
      // eval and compare still report their progress on stderr (that is not the closed pipe); nothing else.
      if (args[0] === '--help' || args[1] === '--help' || args[0] === 'presets') t.is(r.stderr, '');
    });
  }
}

test('an unknown command fails with exit 2 and a suggestion, with or without --help', (t) => {
  for (const args of [['trian'], ['trian', '--help'], ['trian', '-h']]) {
    const r = cli(args);
    t.is(r.status, 2, args.join(' '));
    t.regex(r.stderr, /unknown command 'trian' \(did you mean 'train'\?\)/);
    t.is(r.stdout, '', 'no usage printed as if it succeeded');
  }
  const far = cli(['replicate', 'sine', '--help']);
  t.is(far.status, 2);
  t.regex(far.stderr, /unknown command 'replicate'/);
  t.notRegex(far.stderr, /did you mean/);
  // Known commands and the top-level help still work.
  t.is(cli(['--help']).status, 0);
  t.is(cli(['help', 'train']).status, 0);
  t.is(cli(['train', '--help']).status, 0);
  t.is(cli(['reproduce', 'sine', '--help']).status, 0);
});

test('the demo\'s learners are presets: listed, and the same configurations the demo trains', (t) => {
  const names = listPresets().map((p) => p.name);
  t.true(names.includes('flp-sine-demo') && names.includes('oml-sine-demo'));
  const listed = cli(['presets']);
  t.regex(listed.stdout, /^flp-sine-demo /m);
  t.regex(listed.stdout, /^oml-sine-demo /m);
  const demo = demoConfigs();
  for (const learner of ['flp', 'oml'] as const) {
    const printed = JSON.parse(cli(['presets', `${learner}-sine-demo`]).stdout);
    t.deepEqual(printed, demo[learner]);
  }
});

test.serial('training the demo\'s preset gives the meta-losses of the demo\'s own first steps', (t) => {
  const out = join(tmp, 'demo');
  const d = cli(['demo', '--steps', '3', '--runs', '2', '--out', out]);
  t.is(d.status, 0, d.stderr);
  for (const name of ['flp-sine-demo', 'oml-sine-demo']) {
    const dir = join(tmp, `preset-${name}`);
    const r = cli(['train', '--preset', name, '--steps', '3', '--out', dir, '--threads', '1']);
    t.is(r.status, 0, r.stderr);
    const losses = (f: string) => readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l).metaLoss as number);
    const fromDemo = losses(join(out, name, 'metrics.jsonl'));
    const fromPreset = losses(join(dir, 'metrics.jsonl'));
    t.is(fromPreset.length, 3);
    // The same steps; summation order across threads may move the last float32 bit.
    for (const [i, l] of fromDemo.entries()) t.true(Math.abs(l - fromPreset[i]) <= 1e-5 * Math.abs(l), `${name} step ${i + 1}: ${l} vs ${fromPreset[i]}`);
  }
});

function sineStats(file: EvalFile): Stat[] {
  if (file.result.protocol !== 'sine') throw new Error('expected a sine evaluation');
  const order = (o: SineOrderResult) => [o.finalMse, ...o.curve, ...o.perFunction];
  return [...order(file.result.continual), ...order(file.result.iid)];
}

test.serial('eval.json intervals of an MSE never go below 0, at 2 and at 50 runs, and say how they were computed', (t) => {
  for (const runs of [2, 50]) {
    const path = join(tmp, `eval-${runs}.json`);
    const r = cli(['eval', '--checkpoint', run, '--runs', String(runs), '--out', path]);
    t.is(r.status, 0, r.stderr);
    const file = JSON.parse(readFileSync(path, 'utf8')) as EvalFile;
    t.regex(file.interval ?? '', /percentile bootstrap/);
    for (const s of sineStats(file)) {
      t.is(s.n, runs);
      t.true(s.ci95[0] >= 0, `lower bound ${s.ci95[0]}`);
      t.true(s.ci95[0] <= s.mean && s.mean <= s.ci95[1]);
    }
  }
});
