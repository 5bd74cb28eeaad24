#!/usr/bin/env node
// Benchmark harness: the engine's time per meta-step on the paper's sine nets, set against the machine's
// measured matmul rate and an independent PyTorch implementation of the same meta-step
// (bench/reference_flp.py). Reports figures; asserts nothing. See bench/README.md.
//
//   node bench/run.mjs [--quick | --full] [--filter NAME]... [--threads N] [--device cpu|cuda|auto]
//                      [--intervals K,K,...] [--python PATH] [--no-reference] [--out FILE | --json FILE]
//                      [--rounds N] [--compare EARLIER.json]
//
// FLP meta-steps are measured through the hand-derived reverse pass (the default, `meta.backward:
// 'auto'`), through it recomputing every segment instead of running steps backwards (`-recompute`,
// `meta.runBackwards: false`) and through autograd (`-autograd` scenarios, the reference path);
// `--intervals` adds the reverse pass at several checkpoint intervals (the memory/time curve).
// `--rounds N` measures each scenario N times, the engine and the reference taking turns (engine first in
// odd rounds, reference first in even ones); engine/ref is then the median of the rounds' ratios, so a
// machine whose speed changes during the run weighs on both sides alike. `--compare` prints this run
// against an earlier results file (as bench/compare.mjs does for two files).
//
// Every measurement runs in its own child process (this script with --child), one at a time, so each
// has a clean libtorch, its thread settings from the start, and its own peak memory.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { evalFlops, layerShapes, metaStepFlops } from './flops.mjs';
import { findTorchPython } from './python.mjs';
import { fmt, formatComparison, matmulPeak, pairedRatio, readReport, table, timings } from './report.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');

// ---------------------------------------------------------------------------------------------------
// Scenarios

/** The paper's sine network: 11 → 300 ×5 → 900 → 300 ×2 → 1 (docs/method.md §5.1). */
const SINE_UNITS = [300, 300, 300, 300, 300, 900, 300, 300, 1];
const SINE_INPUT = 11;

const NETS = {
  flp: { rule: 'oja', rln: 0, label: 'FLP (Oja, learned feedback, all 9 plastic)' },
  oml: { rule: 'sgd', rln: 6, label: 'OML (SGD lr 0.003, last 3 plastic)' },
};

const PROFILES = {
  // inner loop = functions × batchesPerFunction minibatches of 32 points; query 32 points per function
  quick: { functions: 1, batches: 10, warmup: 1, repeats: 2, evalRepeats: 1, evalRuns: 4, metaBatches: [1, 8], matmulN: 1024 },
  default: { functions: 1, batches: 40, warmup: 1, repeats: 5, evalRepeats: 3, evalRuns: 8, metaBatches: [1, 8], matmulN: 2048 },
  // The paper's full episode (10 functions × 40 minibatches = 400 inner steps). Autograd's FLP graph
  // takes ~10 GB per 400-step episode, so it runs at the smallest meta-batch only; the reverse pass keeps
  // O(T/k + k) weight copies per episode and runs them all (1, 8, 64 on a GPU: cudaMetaBatches).
  full: { functions: 10, batches: 40, warmup: 1, repeats: 3, evalRepeats: 2, evalRuns: 8, metaBatches: [1, 2, 4], cudaMetaBatches: [1, 8, 64], matmulN: 2048 },
};

function learnerConfig(net, device, backward = 'auto', checkpointEvery = null, runBackwards = true) {
  const layers = SINE_UNITS.map((units) => ({ type: 'linear', units }));
  const rule = net.rule === 'oja' ? { type: 'oja' } : { type: 'sgd', lr: 0.003, stepSizes: 'fixed', biases: true };
  return {
    inputShape: [SINE_INPUT],
    layers,
    rln: net.rln,
    task: 'regression',
    rule,
    feedback: { type: 'learned' },
    plasticity: { granularity: 'synapse', init: 0 },
    meta: { gradient: { type: 'secondOrder' }, backward, checkpointEvery, runBackwards },
    dtype: 'float32',
    device,
    seed: 1,
  };
}

function sineConfig(p) {
  return { poolSize: 400, functions: p.functions, slots: 10, batchesPerFunction: p.batches, batchSize: 32, queryPerFunction: 32 };
}

function scenarios(p, intervals) {
  const list = [];
  const steps = p.functions * p.batches;
  for (const [id, net] of Object.entries(NETS)) {
    for (const e of p.metaBatches) {
      const what = `${net.label}, second-order, ${e} episode(s)/meta-step`;
      if (id === 'flp') {
        list.push({ name: `flp-train-e${e}`, kind: 'train', net: id, metaBatch: e, steps, backward: 'auto', what: `${what}, reverse pass` });
        for (const k of intervals) {
          list.push({ name: `flp-train-e${e}-k${k}`, kind: 'train', net: id, metaBatch: e, steps, backward: 'adjoint', checkpointEvery: k, what: `${what}, reverse pass, checkpoint every ${k}` });
        }
        if (e === p.metaBatches[0]) {
          list.push({ name: `flp-train-e${e}-recompute`, kind: 'train', net: id, metaBatch: e, steps, backward: 'adjoint', runBackwards: false, what: `${what}, reverse pass recomputing every segment` });
          list.push({ name: `flp-train-e${e}-autograd`, kind: 'train', net: id, metaBatch: e, steps, backward: 'autograd', what: `${what}, autograd` });
        }
      } else {
        list.push({ name: `${id}-train-e${e}`, kind: 'train', net: id, metaBatch: e, steps, what });
      }
    }
  }
  for (const id of Object.keys(NETS)) {
    list.push({ name: `${id}-eval-r${p.evalRuns}`, kind: 'eval', net: id, runs: p.evalRuns, steps, what: `${NETS[id].label}, evaluation protocol (no meta-gradient), ${p.evalRuns} runs × 2 orders, batched` });
  }
  return list;
}

function netModel(id) {
  return { shapes: layerShapes(SINE_INPUT, SINE_UNITS), rln: NETS[id].rln, rule: NETS[id].rule, outputs: 1 };
}

function flopsOf(s, p) {
  const stream = { steps: p.functions * p.batches, batch: 32, query: 32 * p.functions };
  return s.kind === 'train' ? metaStepFlops(netModel(s.net), stream, s.metaBatch) : evalFlops(netModel(s.net), stream, s.runs, p.functions);
}

// ---------------------------------------------------------------------------------------------------
// Child: one engine measurement, printed as JSON on the last line of stdout

async function child(job) {
  // Thread settings are read when libtorch loads (OpenMP) and are per thread afterwards: set them first.
  process.env.OMP_NUM_THREADS = String(job.threads);
  process.env.MKL_NUM_THREADS = String(job.threads);
  const { native } = await import('../dist/native.js');
  native.setThreads(job.threads);
  const config = {
    name: `bench-${job.name}`,
    seed: 1,
    metaBatch: job.metaBatch ?? 1,
    learner: learnerConfig(NETS[job.net], job.device, job.backward, job.checkpointEvery, job.runBackwards ?? true),
    task: { type: 'sine', sine: sineConfig(job.profile), order: 'continual' },
  };
  const exp = await native.createExperiment(config);
  const out = { runtime: native.runtimeInfo() };
  if (job.kind === 'train') {
    if (job.warmup > 0) await exp.train(job.warmup);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const recs = await exp.train(job.repeats);
    out.wallSeconds = (performance.now() - t0) / 1000;
    out.cpuSeconds = cpuSeconds(process.cpuUsage(c0));
    out.seconds = recs.map((r) => r.seconds);
    out.metaLoss = recs.map((r) => r.metaLoss);
  } else {
    const opts = { runs: job.runs, seed: 7, maxBatch: job.runs };
    await exp.evaluate(opts); // warm-up
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    out.seconds = [];
    for (let i = 0; i < job.repeats; i++) {
      const t = performance.now();
      await exp.evaluate(opts);
      out.seconds.push((performance.now() - t) / 1000);
    }
    out.wallSeconds = (performance.now() - t0) / 1000;
    out.cpuSeconds = cpuSeconds(process.cpuUsage(c0));
  }
  out.maxRssMiB = process.resourceUsage().maxRSS / 1024;
  if (job.device === 'cuda') out.gpuMiB = gpuMemoryUsedMiB();
  console.log(JSON.stringify(out));
}

/**
 * GPU memory in use now, by `nvidia-smi` (null without it). Asked at the end of a measurement, while this
 * process alone holds the GPU: libtorch's caching allocator keeps what it reserved, so this is the peak it
 * reserved. The addon exposes no allocator statistics.
 */
function gpuMemoryUsedMiB() {
  const r = spawnSync('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits'], { encoding: 'utf8' });
  const used = r.status === 0 ? Number(r.stdout.trim().split('\n')[0]) : NaN;
  return Number.isFinite(used) ? used : null;
}

function cpuSeconds(u) {
  return (u.user + u.system) / 1e6;
}

// ---------------------------------------------------------------------------------------------------
// Parent

function lastJsonLine(text) {
  const lines = text.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

function runEngine(job) {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', JSON.stringify(job)], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) return { error: `engine exited with ${r.status ?? r.signal}: ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}` };
  return lastJsonLine(r.stdout);
}

function runReference(py, job, threads) {
  if (!py || py.error) return { error: py?.error ?? 'reference disabled' };
  const env = { ...py.env, OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) };
  const r = spawnSync(py.python, [join(here, 'reference_flp.py'), JSON.stringify({ ...job, threads })], { encoding: 'utf8', env, maxBuffer: 64 << 20 });
  if (r.status !== 0) return { error: `reference exited with ${r.status ?? r.signal}: ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}` };
  return lastJsonLine(r.stdout);
}

function cpuModel() {
  try {
    const m = readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m);
    return m ? m[1].trim() : os.cpus()[0]?.model;
  } catch {
    return os.cpus()[0]?.model ?? 'unknown';
  }
}

function gitCommit() {
  const r = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

async function main() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      full: { type: 'boolean', default: false },
      filter: { type: 'string', multiple: true, default: [] },
      threads: { type: 'string', default: '2' },
      intervals: { type: 'string', default: '' },
      device: { type: 'string', default: 'auto' },
      python: { type: 'string' },
      'no-reference': { type: 'boolean', default: false },
      out: { type: 'string', default: join(here, 'out', 'results.json') },
      json: { type: 'string' }, // the same as --out
      rounds: { type: 'string', default: '1' },
      compare: { type: 'string' },
      child: { type: 'string' },
    },
  });
  if (values.child) return child(JSON.parse(values.child));

  if (values.json) values.out = values.json;
  const profileName = values.full ? 'full' : values.quick ? 'quick' : 'default';
  let profile = PROFILES[profileName];
  const threads = Number(values.threads);
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`--threads must be a positive integer, got ${values.threads}`);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds must be a positive integer, got ${values.rounds}`);
  // Read before measuring: a missing or corrupt file should not cost a whole run.
  const earlier = values.compare ? readReport(values.compare) : null;
  const filters = values.filter.flatMap((f) => f.split(',')).filter(Boolean);

  // The engine's device decides the reference's.
  const probe = runEngine({ kind: 'eval', name: 'probe', net: 'oml', runs: 1, repeats: 0, threads, device: values.device, profile: { ...profile, functions: 1, batches: 1 } });
  if (probe.error) throw new Error(`the engine could not start: ${probe.error}\n  Build it first: node scripts/setup.mjs`);
  const runtime = probe.runtime;
  const device = runtime.device.startsWith('cuda') && values.device !== 'cpu' ? 'cuda' : 'cpu';
  if (device === 'cuda' && profile.cudaMetaBatches) profile = { ...profile, metaBatches: profile.cudaMetaBatches };
  const intervals = values.intervals.split(',').filter(Boolean).map(Number);
  if (intervals.some((k) => !Number.isInteger(k) || k < 1)) throw new Error(`--intervals must list positive integers, got ${values.intervals}`);
  const chosen = scenarios(profile, intervals).filter((s) => filters.length === 0 || filters.some((f) => s.name.includes(f)));
  const wantMatmul = filters.length === 0 || filters.some((f) => 'matmul'.includes(f));

  const py = values['no-reference'] ? { error: 'disabled with --no-reference' } : findTorchPython(root, values.python);
  const machine = {
    cpu: cpuModel(),
    cores: os.cpus().length,
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    threads,
    device,
    runtime,
    node: process.version,
    reference: py.error ? { unavailable: py.error } : { python: py.note, torch: py.version },
    loadAverageStart: os.loadavg(),
  };
  console.log(`metaplastic bench (${profileName}): ${machine.cpu}, ${machine.cores} cores, ${threads} thread(s), device ${device}, libtorch ${runtime.torchVersion}`);
  console.log(`inner loop: ${profile.functions} function(s) × ${profile.batches} minibatches of 32 = ${profile.functions * profile.batches} steps; query ${32 * profile.functions} points`);
  console.log(`reference: ${py.error ? `skipped (${py.error.split('\n')[0]})` : `${py.note}, torch ${py.version}`}\n`);

  // Matmul rate: a large square product (the machine's practical peak) and the nets' own product shape.
  let matmul = null;
  if (wantMatmul && !py.error) {
    const n = device === 'cuda' ? 8192 : profile.matmulN;
    const batched = profile.metaBatches.map((e) => [`bmm ${e}×[32×300]·[300×300]`, [e, 32, 300], [e, 300, 300]]);
    matmul = runReference(py, { kind: 'matmul', n, repeats: 5, minSeconds: 1, batched, device }, threads);
    if (matmul.error) console.log(`matmul: ${matmul.error}`);
    else for (const [k, v] of Object.entries(matmul)) if (v?.gflops) console.log(`matmul ${k === 'square' ? `${n}×${n} float32` : k}: ${fmt(v.gflops)} GFLOP/s`);
  } else if (wantMatmul) {
    console.log('matmul: skipped (needs the Python torch; the engine exposes no raw matmul)');
  }
  // The machine's limit: the best rate any measured matmul reached (cache-resident shapes usually win).
  const peak = matmulPeak(matmul);

  const results = [];
  for (const s of chosen) {
    const job = { ...s, threads, device, profile, warmup: profile.warmup, repeats: s.kind === 'train' ? (s.metaBatch > 1 ? Math.max(2, profile.repeats - 2) : profile.repeats) : profile.evalRepeats };
    process.stdout.write(`${s.name}: ${s.what} ... `);
    const r = measure(s, job, { py, rounds, profile, peak });
    console.log(r.error ?? `${fmt(r.msMedian, 0)} ms${r.reference?.msMedian ? ` (reference ${fmt(r.reference.msMedian, 0)} ms)` : ''}`);
    results.push(r);
  }
  machine.loadAverageEnd = os.loadavg();

  const ok = results.filter((r) => !r.error);
  console.log('\n' + table(ok, [
    ['scenario', (r) => r.name],
    ['steps', (r) => r.innerSteps],
    ['ms/step median', (r) => fmt(r.msMedian, 0)],
    ['ms min', (r) => fmt(r.msMin, 0)],
    ['episodes/s', (r) => fmt(r.episodesPerSecond, 2)],
    ['GFLOP', (r) => fmt(r.flops / 1e9, 1)],
    ['GFLOP/s', (r) => fmt(r.gflops, 1)],
    ['of matmul', (r) => (r.fractionOfMatmulPeak == null ? '-' : `${fmt(100 * r.fractionOfMatmulPeak, 0)}%`)],
    ['ref ms', (r) => fmt(r.reference?.msMedian, 0)],
    ['engine/ref', (r) => (r.engineOverReference ? `${fmt(r.engineOverReference, 2)}×` : '-')],
    ['engine/ref (min)', (r) => (r.engineOverReferenceMin ? `${fmt(r.engineOverReferenceMin, 2)}×` : '-')],
    ['cores busy', (r) => fmt(r.cpuCoresBusy, 2)],
    ['RSS MiB', (r) => r.maxRssMiB],
    ...(device === 'cuda' ? [['GPU MiB', (r) => r.gpuMiB ?? '-'], ['ref GPU MiB', (r) => (r.reference?.gpuMiB == null ? '-' : Math.round(r.reference.gpuMiB))]] : []),
  ]));
  if (matmul && !matmul.error) {
    const mm = Object.entries(matmul).filter(([, v]) => v?.gflops).map(([k, v]) => `${k === 'square' ? `${matmul.square.shapeA.join('×')} square` : k} ${fmt(v.gflops)} GFLOP/s`);
    console.log(`\nmatmul (float32, ${threads} thread(s), same libtorch, best of N): ${mm.join('; ')}`);
  }
  console.log(`"ms/step" is per meta-step (train) or per evaluate() call (eval: runs × 2 orders, batched). engine/ref < 1: the engine is faster.`);
  if (rounds > 1) console.log(`${rounds} rounds per scenario, engine and reference taking turns: times pool every round; engine/ref is the median of the rounds' ratios.`);
  console.log(`load average ${machine.loadAverageStart.map((x) => x.toFixed(2)).join(' ')} → ${machine.loadAverageEnd.map((x) => x.toFixed(2)).join(' ')} (other work on the machine inflates every figure)`);

  const report = { date: new Date().toISOString(), commit: gitCommit(), profile: { name: profileName, ...profile }, machine, matmul, scenarios: results };
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(values.out, JSON.stringify(report, null, 2) + '\n');
  console.log(`results: ${values.out}`);
  if (earlier) console.log(`\ncompared with ${values.compare}:\n${formatComparison(earlier, report, ['earlier', 'now'])}`);
}

/** The reference's job for a train scenario: the same meta-step in plain PyTorch. */
function referenceJob(s, job, profile) {
  const n = NETS[s.net];
  return {
    kind: 'meta', rule: n.rule, lr: 0.003, sizes: [SINE_INPUT, ...SINE_UNITS], rln: n.rln, metaBatch: s.metaBatch,
    functions: profile.functions, batchesPerFunction: profile.batches, batchSize: 32, queryPerFunction: 32, slots: 10,
    warmup: job.warmup, repeats: job.repeats, device: job.device,
  };
}

/** One scenario over `rounds` rounds (engine and reference taking turns), as one results entry. */
function measure(s, job, { py, rounds, profile, peak }) {
  const flops = flopsOf(s, profile);
  const r = { name: s.name, kind: s.kind, description: s.what, innerSteps: s.steps, flops, loadAverage: os.loadavg()[0] };
  const withReference = s.kind === 'train';
  const turns = [];
  let refError = withReference ? null : 'no reference for this kind';
  for (let k = 0; k < rounds; k++) {
    const turn = { engine: null, reference: null };
    const runRef = () => {
      if (refError) return;
      const ref = runReference(py, referenceJob(s, job, profile), job.threads);
      if (ref.error) refError = ref.error;
      else turn.reference = ref;
    };
    if (k % 2 === 1) runRef();
    turn.engine = runEngine(job);
    if (turn.engine.error) return { ...r, error: turn.engine.error };
    if (k % 2 === 0) runRef();
    turns.push(turn);
  }
  const times = timings(turns.flatMap((t) => t.engine.seconds), flops);
  const episodes = s.kind === 'train' ? s.metaBatch : 2 * s.runs;
  const sum = (f) => turns.reduce((acc, t) => acc + f(t.engine), 0);
  Object.assign(r, {
    episodes,
    rounds,
    ...times,
    episodesPerSecond: episodes / (times.msMedian / 1000),
    fractionOfMatmulPeak: peak ? times.gflops / peak : null,
    matmulPeakGflops: peak,
    cpuCoresBusy: sum((e) => e.cpuSeconds) / sum((e) => e.wallSeconds),
    maxRssMiB: Math.round(Math.max(...turns.map((t) => t.engine.maxRssMiB))),
    gpuMiB: turns.at(-1).engine.gpuMiB ?? null,
    metaLoss: turns[0].engine.metaLoss,
  });
  if (!withReference) return r;
  const refs = turns.filter((t) => t.reference).map((t) => t.reference);
  if (!refs.length) {
    r.reference = { error: refError };
    return r;
  }
  r.reference = {
    ...timings(refs.flatMap((x) => x.seconds), flops),
    maxRssMiB: Math.round(Math.max(...refs.map((x) => x.maxRssMiB))),
    gpuMiB: refs.at(-1).peakGpuMiB ?? null,
  };
  const paired = pairedRatio(turns.filter((t) => t.reference).map((t) => ({ engine: t.engine.seconds, reference: t.reference.seconds })));
  r.engineOverReference = paired.ratio;
  r.engineOverReferencePerRound = paired.perRound;
  r.engineOverReferenceMin = r.msMin / r.reference.msMin;
  return r;
}

main().catch((e) => {
  console.error(`bench failed: ${e.stack ?? e}`);
  process.exit(1);
});
