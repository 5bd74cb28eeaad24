// The command line under misuse: exit codes, locked folders, unusable --out, flag names, Ctrl-C twice,
// eval --out, one run, info without a GPU.
import test from 'ava';
import { chmodSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli, root } from './helpers.js';
import { demoConfigs } from '../src/presets.js';
import { EXIT_CODE_TABLE, exitCodeFor } from '../src/cli/exit-codes.js';
import { contentionWarning } from '../src/cli/threads.js';
import { deviceNote } from '../src/cli/info.js';
import { restoreTerminal } from '../src/cli/progress.js';
import { interruptHandler, quitWithoutSaving } from '../src/cli/train.js';
import { LOCK_FILE } from '../src/run-lock.js';

const tmp = mkdtempSync(join(tmpdir(), 'mp-cli-robust-'));
const config = join(tmp, 'oml-tiny.json');
writeFileSync(config, JSON.stringify(demoConfigs({ scale: 'tiny' }).oml));
const run = join(tmp, 'run');

test.serial('a trained run for the checks below', (t) => {
  const r = cli(['train', '--config', config, '--steps', '10', '--out', run, '--threads', '1', '--json']);
  t.is(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout);
  t.is(res.threads, 1, '--threads reaches libtorch');
  t.is(res.metaLossSteps, 10, 'a 10-step run averages its 10 steps');
  t.false(existsSync(join(run, LOCK_FILE)), 'the lock is released');
});

test('one exit-code table: in --help, in the README, and used for each kind of error', (t) => {
  const help = cli(['--help']).stdout;
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  for (const row of EXIT_CODE_TABLE) {
    t.true(help.includes(`${String(row.code).padStart(3)}  ${row.meaning}`), `--help lists ${row.code}`);
    t.true(readme.includes(`| ${row.code} | ${row.meaning} |`), `README lists ${row.code}`);
  }
  t.is(exitCodeFor('E_DATA'), 1);
  t.is(exitCodeFor('E_CONFIG'), 2);
  t.is(cli(['frobnicate']).status, 2, 'unknown command');
  t.is(cli(['train', '--steps', 'ten']).status, 2, 'bad option value');
  t.is(cli(['train', '--preset', 'flp-sine', '--set', 'task.sine.batchSize=-1', '--out', join(tmp, 'bad')]).status, 2, 'configuration');
  t.is(cli(['data', 'omniglot', '--dir', mkdtempSync(join(tmpdir(), 'mp-none-')), '--verify']).status, 1, 'data');
  t.is(cli(['eval', '--checkpoint', join(tmp, 'none')]).status, 2, 'usage: no checkpoint there');
});

test('flags and fields are named: --seed, a typo deep in the task', (t) => {
  const seed = cli(['train', '--config', config, '--seed', '-3', '--out', join(tmp, 's')]);
  t.is(seed.status, 2);
  t.regex(seed.stderr, /--seed.*'-3'.*non-negative/);
  t.notRegex(seed.stderr, /learner\.seed/);
  const typo = cli(['train', '--config', config, '--set', 'task.sine.batchSiz=3', '--out', join(tmp, 't')]);
  t.is(typo.status, 2);
  t.regex(typo.stderr, /task\.sine\.batchSiz: unknown field/);
});

test('--out that is a file, or under a file, is E_IO with the path and what to do', (t) => {
  const file = join(tmp, 'a-file');
  writeFileSync(file, 'x');
  for (const out of [file, join(file, 'run')]) {
    const r = cli(['train', '--config', config, '--steps', '1', '--out', out]);
    t.is(r.status, 1, r.stderr);
    t.regex(r.stderr, new RegExp(`\\[E_IO\\]: cannot use ${out} as a run folder: .*choose a writable folder with --out`));
    t.notRegex(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

(process.getuid?.() === 0 ? test.skip : test)('--out under a read-only folder is E_IO (not checkable as root)', (t) => {
  const ro = mkdtempSync(join(tmpdir(), 'mp-ro-'));
  chmodSync(ro, 0o555);
  const r = cli(['train', '--config', config, '--steps', '1', '--out', join(ro, 'run')]);
  t.is(r.status, 1);
  t.regex(r.stderr, /\[E_IO\]/);
});

test.serial('a second writer on the same run folder gets E_LOCKED (exit 3); a stale lock is taken over', (t) => {
  writeFileSync(join(run, LOCK_FILE), JSON.stringify({ pid: process.pid, host: hostname(), started: 'now' }));
  const r = cli(['train', '--resume', '--out', run, '--steps', '12']);
  t.is(r.status, 3, r.stderr);
  t.regex(r.stderr, new RegExp(`\\[E_LOCKED\\]: .*in use by another run \\(pid ${process.pid} on ${hostname()}`));
  t.is(JSON.parse(readFileSync(join(run, 'checkpoint.json'), 'utf8')).step, 10, 'nothing written');
  writeFileSync(join(run, LOCK_FILE), JSON.stringify({ pid: 2 ** 22 + 4321, host: hostname(), started: 'then' }));
  const again = cli(['train', '--resume', '--out', run, '--steps', '12']);
  t.is(again.status, 0, again.stderr);
});

test.serial('eval --out FILE leaves the run folder untouched; --runs 1 says there is no interval', (t) => {
  const before = cli(['eval', '--checkpoint', run, '--runs', '2']);
  t.is(before.status, 0, before.stderr);
  const fig = join(run, 'sine-curve.svg');
  const stamp = statSync(fig).mtimeMs;
  const bytes = readFileSync(fig);
  const elsewhere = join(tmp, 'elsewhere', 'one-run.json');
  const r = cli(['eval', '--checkpoint', run, '--runs', '1', '--out', elsewhere]);
  t.is(r.status, 0, r.stderr);
  t.true(existsSync(elsewhere));
  t.is(statSync(fig).mtimeMs, stamp, "the run's figures are not rewritten");
  t.deepEqual(readFileSync(fig), bytes);
  t.true(existsSync(join(tmp, 'elsewhere', 'sine-curve.svg')), 'the figures go beside --out');
  t.regex(r.stdout, /1 run: no confidence interval/);
  t.notRegex(r.stdout, /95% CI/);
  t.regex(r.stderr, /no confidence interval \(use --runs 2 or more\)/);
});

test('a second Ctrl-C restores the terminal, says the last checkpoint is intact and exits 130', (t) => {
  const calls: string[] = [];
  const onSigint = interruptHandler(() => calls.push('save'), () => calls.push('quit'));
  onSigint();
  onSigint();
  onSigint();
  t.deepEqual(calls, ['save', 'quit', 'quit']);
  let out = '';
  let code = -1;
  quitWithoutSaving('run: the last checkpoint in runs/x is intact', { isTTY: true, write: (s: string) => {
    out += s;
    return true;
  } } as any, (c) => {
    code = c;
  });
  t.is(code, 130);
  t.true(out.startsWith('\x1b[?25h\x1b[?7h'), 'cursor and line wrap back first');
  t.regex(out, /last checkpoint in runs\/x is intact/);
});

test('restoreTerminal shows the cursor and turns line wrap back on, on a terminal only', (t) => {
  let out = '';
  restoreTerminal({ isTTY: true, write: (s: string) => {
    out += s;
    return true;
  } } as any);
  t.true(out.includes('\x1b[?25h') && out.includes('\x1b[?7h'));
  out = '';
  restoreTerminal({ isTTY: false, write: (s: string) => {
    out += s;
    return true;
  } } as any);
  t.is(out, '');
});

test('the contention warning follows the load', (t) => {
  t.is(contentionWarning(0.1, 8, 8), null);
  t.regex(contentionWarning(2.0, 2, 2) ?? '', /load \(2\.0 over the last minute on 2 cores\).*--threads N/);
});

test('info without a GPU says so; the loader message only with --verbose', (t) => {
  const facts = { driver: false, disabled: false, loadError: 'libcusparse.so.12: cannot open shared object file' };
  t.deepEqual(deviceNote({ cudaAvailable: false }, facts, false), ['no NVIDIA GPU found; using the CPU']);
  t.regex(deviceNote({ cudaAvailable: false }, facts, true).join('\n'), /CUDA loader: libcusparse/);
  t.regex(deviceNote({ cudaAvailable: false }, { ...facts, driver: true }, false)[0], /driver is present.*--verbose/);
  t.deepEqual(deviceNote({ cudaAvailable: true }, facts, false), []);
  const r = cli(['info']);
  t.is(r.status, 0);
  if (!JSON.parse(cli(['info', '--json']).stdout).cudaAvailable) t.notRegex(r.stdout, /cannot open shared object/);
});
