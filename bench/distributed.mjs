#!/usr/bin/env node
// Data-parallel throughput: meta-training episodes per second with 1 process and with N local workers
// (`metaplastic train --nproc N`), on the paper's sine network with a shorter lifetime. Each run gets the
// same total threads (all cores): one process with every core, or N workers with a share each. Reports
// figures; asserts nothing. See bench/README.md.
//
//   node bench/distributed.mjs [--workers 1,2] [--steps 6] [--meta-batch 4] [--batches 10] [--json FILE]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: args } = parseArgs({
  options: {
    workers: { type: 'string', default: '1,2' },
    steps: { type: 'string', default: '6' },
    'meta-batch': { type: 'string', default: '4' },
    batches: { type: 'string', default: '10' },
    json: { type: 'string' },
  },
});
const workers = args.workers.split(',').map(Number);
const steps = Number(args.steps);
const metaBatch = Number(args['meta-batch']);
const cores = os.availableParallelism();

/** Seconds per meta-step after the first (rendezvous and warm-up excluded), from rank 0's metrics. */
function run(nproc) {
  const out = mkdtempSync(join(os.tmpdir(), 'metaplastic-bench-dist-'));
  const cmd = [join(root, 'bin', 'metaplastic.js'), 'train', '--preset', 'flp-sine', '--steps', String(steps), '--out', out, '--checkpoint-every', '0',
    '--set', `metaBatch=${metaBatch}`, '--set', `task.sine.batchesPerFunction=${args.batches}`];
  if (nproc > 1) cmd.push('--nproc', String(nproc));
  else cmd.push('--threads', String(cores));
  const load = os.loadavg()[0];
  const r = spawnSync(process.execPath, cmd, { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${nproc} worker(s) failed (exit ${r.status}): ${r.stderr}`);
  const records = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  rmSync(out, { recursive: true, force: true });
  const t = records.map((rec) => Date.parse(rec.time));
  const perStep = (t[t.length - 1] - t[0]) / 1000 / (t.length - 1);
  return { workers: nproc, threadsPerWorker: nproc > 1 ? Math.max(1, Math.floor(cores / nproc)) : cores, secondsPerMetaStep: perStep, episodesPerSecond: metaBatch / perStep, loadBefore: load };
}

const results = workers.map(run);
const base = results[0].episodesPerSecond;
console.log(`flp-sine net, ${metaBatch} episodes per meta-step of ${10 * Number(args.batches)} inner steps, ${cores} cores`);
console.log('workers  threads/worker  s/meta-step  episodes/s  vs 1 process  load before');
for (const r of results) {
  console.log(`${String(r.workers).padStart(7)}  ${String(r.threadsPerWorker).padStart(14)}  ${r.secondsPerMetaStep.toFixed(3).padStart(11)}  ${r.episodesPerSecond.toFixed(2).padStart(10)}  ${(r.episodesPerSecond / base).toFixed(2).padStart(11)}×  ${r.loadBefore.toFixed(2).padStart(11)}`);
}
if (args.json) writeFileSync(args.json, JSON.stringify({ cores, metaBatch, steps, results }, null, 2) + '\n');
