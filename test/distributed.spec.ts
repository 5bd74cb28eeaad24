// Data-parallel meta-training across processes (c10d/Gloo on 127.0.0.1): a group of workers trains exactly
// as one process with the whole meta-batch, failures stop every worker with the lost rank named, and the
// run folder keeps a valid checkpoint.
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import { Experiment, distributedFromEnv, type ExperimentConfig } from '../src/index.js';
import { freeLoopbackPort, withoutOption } from '../src/cli/launch.js';
import { cli, root } from './helpers.js';

function config(metaBatch: number): ExperimentConfig {
  return {
    name: 'dist',
    seed: 11,
    metaBatch,
    learner: {
      inputShape: [4],
      layers: [{ type: 'linear', units: 8 }, { type: 'linear', units: 8 }, { type: 'linear', units: 1 }],
      task: 'regression',
      rule: { type: 'oja' },
      plasticity: { init: 0.001 },
      meta: { lr: { forward: 1e-3, plasticity: 1e-4 } },
      seed: 5,
    },
    task: { type: 'sine', sine: { poolSize: 20, functions: 3, slots: 3, batchesPerFunction: 2, batchSize: 4, queryPerFunction: 5 } },
  } as ExperimentConfig;
}

function configFile(metaBatch: number): string {
  const path = join(mkdtempSync(join(tmpdir(), 'metaplastic-dist-')), 'config.json');
  writeFileSync(path, JSON.stringify(config(metaBatch)));
  return path;
}

/** Largest difference between two experiments' parameters, relative to each parameter's scale. */
function paramGap(a: Experiment, b: Experiment): number {
  let worst = 0;
  for (const p of a.params()) {
    const x = a.param(p.name).data;
    const y = b.param(p.name).data;
    const scale = Math.max(1e-3, ...Array.from(x, Math.abs));
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]) / scale);
  }
  return worst;
}

const metaLosses = (dir: string) =>
  readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).metaLoss as number);

test('train --nproc 2 meta-trains like one process with the whole meta-batch, and writes one run folder', async (t) => {
  const cfg = configFile(4);
  const base = mkdtempSync(join(tmpdir(), 'metaplastic-dist-'));
  const [group, single] = [join(base, 'group'), join(base, 'single')];
  const g = cli(['train', '--config', cfg, '--steps', '5', '--out', group, '--nproc', '2', '--checkpoint-every', '2', '--json']);
  t.is(g.status, 0, g.stderr);
  const s = cli(['train', '--config', cfg, '--steps', '5', '--out', single, '--threads', '1']);
  t.is(s.status, 0, s.stderr);
  t.is(JSON.parse(g.stdout).steps, 5, 'rank 0 alone reports the run');
  const [a, b] = [metaLosses(group), metaLosses(single)];
  t.is(a.length, 5, 'one metrics line per step: only rank 0 writes');
  for (const [i, x] of a.entries()) t.true(Math.abs(x - b[i]) <= 1e-5 * Math.abs(b[i]), `step ${i + 1}: ${x} vs ${b[i]}`);
  const [eg, es] = [await Experiment.load(group), await Experiment.load(single)];
  t.is(eg.step, 5);
  t.true(paramGap(eg, es) < 2e-5, `parameters differ by ${paramGap(eg, es)}`);
  // The group's checkpoint resumes with the group's size only.
  const alone = cli(['train', '--resume', '--out', group, '--steps', '6', '--threads', '1']);
  t.is(alone.status, 2, alone.stderr);
  t.regex(alone.stderr, /meta-trained by 2 process\(es\).*--nproc 2/);
  const resumed = cli(['train', '--resume', '--out', group, '--steps', '7', '--nproc', '2']);
  t.is(resumed.status, 0, resumed.stderr);
  t.is((await Experiment.load(group)).step, 7);
});

test('metaTrain({ distributed: "env" }) from TypeScript: two worker processes equal one process with meta-batch 2E', async (t) => {
  const cfg = configFile(4);
  const dir = mkdtempSync(join(tmpdir(), 'metaplastic-dist-'));
  const port = await freeLoopbackPort();
  const runs = [0, 1].map((rank) => {
    const env = { ...process.env, RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) };
    const child = spawn(process.execPath, ['--import=tsx', join(root, 'test', 'fixtures', 'dist-worker.ts'), cfg, '5', join(dir, `rank${rank}.json`)], { cwd: root, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    return new Promise<string>((resolve) => child.on('exit', (code) => resolve(`exit ${code}: ${stderr}`)));
  });
  const exits = await Promise.all(runs);
  for (const e of exits) t.true(e.startsWith('exit 0'), e);
  const ranks = [0, 1].map((r) => JSON.parse(readFileSync(join(dir, `rank${r}.json`), 'utf8')));
  t.deepEqual(ranks.map((r) => [r.group.rank, r.group.worldSize, r.step]), [[0, 2, 5], [1, 2, 5]]);
  t.deepEqual(ranks[0].params, ranks[1].params, 'ranks hold identical parameters');
  const single = await Experiment.create(config(4));
  await single.metaTrain({ steps: 5 });
  for (const p of single.params()) {
    const want = single.param(p.name).data;
    const scale = Math.max(1e-3, ...Array.from(want, Math.abs));
    const got: number[] = ranks[0].params[p.name];
    const gap = Math.max(...got.map((x, i) => Math.abs(x - want[i]) / scale));
    t.true(gap < 2e-5, `${p.name}: the group differs from one process by ${gap}`);
  }
});

function worker(rank: number, args: string[], port: number) {
  const env = { ...process.env, RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) };
  const child = spawn(process.execPath, ['--import=tsx', join(root, 'src', 'cli', 'run.ts'), ...args], { cwd: root, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  // 'close', not 'exit': the last of stderr can arrive after the process exited.
  const exit = new Promise<{ code: number | null; at: number; stderr: string }>((resolve) => child.on('close', (code) => resolve({ code, at: Date.now(), stderr })));
  return { child, exit };
}

/** Two workers meta-training one long run into a fresh folder, returned once `file` appears in it (or after 120 s). */
async function trainingGroup(options: string[], file: string) {
  const out = mkdtempSync(join(tmpdir(), 'metaplastic-dist-'));
  const args = ['train', '--config', configFile(2), '--steps', '1000000', '--out', out, '--threads', '1', ...options];
  const port = await freeLoopbackPort();
  const [r0, r1] = [worker(0, args, port), worker(1, args, port)];
  const deadline = Date.now() + 120_000;
  while (!existsSync(join(out, file)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  return { out, r0, r1, reached: existsSync(join(out, file)) };
}

test('a killed worker stops the others within the timeout, naming its rank; the checkpoint stays valid', async (t) => {
  // Let the group train past its first checkpoint.
  const { out, r0, r1, reached } = await trainingGroup(['--checkpoint-every', '20', '--dist-timeout', '20'], 'checkpoint.json');
  t.true(reached, 'the group never reached its first checkpoint');
  const killedAt = Date.now();
  r1.child.kill('SIGKILL');
  const survivor = await r0.exit;
  t.is(survivor.code, 1, survivor.stderr);
  t.true(survivor.at - killedAt < 20_000, `rank 0 stopped ${survivor.at - killedAt} ms after the kill`);
  t.regex(survivor.stderr, /\[E_DIST\].*rank 1 \(.*\) exited, hung or became unreachable/);
  const exp = await Experiment.load(out); // intact: verified by its checksum
  t.true(exp.step >= 20 && exp.step % 20 === 0);
});

test('rendezvous settings from the environment: named errors for missing or bad variables', (t) => {
  t.is(distributedFromEnv({}), undefined);
  t.is(distributedFromEnv({ WORLD_SIZE: '1' }), undefined);
  t.deepEqual(distributedFromEnv({ WORLD_SIZE: '4', RANK: '3', MASTER_ADDR: 'node7', MASTER_PORT: '29500', GLOO_SOCKET_IFNAME: 'ib0', METAPLASTIC_DIST_TIMEOUT: '90' }), {
    rank: 3, worldSize: 4, masterAddr: 'node7', masterPort: 29500, ifname: 'ib0', timeoutSeconds: 90,
  });
  const bad: [NodeJS.ProcessEnv, RegExp][] = [
    [{ WORLD_SIZE: '2', MASTER_ADDR: 'h', MASTER_PORT: '1' }, /RANK: is not set/],
    [{ WORLD_SIZE: '2', RANK: '2', MASTER_ADDR: 'h', MASTER_PORT: '1' }, /RANK: expected an integer in 0 … 1, got "2"/],
    [{ WORLD_SIZE: 'two', RANK: '0' }, /WORLD_SIZE: expected an integer/],
    [{ WORLD_SIZE: '2', RANK: '0', MASTER_PORT: '29500' }, /MASTER_ADDR: is not set/],
    [{ WORLD_SIZE: '2', RANK: '0', MASTER_ADDR: 'h', MASTER_PORT: '70000' }, /MASTER_PORT: expected an integer in 1 … 65535/],
  ];
  for (const [env, message] of bad) t.throws(() => distributedFromEnv(env), { message });
  // The CLI reports them as configuration errors, before any work.
  const r = cli(['train', '--config', configFile(2), '--steps', '1'], { WORLD_SIZE: '2', RANK: '0', MASTER_PORT: '29500', MASTER_ADDR: '' });
  t.is(r.status, 2);
  t.regex(r.stderr, /MASTER_ADDR/);
  const nested = cli(['train', '--config', configFile(2), '--steps', '1', '--nproc', '2'], { WORLD_SIZE: '2', RANK: '0', MASTER_ADDR: 'h', MASTER_PORT: '29500' });
  t.is(nested.status, 2);
  t.regex(nested.stderr, /--nproc starts its own workers/);
  t.deepEqual(withoutOption(['train', '--nproc', '2', '--steps', '3', '--nproc=4'], '--nproc'), ['train', '--steps', '3']);
  t.deepEqual(withoutOption(['train', '--threads=2', '--steps', '3', '--threads', '1'], '--threads'), ['train', '--steps', '3']);
});

test('rank 0 killed: rank 1 stops with one named E_DIST line, no C++ frames', async (t) => {
  const { r0, r1, reached } = await trainingGroup(['--checkpoint-every', '0', '--dist-timeout', '10'], 'metrics.jsonl');
  t.true(reached, 'the group never started training');
  r0.child.kill('SIGKILL');
  const survivor = await r1.exit;
  t.is(survivor.code, 1, survivor.stderr);
  t.regex(survivor.stderr, /\[E_DIST\]/);
  const lines = survivor.stderr.trim().split('\n').filter((l) => !/^warning: the machine's load/.test(l));
  t.true(lines.length <= 3, `rank 1 printed ${lines.length} lines:\n${survivor.stderr}`);
  t.notRegex(survivor.stderr, /frame #|Exception raised from|c10::/);
});

test('the rendezvous honours --dist-timeout when something else answers on the port, and names an unresolvable MASTER_ADDR at once', async (t) => {
  // A program that accepts connections and never answers, as another group's store or an unrelated server would.
  const silent = createServer((socket) => socket.resume());
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const port = (silent.address() as AddressInfo).port;
  try {
    const args = ['train', '--config', configFile(2), '--steps', '2', '--out', mkdtempSync(join(tmpdir(), 'metaplastic-dist-')), '--threads', '1', '--dist-timeout', '3'];
    const t0 = Date.now();
    const r = await worker(1, args, port).exit;
    t.is(r.code, 1, r.stderr);
    t.true(r.at - t0 < 30_000, `took ${r.at - t0} ms with --dist-timeout 3`);
    t.regex(r.stderr, /\[E_DIST\].*could not join the group of 2 at 127\.0\.0\.1:\d+ within 3 s: something answers on that port/);
  } finally {
    silent.close();
  }
  const lost = cli(['train', '--config', configFile(2), '--steps', '2', '--threads', '1', '--dist-timeout', '30'], { RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: 'no-such-host.invalid', MASTER_PORT: '29500' });
  t.is(lost.status, 1, lost.stderr);
  t.regex(lost.stderr, /\[E_DIST\]: MASTER_ADDR "no-such-host\.invalid" \(rank 0's host\) does not resolve/);
});
