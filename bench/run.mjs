#!/usr/bin/env node
// Benchmark harness: the engine's time per meta-step on the paper's sine nets, set against the machine's
// measured matmul rate and an independent PyTorch implementation of the same meta-step
// (bench/reference_flp.py). Reports figures; asserts nothing. See bench/README.md.
//
//   node bench/run.mjs [--quick | --full] [--filter NAME]... [--threads N] [--device cpu|cuda|auto]
//                      [--intervals K,K,...] [--python PATH] [--no-reference] [--out FILE | --json FILE]
//
// FLP meta-steps are measured through the hand-derived reverse pass (the default, `meta.backward:
// 'auto'`), through it recomputing every segment instead of running steps backwards (`-recompute`,
// `meta.runBackwards: false`) and through autograd (`-autograd` scenarios, the reference path);
// `--intervals` adds the reverse pass at several checkpoint intervals (the memory/time curve).
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

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

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

const fmt = (x, digits = 1) => (x == null || !Number.isFinite(x) ? '-' : x.toFixed(digits));

function table(rows, columns) {
  const cells = rows.map((r) => columns.map(([, f]) => String(f(r))));
  const widths = columns.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (vals) => '| ' + vals.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join(' | ') + ' |';
  const sep = '|' + widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|';
  return [line(columns.map(([h]) => h)), sep, ...cells.map(line)].join('\n');
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
      child: { type: 'string' },
    },
  });
  if (values.child) return child(JSON.parse(values.child));

  if (values.json) values.out = values.json;
  const profileName = values.full ? 'full' : values.quick ? 'quick' : 'default';
  let profile = PROFILES[profileName];
  const threads = Number(values.threads);
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`--threads must be a positive integer, got ${values.threads}`);
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
  const rates = matmul && !matmul.error ? Object.values(matmul).filter((v) => v?.gflops).map((v) => v.gflops) : [];
  const peak = rates.length ? Math.max(...rates) : null;

  const results = [];
  for (const s of chosen) {
    const job = { ...s, threads, device, profile, warmup: profile.warmup, repeats: s.kind === 'train' ? (s.metaBatch > 1 ? Math.max(2, profile.repeats - 2) : profile.repeats) : profile.evalRepeats };
    process.stdout.write(`${s.name}: ${s.what} ... `);
    const load = os.loadavg()[0];
    const eng = runEngine(job);
    const flops = flopsOf(s, profile);
    const r = { name: s.name, kind: s.kind, description: s.what, innerSteps: s.steps, flops, loadAverage: load };
    if (eng.error) {
      r.error = eng.error;
      console.log(eng.error);
      results.push(r);
      continue;
    }
    const sec = median(eng.seconds);
    const episodes = s.kind === 'train' ? s.metaBatch : 2 * s.runs;
    Object.assign(r, {
      episodes,
      msMedian: sec * 1000,
      msMin: Math.min(...eng.seconds) * 1000,
      samplesMs: eng.seconds.map((x) => +(x * 1000).toFixed(1)),
      episodesPerSecond: episodes / sec,
      gflops: flops / sec / 1e9,
      fractionOfMatmulPeak: peak ? flops / sec / 1e9 / peak : null,
      matmulPeakGflops: peak,
      cpuCoresBusy: eng.cpuSeconds / eng.wallSeconds,
      maxRssMiB: Math.round(eng.maxRssMiB),
      gpuMiB: eng.gpuMiB ?? null,
      metaLoss: eng.metaLoss,
    });
    if (s.kind === 'train') {
      const n = NETS[s.net];
      const refJob = {
        kind: 'meta', rule: n.rule, lr: 0.003, sizes: [SINE_INPUT, ...SINE_UNITS], rln: n.rln, metaBatch: s.metaBatch,
        functions: profile.functions, batchesPerFunction: profile.batches, batchSize: 32, queryPerFunction: 32, slots: 10,
        warmup: job.warmup, repeats: job.repeats, device,
      };
      const ref = runReference(py, refJob, threads);
      if (ref.error) r.reference = { error: ref.error };
      else {
        const refSec = median(ref.seconds);
        r.reference = { msMedian: refSec * 1000, msMin: Math.min(...ref.seconds) * 1000, samplesMs: ref.seconds.map((x) => +(x * 1000).toFixed(1)), gflops: flops / refSec / 1e9, maxRssMiB: Math.round(ref.maxRssMiB), gpuMiB: ref.peakGpuMiB ?? null };
        r.engineOverReference = sec / refSec;
        r.engineOverReferenceMin = r.msMin / r.reference.msMin;
      }
    }
    console.log(`${fmt(r.msMedian, 0)} ms${r.reference?.msMedian ? ` (reference ${fmt(r.reference.msMedian, 0)} ms)` : ''}`);
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
  console.log(`load average ${machine.loadAverageStart.map((x) => x.toFixed(2)).join(' ')} → ${machine.loadAverageEnd.map((x) => x.toFixed(2)).join(' ')} (other work on the machine inflates every figure)`);

  const report = { date: new Date().toISOString(), commit: gitCommit(), profile: { name: profileName, ...profile }, machine, matmul, scenarios: results };
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(values.out, JSON.stringify(report, null, 2) + '\n');
  console.log(`results: ${values.out}`);
}

main().catch((e) => {
  console.error(`bench failed: ${e.stack ?? e}`);
  process.exit(1);
});
