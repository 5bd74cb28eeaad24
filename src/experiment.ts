/**
 * Experiments from TypeScript: create one from a preset or a configuration, meta-train it off the JS
 * thread with progress, cancellation and checkpoints, evaluate it with the paper's protocols, save and
 * load it. The numerical work runs in the native engine; this module orchestrates.
 */
import { lookup } from 'node:dns/promises';
import { native, wrapNativeObject, type EpisodeResult, type NativeExperiment } from './native.js';
import { configError, MetaplasticError } from './errors.js';
import { mergeConfig, type DeepPartial, type ExperimentConfig } from './config.js';
import { preset } from './presets.js';
import { CI_METHOD, summarize, summarizeCurves } from './stats.js';
import { stableStringify, type EvalFile, type OmniglotEvalResult, type SineEvalResult, type SineOrderResult } from './results.js';
import type { EpisodeData } from './episode.js';
import type { TensorData } from './tensor.js';
import { checkConfigData, checkEpisodes, checkPositiveInt, checkTensor } from './validate.js';
import { setThreads } from './runtime.js';
import { distributedFromEnv, sameGroup, type GroupSettings } from './distributed.js';
import type { Analysis, AnalyzeOptions, Learned } from './analysis.js';
import type { EvalOptions as EngineEvalOptions, EvalRaw, OmniglotPointRaw, ParamInfo, SineOrderRaw, StepRecord } from './engine-types.js';

export type { ParamInfo, StepRecord } from './engine-types.js';

/** A meta-step as it completes: the engine's step record, with the run's target, speed and group rates. */
export interface ProgressEvent extends StepRecord {
  totalSteps: number;
  /** Meta-steps per second over the last chunk. */
  stepsPerSec: number;
  /** Adam learning rate of each parameter group. */
  lr: Record<string, number>;
}

export interface MetaTrainOptions {
  /** The total number of meta-steps: training continues from the current step up to this. */
  steps: number;
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
  /**
   * Called (and awaited) with each chunk of step records as it completes, before the next chunk starts:
   * where a `Run` writes its metrics.
   */
  onRecords?: (records: StepRecord[]) => void | Promise<void>;
  /** libtorch intra-op threads for this and later work (default: every core; give each of several processes a share). */
  threads?: number;
  /**
   * Data-parallel meta-training: this process is one worker of a group (or `'env'`: the group that
   * torchrun-style environment variables describe). Each worker computes the meta-gradient of its share of
   * the meta-batch (`metaBatch` ÷ worldSize episodes) and the group averages them before every update, so
   * all workers hold the same parameters.
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

/** The Adam learning rate of each group, from the engine's configuration (every default filled in). */
function groupRates(config: ExperimentConfig): Record<string, number> {
  return { ...(config.learner.meta!.lr as Record<string, number>) };
}

function checkSteps(steps: number): void {
  if (!Number.isSafeInteger(steps) || steps < 0) throw configError('steps', `expected a non-negative integer, got ${steps}`);
}

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

  /** Loads a checkpoint directory written by `save` (or by a `Run`). */
  static async load(dir: string): Promise<Experiment> {
    if (typeof dir !== 'string' || dir === '') throw configError('dir', 'expected a checkpoint folder path');
    return new Experiment(await native.loadExperiment(dir));
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

  /**
   * Meta-trains up to `steps` total meta-steps. Resolves with the records of the steps taken. Nothing is
   * written: a `Run` (src/run.ts) keeps metrics and checkpoints in a folder.
   */
  async metaTrain(options: MetaTrainOptions): Promise<StepRecord[]> {
    if (typeof options !== 'object' || options === null) throw configError('options', 'expected { steps, ... }');
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw configError('signal', `expected an AbortSignal (new AbortController().signal), got ${JSON.stringify(String(options.signal))}`);
    for (const hook of ['onProgress', 'onRecords'] as const) {
      if (options[hook] !== undefined && typeof options[hook] !== 'function') throw configError(hook, `expected a function, got a ${typeof options[hook]}`);
    }
    const stale = (['outDir', 'checkpointEvery', 'runLock', 'overwrite'] as const).find((k) => k in options);
    if (stale) throw configError(stale, 'an experiment knows no folder: open a Run (Run.open(dir, { config })) and call run.train({ steps, checkpointEvery })');
    checkSteps(options.steps);
    const threads = checkPositiveInt(options.threads, 'threads');
    if (threads !== undefined) setThreads(threads);
    const group = options.distributed === 'env' ? distributedFromEnv() : options.distributed;
    if (group) await this.#joinGroup(group);
    return this.#metaTrain(options);
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

  async #metaTrain(options: MetaTrainOptions): Promise<StepRecord[]> {
    const { steps, signal, onProgress, onRecords } = options;
    const native = this.handle;
    const rates = groupRates(this.#config);
    const records: StepRecord[] = [];
    const stop = () => native.requestStop();
    signal?.addEventListener('abort', stop);
    this.#running = 'meta-training';
    try {
      let chunk = 1;
      while (native.progress()[0] < steps && !signal?.aborted) {
        const n = Math.min(chunk, steps - native.progress()[0]);
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
        await onRecords?.(got);
        const last = got[got.length - 1];
        onProgress?.({ ...last, totalSteps: steps, stepsPerSec: rate, lr: rates });
      }
    } finally {
      signal?.removeEventListener('abort', stop);
      this.#running = undefined;
    }
    if (signal?.aborted) throw new MetaplasticError('E_CANCELLED', `meta-training cancelled at step ${this.step}`);
    return records;
  }

  /** Writes a checkpoint (atomically) into `dir`. */
  async save(dir: string): Promise<void> {
    if (typeof dir !== 'string' || dir === '') throw configError('dir', 'expected a folder path');
    await this.handle.save(dir);
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
    return this.handle.metaStep(checkEpisodes(episodes));
  }

  /** Runs each episode's inner loop and scores its query set, without meta-gradients or changes. */
  async runEpisodes(episodes: EpisodeData[]): Promise<EpisodeResult> {
    const r = await this.handle.runEpisodes(checkEpisodes(episodes));
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
      ...(p.rateBound != null ? { rateBound: p.rateBound } : {}),
    })),
  };
}

/** The evaluation as canonical JSON: byte-identical for identical inputs. */
export function evalJson(file: EvalFile): string {
  return stableStringify(file) + '\n';
}
