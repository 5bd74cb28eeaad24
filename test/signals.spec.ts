// Signals as a cluster sends them: SIGTERM and SIGHUP save like Ctrl-C and the run resumes exactly; the
// --nproc launcher's workers die with it however it dies, a stopped worker cannot keep it waiting, and the
// resume command it prints is the one that works.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Experiment } from '../src/index.js';
import { demoConfigs } from '../src/presets.js';
import { LOCK_FILE } from '../src/run-lock.js';
import { cli, root } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'metaplastic-signals-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));
const config = join(tmp, 'oml-tiny.json');
writeFileSync(config, JSON.stringify(demoConfigs({ scale: 'tiny' }).oml));

interface Running {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(args: string[]): Running {
  const child = spawn(process.execPath, ['--import=tsx', join(root, 'src', 'cli', 'run.ts'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdout!.resume();
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  return { child, stderr: () => stderr, exit };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, done: () => boolean, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const metaLosses = (dir: string) =>
  readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { step: number; metaLoss: number })
    .map(({ step, metaLoss }) => ({ step, metaLoss }));

/** Processes whose command line names `dir` (the workers of a run), with their environment's RANK. */
function processesOf(dir: string): { pid: number; rank: string | undefined }[] {
  const found: { pid: number; rank: string | undefined }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (!args.includes(dir)) continue;
      const state = readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]?.[0];
      if (state === 'Z') continue; // exited, not yet reaped
      const env = readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0');
      found.push({ pid: Number(entry), rank: env.find((v) => v.startsWith('RANK='))?.slice(5) });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

for (const signal of ['SIGTERM', 'SIGHUP'] as const) {
  test.serial(`${signal} to train saves a checkpoint, exits 130, and the run resumes exactly`, async (t) => {
    const dir = join(tmp, `stopped-${signal}`);
    const run = start(['train', '--config', config, '--steps', '1000000', '--out', dir, '--threads', '1', '--checkpoint-every', '0']);
    await until('the first metrics', () => existsSync(join(dir, 'metrics.jsonl')));
    run.child.kill(signal);
    const { code } = await run.exit;
    t.is(code, 130, run.stderr());
    t.regex(run.stderr(), new RegExp(`interrupted \\(${signal}\\); saving a checkpoint`));
    t.regex(run.stderr(), /checkpoint saved/);
    const stopped = (await Experiment.load(dir)).step;
    t.true(stopped > 0 && stopped < 1_000_000);

    // Resumed for three more steps, it takes exactly the steps of a run that was never stopped.
    const resumed = cli(['train', '--resume', '--out', dir, '--steps', String(stopped + 3), '--threads', '1']);
    t.is(resumed.status, 0, resumed.stderr);
    const straight = join(tmp, `straight-${signal}`);
    t.is(cli(['train', '--config', config, '--steps', String(stopped + 3), '--out', straight, '--threads', '1']).status, 0);
    t.deepEqual(metaLosses(dir), metaLosses(straight));
  });
}

test.serial('the --nproc workers save and stop when their launcher is killed with SIGKILL', async (t) => {
  const dir = join(tmp, 'orphans');
  const launcher = start(['train', '--config', config, '--steps', '1000000', '--out', dir, '--nproc', '2', '--dist-timeout', '10', '--checkpoint-every', '0']);
  await until('the first metrics', () => existsSync(join(dir, 'metrics.jsonl')));
  t.is(processesOf(dir).filter((p) => p.rank !== undefined).length, 2);
  launcher.child.kill('SIGKILL');
  await launcher.exit;
  await until('the workers to stop', () => processesOf(dir).length === 0, 60_000);
  t.false(existsSync(join(dir, LOCK_FILE)), 'the lock was left behind');
  const exp = await Experiment.load(dir); // saved as they stopped
  t.true(exp.step > 0);
  // Nobody holds the folder: the run resumes.
  const resumed = cli(['train', '--resume', '--out', dir, '--steps', String(exp.step + 1), '--nproc', '2']);
  t.is(resumed.status, 0, resumed.stderr);
});

test.serial('a stopped (SIGSTOP) worker cannot keep the launcher waiting: it is killed after the timeout', async (t) => {
  const dir = join(tmp, 'stopped-worker');
  const launcher = start(['train', '--config', config, '--steps', '1000000', '--out', dir, '--nproc', '2', '--dist-timeout', '3', '--checkpoint-every', '0']);
  await until('the first metrics', () => existsSync(join(dir, 'metrics.jsonl')));
  const worker = processesOf(dir).find((p) => p.rank === '1');
  t.truthy(worker);
  process.kill(worker!.pid, 'SIGSTOP');
  const t0 = Date.now();
  const { code } = await launcher.exit;
  t.not(code, 0, launcher.stderr());
  t.true(Date.now() - t0 < 60_000, `the launcher took ${Date.now() - t0} ms`);
  t.regex(launcher.stderr(), /E_DIST/);
  await until('the stopped worker to be gone', () => processesOf(dir).length === 0, 10_000);
});

test.serial('Ctrl-C under --nproc prints a resume command that includes --nproc, and it works', async (t) => {
  const dir = join(tmp, 'group-resume');
  const launcher = start(['train', '--config', config, '--steps', '1000000', '--out', dir, '--nproc', '2', '--checkpoint-every', '0']);
  await until('the first metrics', () => existsSync(join(dir, 'metrics.jsonl')));
  launcher.child.kill('SIGINT');
  const { code } = await launcher.exit;
  t.is(code, 130, launcher.stderr());
  const printed = /Resume with: metaplastic (train --resume --out \S+ --steps 1000000 --nproc 2)/.exec(launcher.stderr());
  t.truthy(printed, launcher.stderr());
  const step = (await Experiment.load(dir)).step;
  const args = printed![1].split(' ').map((a) => (a === '1000000' ? String(step + 2) : a));
  const resumed = cli(args);
  t.is(resumed.status, 0, resumed.stderr);
  t.is((await Experiment.load(dir)).step, step + 2);
});

test('metaBatch that does not split over --nproc is refused before any worker starts, leaving nothing behind', (t) => {
  const dir = join(tmp, 'uneven');
  const r = cli(['train', '--config', config, '--set', 'metaBatch=3', '--steps', '2', '--out', dir, '--nproc', '2']);
  t.is(r.status, 2, r.stderr);
  t.regex(r.stderr, /metaBatch: 3 episodes cannot be split evenly over 2 processes/);
  t.false(existsSync(join(dir, 'config.json')));
  t.notRegex(r.stderr, /keeps the last checkpoint/);
});
