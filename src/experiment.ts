/**
 * Experiments from TypeScript: create one from a preset or a configuration, meta-train it off the JS
 * thread with progress, cancellation and checkpoints, evaluate it with the paper's protocols, save and
 * load it. The numerical work runs in the native engine; this module orchestrates.
 */
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import { join, resolve } from 'node:path';
import { native, wrapNativeObject, type EpisodeResult, type NativeExperiment } from './native.js';
import { configError, MetaplasticError } from './errors.js';
import { mergeConfig, type DeepPartial, type ExperimentConfig } from './config.js';
import { preset } from './presets.js';
import { CI_METHOD, summarize, summarizeCurves } from './stats.js';
import { stableStringify, type EvalFile, type MetricsRecord, type OmniglotEvalResult, type SineEvalResult, type SineOrderResult } from './results.js';
import type { EpisodeData } from './episode.js';
import type { TensorData } from './tensor.js';
import { checkConfigData, checkEpisodes, checkPositiveInt, checkTensor } from './validate.js';
import { clearRunFiles, METRICS_FILE, refuseExistingRun } from './run-folder.js';
import { holds, lockRunDir, type RunLock } from './run-lock.js';
import { setThreads } from './runtime.js';
import { distributedFromEnv, sameGroup, type GroupSettings } from './distributed.js';
import type { Analysis, AnalyzeOptions, Learned } from './analysis.js';
import type { EvalOptions as EngineEvalOptions, EvalRaw, OmniglotPointRaw, ParamInfo, SineOrderRaw, StepRecord } from './engine-types.js';

export type { ParamInfo, StepRecord } from './engine-types.js';

export interface ProgressEvent {
  step: number;
  totalSteps: number;
  /** null when the step was skipped as non-finite. */
  metaLoss: number | null;
  /** null when not finite. */
  gradNorm: number | null;
  /** Adam learning rate of each parameter group. */
  lr: Record<string, number>;
  /** Non-finite meta-steps skipped so far. */
  skipped: number;
  /** Exploded lifetimes (finite meta-loss far above the recent median) skipped so far. */
  exploded: number;
  /** Meta-steps per second over the last chunk. */
  stepsPerSec: number;
}

export interface MetaTrainOptions {
  /** The run's total number of meta-steps: training continues from the current step up to this. */
  steps: number;
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
  /** Directory for checkpoints and metrics.jsonl (nothing is written without it). */
  outDir?: string;
  /** Checkpoint every N meta-steps (and always at the end); 0 = only at the end. */
  checkpointEvery?: number;
  /** libtorch intra-op threads for this and later work (default: every core; give each of several processes a share). */
  threads?: number;
  /** The lock of `outDir` when the caller already holds it (the CLI locks before writing config.json). */
  runLock?: RunLock;
  /**
   * Start over in an `outDir` that holds another run's checkpoint, replacing it (its config.json and
   * eval.json go too). Without it such a folder is refused: continue that run with `Experiment.load(outDir)`.
   * A folder this experiment was loaded from or saved to is its own and is always continued.
   */
  overwrite?: boolean;
  /**
   * Data-parallel meta-training: this process is one worker of a group (or `'env'`: the group that
   * torchrun-style environment variables describe). Each worker computes the meta-gradient of its share of
   * the meta-batch (`metaBatch` ÷ worldSize episodes) and the group averages them before every update, so
   * all workers hold the same parameters. Only rank 0 writes `outDir` (metrics and checkpoints).
   */
  distributed?: GroupSettings | 'env';
}

/** The evaluation protocol's options (the engine's `EvalOptions`), and the threads to run it with. */
export type EvalOptions = EngineEvalOptions & {
  /** libtorch intra-op threads (not part of the result). */
  threads?: number;
};

export type { EpisodeResult } from './native.js';

type Native = NativeExperiment;

/** Options are an object; the engine reads them (naming an unknown or inapplicable one), threads aside. */
function checkOptions<T extends { threads?: number }>(options: T): T {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw configError('options', 'expected an object');
  return options;
}

function toNativeEpisode(e: EpisodeData): EpisodeData {
  return { supportX: e.supportX, supportY: e.supportY, queryX: e.queryX, queryY: e.queryY, classes: e.classes };
}

/** The Adam learning rate of each group, from the engine's configuration (every default filled in). */
function groupRates(config: ExperimentConfig): Record<string, number> {
  return { ...(config.learner.meta!.lr as Record<string, number>) };
}

function checkSteps(steps: number): void {
  if (!Number.isSafeInteger(steps) || steps < 0) throw configError('steps', `expected a non-negative integer, got ${steps}`);
}

export { METRICS_FILE } from './run-folder.js';

/** A preset by name (with overrides), or a configuration with overrides merged in. */
function resolveConfig(config: string | ExperimentConfig, overrides?: DeepPartial<ExperimentConfig>): ExperimentConfig {
  if (typeof config !== 'string') {
    if (typeof config !== 'object' || config === null || Array.isArray(config)) throw configError('config', 'expected a preset name or a configuration object');
    checkConfigData(config, '');
  }
  checkConfigData(overrides, '');
  return typeof config === 'string' ? preset(config, overrides) : mergeConfig(config, overrides);
}

/** Validates a configuration (or preset) and builds its learner without loading data: its parameters. */
export function checkConfig(config: string | ExperimentConfig, overrides?: DeepPartial<ExperimentConfig>): ParamInfo[] {
  return native.checkExperimentConfig(resolveConfig(config, overrides));
}

export class Experiment implements Disposable {
  #native: Native | undefined;
  #config: ExperimentConfig;
  /** The long operation in progress (meta-training spans many native calls). */
  #running: string | undefined;
  #group: GroupSettings | undefined;
  /** The folder whose checkpoint is this experiment's own (loaded from or saved to): metaTrain continues it. */
  #home: string | undefined;

  private constructor(handle: Native) {
    this.#native = wrapNativeObject(handle);
    this.#config = this.#native.config();
  }

  /** From a preset name (with optional overrides) or a full configuration. Loads the task's data. */
  static async create(config: string | ExperimentConfig, overrides?: DeepPartial<ExperimentConfig>): Promise<Experiment> {
    return new Experiment(await native.createExperiment(resolveConfig(config, overrides)));
  }

  /** A learner for episodes you supply (`metaStep`, `runEpisodes`): an experiment with a custom task. */
  static async forLearner(learner: ExperimentConfig['learner'], options: { name?: string; seed?: number } = {}): Promise<Experiment> {
    return Experiment.create({ name: options.name ?? 'learner', seed: options.seed, learner, task: { type: 'custom' } });
  }

  /** Loads a checkpoint directory written by `save` or `metaTrain({ outDir })`. */
  static async load(dir: string): Promise<Experiment> {
    if (typeof dir !== 'string' || dir === '') throw configError('dir', 'expected a checkpoint folder path');
    const exp = new Experiment(await native.loadExperiment(dir));
    exp.#home = resolve(dir);
    return exp;
  }

  private get raw(): Native {
    if (!this.#native) throw new MetaplasticError('E_USAGE', 'this experiment was disposed');
    return this.#native;
  }

  private get handle(): Native {
    if (this.#running) throw new MetaplasticError('E_BUSY', `the experiment is busy (${this.#running}); await it first`);
    return this.raw;
  }

  /** The full configuration, every default filled in. */
  get config(): ExperimentConfig {
    return structuredClone(this.#config);
  }

  get name(): string {
    return this.#config.name!; // filled in by the engine
  }

  /** Meta-steps taken so far. */
  get step(): number {
    return this.handle.progress()[0];
  }

  /** Non-finite meta-steps skipped so far. */
  get skipped(): number {
    return this.handle.progress()[1];
  }

  /** Meta-steps skipped as exploded lifetimes so far (`learner.meta.explodeFactor`). */
  get exploded(): number {
    return this.handle.progress()[2];
  }

  params(): ParamInfo[] {
    return this.handle.params();
  }

  param(name: string): TensorData {
    if (typeof name !== 'string') throw configError('name', `expected a parameter name (string), got ${typeof name}`);
    return this.handle.param(name);
  }

  setParam(name: string, value: TensorData): void {
    if (typeof name !== 'string') throw configError('name', `expected a parameter name (string), got ${typeof name}`);
    this.handle.setParam(name, checkTensor(value, 'value'));
  }

  /** Meta-trains up to `steps` total meta-steps. Resolves with the records of the steps taken. */
  async metaTrain(options: MetaTrainOptions): Promise<StepRecord[]> {
    if (typeof options !== 'object' || options === null) throw configError('options', 'expected { steps, ... }');
    const { steps } = options;
    const every = options.checkpointEvery ?? 0;
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw configError('signal', `expected an AbortSignal (new AbortController().signal), got ${JSON.stringify(String(options.signal))}`);
    if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw configError('onProgress', `expected a function, got a ${typeof options.onProgress}`);
    if (options.outDir !== undefined && (typeof options.outDir !== 'string' || options.outDir === '')) throw configError('outDir', 'expected a folder path');
    checkSteps(steps);
    checkSteps(every);
    const threads = checkPositiveInt(options.threads, 'threads');
    if (threads !== undefined) setThreads(threads);
    const group = options.distributed === 'env' ? distributedFromEnv() : options.distributed;
    if (group) await this.#joinGroup(group);
    // Only rank 0 of a group writes the run folder.
    const outDir = group && group.rank !== 0 ? undefined : options.outDir;
    // One writer per run folder (a second process gets E_LOCKED instead of interleaving its steps).
    const lock = outDir && !holds(options.runLock, outDir) ? lockRunDir(outDir) : undefined;
    try {
      if (outDir && resolve(outDir) !== this.#home) {
        if (options.overwrite) clearRunFiles(outDir);
        else refuseExistingRun(outDir, `continue it with Experiment.load('${outDir}'), or pass overwrite: true to replace it`);
        this.#home = resolve(outDir);
      }
      return await this.#metaTrain({ ...options, outDir }, steps, every);
    } finally {
      lock?.release();
    }
  }

  /** Joins the group once; a later call must name the same group. */
  async #joinGroup(group: GroupSettings): Promise<void> {
    if (this.#group) {
      if (!sameGroup(this.#group, group)) throw configError('distributed', 'this experiment already trains in another group; create or load a new experiment for it');
      return;
    }
    this.#running = 'joining the group';
    try {
      await joinAfterLookup(this.raw, group);
    } finally {
      this.#running = undefined;
    }
    this.#group = group;
  }

  /** The data-parallel group this experiment trains in, if any. */
  get group(): GroupSettings | undefined {
    return this.#group && { ...this.#group };
  }

  async #metaTrain(options: MetaTrainOptions, steps: number, every: number): Promise<StepRecord[]> {
    const { signal, onProgress, outDir } = options;
    if (outDir) await truncateMetrics(join(outDir, METRICS_FILE), this.step);
    const native = this.handle;
    const rates = groupRates(this.#config);
    const records: StepRecord[] = [];
    const stop = () => native.requestStop();
    signal?.addEventListener('abort', stop);
    this.#running = 'meta-training';
    try {
      let chunk = 1;
      while (native.progress()[0] < steps && !signal?.aborted) {
        const start = native.progress()[0];
        let n = Math.min(chunk, steps - start);
        if (every > 0) n = Math.min(n, every - (start % every));
        const t0 = performance.now();
        let got: StepRecord[];
        try {
          got = await native.train(n);
        } catch (e) {
          // Stopping a group: a peer that stopped first leaves this rank's step unfinished (and unapplied).
          if (signal?.aborted && e instanceof MetaplasticError && e.code === 'E_DIST') break;
          throw e;
        }
        const seconds = (performance.now() - t0) / 1000;
        if (got.length === 0) break;
        records.push(...got);
        const rate = got.length / Math.max(seconds, 1e-9);
        // Chunks of about a quarter second: responsive progress and cancellation, little overhead.
        chunk = Math.max(1, Math.min(1000, Math.round(rate * 0.25)));
        if (outDir) {
          const lines = got.map((r) => JSON.stringify(metricsRecord(r, rates, rate)) + '\n').join('');
          await appendFile(join(outDir, METRICS_FILE), lines).catch((e) => {
            throw new MetaplasticError('E_IO', `cannot write ${join(outDir, METRICS_FILE)}: ${e.message}; check that the folder is writable and the disk has room`, { cause: e });
          });
        }
        const last = got[got.length - 1];
        onProgress?.({ step: last.step, totalSteps: steps, metaLoss: last.metaLoss, gradNorm: last.gradNorm, lr: rates, skipped: last.skippedTotal, exploded: last.explodedTotal, stepsPerSec: rate });
        if (outDir && every > 0 && last.step % every === 0 && last.step < steps) await native.save(outDir);
      }
    } finally {
      signal?.removeEventListener('abort', stop);
      this.#running = undefined;
    }
    if (outDir) await this.save(outDir);
    if (signal?.aborted) {
      throw new MetaplasticError('E_CANCELLED', `meta-training cancelled at step ${this.step}${outDir ? `; checkpoint saved in ${outDir}` : ''}`);
    }
    return records;
  }

  /** Writes a checkpoint (atomically) into `dir`. */
  async save(dir: string): Promise<void> {
    if (typeof dir !== 'string' || dir === '') throw configError('dir', 'expected a folder path');
    await this.handle.save(dir);
    this.#home = resolve(dir);
  }

  /** Runs the task's evaluation protocol (docs/method.md §5); the result is a pure function of the weights, seed and options. */
  async evaluate(options: EvalOptions = {}): Promise<EvalFile> {
    const { threads, ...rest } = checkOptions(options);
    if (threads !== undefined) setThreads(checkPositiveInt(threads, 'options.threads')!);
    const { options: used, raw } = await this.handle.evaluate(rest);
    // The options given, with the engine's run count and seed: what a reader needs to reproduce the result.
    const recorded = { ...rest, runs: used.runs, seed: used.seed };
    return { format: 1, name: this.name, checkpointStep: this.step, seed: used.seed!, options: recorded, interval: CI_METHOD, result: summarizeRaw(raw) };
  }

  /**
   * Analyses the learner's updates on held-out streams of its task (docs/method.md §7): alignment with the true
   * gradient, overlap between tasks, forgetting per update, rows changed and effective rank. The learner
   * steps exactly as in evaluation; nothing about it changes.
   */
  async analyze(options: AnalyzeOptions = {}): Promise<Analysis> {
    const { threads, ...rest } = checkOptions(options);
    if (threads !== undefined) setThreads(checkPositiveInt(threads, 'options.threads')!);
    return this.handle.analyze(rest);
  }

  /** What was meta-learned per plastic layer: statistics and arrays (Float32Array) by name. */
  learned(): Learned {
    const arrays: Record<string, TensorData> = {};
    for (const a of this.handle.learnedArrays()) arrays[a.name] = a.tensor;
    return { stats: this.handle.learnedStats(), arrays };
  }

  /** Writes the learned arrays (see `learned`) to one safetensors file. */
  async exportLearned(path: string): Promise<void> {
    if (typeof path !== 'string' || path === '') throw configError('path', 'expected a file path');
    await this.handle.exportLearned(path);
  }

  /** One meta-step on episodes you supply (e.g. from a custom task). */
  async metaStep(episodes: EpisodeData[]): Promise<StepRecord> {
    return this.handle.metaStep(checkEpisodes(episodes).map(toNativeEpisode));
  }

  /** Runs each episode's inner loop and scores its query set, without meta-gradients or changes. */
  async runEpisodes(episodes: EpisodeData[]): Promise<EpisodeResult> {
    const r = await this.handle.runEpisodes(checkEpisodes(episodes).map(toNativeEpisode));
    return { queryLoss: r.queryLoss, queryAccuracy: r.queryAccuracy ?? undefined, predictions: r.predictions };
  }

  dispose(): void {
    if (this.#running) throw new MetaplasticError('E_BUSY', `cannot dispose while ${this.#running} is in progress`);
    this.#native = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * Joins the group. The engine bounds the rendezvous by the group's timeout; rank 0's host name is resolved
 * here first, so that one that does not resolve is named at once, with the variable that set it.
 */
async function joinAfterLookup(native: Native, group: GroupSettings): Promise<void> {
  await lookup(group.masterAddr).catch((e: NodeJS.ErrnoException) => {
    throw new MetaplasticError('E_DIST', `MASTER_ADDR ${JSON.stringify(group.masterAddr)} (rank 0's host) does not resolve (${e.code ?? e.message}); set MASTER_ADDR to rank 0's host name or address`);
  });
  await native.joinGroup(group);
}

function metricsRecord(r: StepRecord, lr: Record<string, number>, stepsPerSec: number): MetricsRecord & { gradNorm: number | null } {
  return { step: r.step, metaLoss: r.metaLoss, gradNorm: r.gradNorm, lr, skipped: r.skippedTotal, exploded: r.explodedTotal, stepsPerSec, time: new Date().toISOString() };
}

/** After a resume, drops metrics lines past the checkpoint's step so that steps are not repeated. */
async function truncateMetrics(path: string, step: number): Promise<void> {
  if (!existsSync(path)) return;
  const lines = (await readFile(path, 'utf8')).split('\n').filter((l) => l.trim() !== '');
  const kept = lines.filter((l) => {
    try {
      return JSON.parse(l).step <= step;
    } catch {
      return false; // a line cut by an interrupted write
    }
  });
  if (kept.length !== lines.length) await writeFile(path, kept.map((l) => l + '\n').join(''));
}

const finite = (v: number | null): v is number => v !== null && Number.isFinite(v);

/**
 * Summarises the runs whose errors are all finite and counts the others as diverged; when every run
 * diverged there is nothing to summarise and that is an error.
 */
function summarizeOrder(o: SineOrderRaw, what: string): SineOrderResult {
  const ok = o.finalMse.map((_, r) => finite(o.finalMse[r]) && o.curve[r].every(finite) && o.perFunction[r].every(finite));
  const keep = <T>(rows: readonly T[]) => rows.filter((_, r) => ok[r]);
  const diverged = ok.filter((x) => !x).length;
  if (diverged === ok.length) {
    throw new MetaplasticError('E_DATA', `the learner diverged during evaluation: ${what} is not finite in any of the ${ok.length} runs`);
  }
  // The kept runs hold finite numbers only.
  const result: SineOrderResult = {
    finalMse: summarize(keep(o.finalMse) as number[]),
    curve: summarizeCurves(keep(o.curve) as number[][]),
    perFunction: summarizeCurves(keep(o.perFunction) as number[][]),
  };
  return diverged > 0 ? { ...result, diverged } : result;
}

/** Turns the engine's per-run values into means with 95% confidence intervals (stats.ts CI_METHOD). */
export function summarizeRaw(raw: EvalRaw): SineEvalResult | OmniglotEvalResult {
  if (raw.protocol === 'sine') {
    return {
      protocol: 'sine',
      runs: raw.runs,
      functions: raw.functions,
      continual: summarizeOrder(raw.continual, 'the continual-order MSE'),
      iid: summarizeOrder(raw.iid, 'the i.i.d.-order MSE'),
    };
  }
  return {
    protocol: 'omniglot',
    runs: raw.runs,
    points: raw.points.map((p: OmniglotPointRaw) => ({
      classes: p.classes,
      heldOut: summarize(p.heldOut),
      train: summarize(p.train),
      ...(p.stepSize != null ? { stepSize: p.stepSize } : {}),
    })),
  };
}

/** The evaluation as canonical JSON: byte-identical for identical inputs. */
export function evalJson(file: EvalFile): string {
  return stableStringify(file) + '\n';
}
