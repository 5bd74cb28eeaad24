/**
 * A run folder and everything in it: the lock, config.json, the checkpoint, metrics.jsonl, eval.json, the
 * figures and the summaries. `Experiment` knows no folder; a `Run` gives one to it. The command line, the
 * demo, the benchmarks and the reproduction commands all train and evaluate through this class.
 *
 *   await using run = await Run.open('runs/flp', { config: 'flp-sine' }); // a fresh run, or the one there
 *   await run.train({ steps: 1000, checkpointEvery: 100 });
 *   await run.evaluate({ runs: 20 });
 */
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Experiment, evalJson, type EvalOptions, type ProgressEvent } from './experiment.js';
import { configError, MetaplasticError } from './errors.js';
import { firstDifference, mergeConfig, type DeepPartial, type ExperimentConfig } from './config.js';
import { preset } from './presets.js';
import { finalMetaLoss, initialMetaLoss, metaLossWindow, parseMetrics, writeFileAtomic, type EvalFile, type MetricsRecord } from './results.js';
import { lockRunDir, unwritableReason, type RunLock } from './run-lock.js';
import { compareFigures, plotMetaLoss } from './plots.js';
import { distributedFromEnv, type GroupSettings } from './distributed.js';
import { ENGINE_FILES, type StepRecord } from './engine-types.js';

/** The engine's checkpoint manifest, named where the engine writes it (crates/metaplastic-core/src/checkpoint.rs). */
export const CHECKPOINT_FILE = ENGINE_FILES.checkpoint;
export const CONFIG_FILE = 'config.json';
export const EVAL_FILE = 'eval.json';
export const METRICS_FILE = 'metrics.jsonl';
/** Checkpoints every this many meta-steps unless told otherwise (and always at the end). */
export const DEFAULT_CHECKPOINT_EVERY = 100;

export function hasCheckpoint(dir: string): boolean {
  return existsSync(join(dir, CHECKPOINT_FILE));
}

/** The run's metrics, or [] when it has none (skipped, non-finite meta-steps have a null loss). */
export async function readRunMetrics(dir: string): Promise<MetricsRecord[]> {
  const path = join(dir, METRICS_FILE);
  if (!existsSync(path)) return [];
  return parseMetrics(await readFile(path, 'utf8'), path);
}

export interface RunOptions {
  /**
   * A preset name or a configuration. Starts a fresh run when the folder holds no checkpoint; with one, it
   * must agree with the checkpoint's (every field given) or the run is refused.
   */
  config?: string | ExperimentConfig;
  overrides?: DeepPartial<ExperimentConfig>;
  /** Whether to continue the checkpoint in the folder: `true` requires one, `false` refuses one, `'auto'` (default) takes what is there. */
  resume?: boolean | 'auto';
  /** Start over in a folder that holds another run's checkpoint, replacing it (config.json and eval.json go too). */
  overwrite?: boolean;
  /**
   * Data-parallel meta-training: this process is one worker of a group (or `'env'`: the group that
   * torchrun-style environment variables describe). Every worker opens the same folder; only rank 0 writes it.
   */
  distributed?: GroupSettings | 'env';
  /** How the caller continues or replaces a run, for error messages (default: this API's options). */
  hints?: { resume?: string; fresh?: string; folder?: string };
}

export interface RunTrainOptions {
  /** The run's total number of meta-steps: training continues from the checkpoint's step up to this. */
  steps: number;
  /** Checkpoint every N meta-steps and at the end; 0 = only at the end (default 100). */
  checkpointEvery?: number;
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
  /** libtorch intra-op threads for this and later work. */
  threads?: number;
}

export interface TrainResult {
  name: string;
  out: string;
  /** Meta-steps done (the checkpoint's step). */
  steps: number;
  /** Step the run started from in this call (0 for a fresh run). */
  startStep: number;
  /** Mean meta-loss of the first and of the last `metaLossSteps` recorded steps (see results.ts; null without any). */
  initialMetaLoss: number | null;
  finalMetaLoss: number | null;
  metaLossSteps: number;
  skipped: number;
  /** Meta-steps skipped as exploded lifetimes. */
  exploded: number;
  seconds: number;
  plots: string[];
}

export interface RunEvalOptions {
  /** Where eval.json goes (default: the run folder). */
  out?: string;
  /** Write this learner's figures beside eval.json (default true). */
  plots?: boolean;
}

export interface RunEvalResult {
  file: EvalFile;
  path: string;
  plots: string[];
  seconds: number;
}

const DEFAULT_HINTS = {
  resume: 'open it with resume: true (or leave resume out)',
  fresh: 'pass overwrite: true to replace it, or choose another folder',
  folder: 'choose a writable folder',
};

/** A run folder, opened for training (locked, by the one process that writes it) or for reading. */
export class Run implements AsyncDisposable {
  readonly dir: string;
  #experiment: Experiment | undefined;
  #lock: RunLock | undefined;
  /** Only the process that owns the folder writes it (every process but ranks ≠ 0 of a group). */
  readonly #writes: boolean;
  readonly #group: GroupSettings | undefined;
  readonly #hints: typeof DEFAULT_HINTS;
  /** Started in this process and not yet checkpointed: a failure leaves the folder as it was found. */
  #fresh: boolean;

  private constructor(dir: string, experiment: Experiment, lock: RunLock | undefined, group: GroupSettings | undefined, hints: typeof DEFAULT_HINTS) {
    this.dir = dir;
    this.#fresh = experiment.step === 0 && !hasCheckpoint(dir);
    this.#experiment = experiment;
    this.#lock = lock;
    this.#group = group;
    this.#writes = !group || group.rank === 0;
    this.#hints = hints;
  }

  /**
   * Opens `dir` for training: continues the checkpoint there, or starts a fresh run from `options.config`
   * (writing config.json). The folder is locked until `close()`: a second writer gets E_LOCKED.
   */
  static async open(dir: string, options: RunOptions = {}): Promise<Run> {
    if (typeof dir !== 'string' || dir === '') throw configError('dir', 'expected a run folder path');
    if (typeof options !== 'object' || options === null) throw configError('options', 'expected an object');
    const hints = { ...DEFAULT_HINTS, ...options.hints };
    const group = options.distributed === 'env' ? distributedFromEnv() : options.distributed;
    const writes = !group || group.rank === 0;
    // Locked before anything is read or written.
    const lock = writes ? lockRunDir(dir) : undefined;
    try {
      const experiment = await openExperiment(dir, options, hints, writes);
      return new Run(dir, experiment, lock, group, hints);
    } catch (e) {
      lock?.release();
      throw e;
    }
  }

  /** Opens a finished (or running) run to read and evaluate it; nothing but eval.json and figures is written. */
  static async read(dir: string): Promise<Run> {
    if (typeof dir !== 'string' || dir === '') throw configError('dir', 'expected a run folder path');
    if (!hasCheckpoint(dir)) {
      throw new MetaplasticError('E_USAGE', `${dir} has no checkpoint (${CHECKPOINT_FILE} is missing); train one with \`metaplastic train --out ${dir}\``);
    }
    return new Run(dir, await Experiment.load(dir), undefined, undefined, DEFAULT_HINTS);
  }

  get experiment(): Experiment {
    if (!this.#experiment) throw new MetaplasticError('E_USAGE', `the run in ${this.dir} was closed`);
    return this.#experiment;
  }

  get name(): string {
    return this.experiment.name;
  }

  /** Meta-trains up to `steps` total meta-steps, writing metrics.jsonl, checkpoints and the meta-loss plot. */
  async train(options: RunTrainOptions): Promise<TrainResult> {
    if (typeof options !== 'object' || options === null) throw configError('options', 'expected { steps, ... }');
    if (!this.#lock && this.#writes) throw new MetaplasticError('E_USAGE', `${this.dir} was opened for reading (Run.read); open it with Run.open to train`);
    const { steps, signal, onProgress, threads } = options;
    const every = options.checkpointEvery ?? DEFAULT_CHECKPOINT_EVERY;
    for (const [name, v] of [['steps', steps], ['checkpointEvery', every]] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw configError(name, `expected a non-negative integer, got ${v}`);
    }
    const exp = this.experiment;
    const startStep = exp.step;
    const t0 = performance.now();
    if (this.#writes) await truncateMetrics(join(this.dir, METRICS_FILE), startStep);
    const onRecords = this.#writes ? (records: StepRecord[]) => this.#appendMetrics(records) : undefined;
    let cancelled: unknown;
    // Segments that end at checkpoints: each ends with a save, so a crash loses at most `every` steps.
    while (exp.step < steps) {
      const target = every > 0 ? Math.min(steps, (Math.floor(exp.step / every) + 1) * every) : steps;
      try {
        await exp.metaTrain({ steps: target, signal, threads, distributed: this.#group, onRecords, onProgress: onProgress && ((e) => onProgress({ ...e, totalSteps: steps })) });
      } catch (e) {
        if (!(e instanceof MetaplasticError && e.code === 'E_CANCELLED')) {
          if (this.#writes && this.#fresh) for (const name of [CONFIG_FILE, METRICS_FILE]) rmSync(join(this.dir, name), { force: true });
          throw e;
        }
        cancelled = e;
      }
      if (this.#writes) await exp.save(this.dir);
      this.#fresh = false;
      if (cancelled) {
        const where = this.#writes ? `; checkpoint saved in ${this.dir}` : '';
        throw new MetaplasticError('E_CANCELLED', `meta-training cancelled at step ${exp.step}${where}`, { cause: cancelled });
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    const records = this.#writes ? await readRunMetrics(this.dir) : [];
    const plots: string[] = [];
    if (records.length > 0) {
      const fig = await plotMetaLoss(this.dir, [{ name: exp.name, records }], { smoothing: 0.9 });
      plots.push(fig.svg, fig.png);
    }
    return {
      name: exp.name,
      out: this.dir,
      steps: exp.step,
      startStep,
      initialMetaLoss: initialMetaLoss(records),
      finalMetaLoss: finalMetaLoss(records),
      metaLossSteps: metaLossWindow(records),
      skipped: exp.skipped,
      exploded: exp.exploded,
      seconds,
      plots,
    };
  }

  async #appendMetrics(records: StepRecord[]): Promise<void> {
    const time = new Date().toISOString();
    const lines = records.map((r) => JSON.stringify({ ...r, time } satisfies MetricsRecord) + '\n').join('');
    const path = join(this.dir, METRICS_FILE);
    await appendFile(path, lines).catch((e) => {
      throw new MetaplasticError('E_IO', `cannot write ${path}: ${e.message}; check that the folder is writable and the disk has room`, { cause: e });
    });
  }

  /** Runs the task's evaluation protocol and writes eval.json (canonical bytes) and the learner's figures. */
  async evaluate(options: EvalOptions = {}, where: RunEvalOptions = {}): Promise<RunEvalResult> {
    const exp = this.experiment;
    const t0 = performance.now();
    const file = await exp.evaluate(options);
    const seconds = (performance.now() - t0) / 1000;
    const path = where.out ?? join(this.dir, EVAL_FILE);
    try {
      await mkdir(dirname(path), { recursive: true });
      await writeFileAtomic(path, evalJson(file));
    } catch (e) {
      throw new MetaplasticError('E_IO', `cannot write ${path}: ${unwritableReason(dirname(path), e)}; ${this.#hints.folder}`, { cause: e });
    }
    const plots: string[] = [];
    if (where.plots ?? true) {
      // Beside eval.json: an evaluation written elsewhere never replaces the run's own figures.
      const figs = await compareFigures(dirname(path), [{ name: file.name, eval: file, metrics: await readRunMetrics(this.dir) }]);
      for (const f of figs) plots.push(f.svg, f.png);
    }
    return { file, path, plots, seconds };
  }

  /** The run's metrics so far. */
  metrics(): Promise<MetricsRecord[]> {
    return readRunMetrics(this.dir);
  }

  /** Releases the folder and the learner. */
  close(): void {
    this.#experiment?.dispose();
    this.#experiment = undefined;
    this.#lock?.release();
    this.#lock = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}

async function openExperiment(dir: string, options: RunOptions, hints: typeof DEFAULT_HINTS, writes: boolean): Promise<Experiment> {
  const resume = options.resume ?? 'auto';
  const existing = hasCheckpoint(dir);
  if (existing && resume !== false && !options.overwrite) {
    const exp = await Experiment.load(dir);
    const requested = options.config === undefined ? undefined : typeof options.config === 'string' ? preset(options.config, options.overrides) : mergeConfig(options.config, options.overrides);
    const diff = requested ? firstDifference(requested, exp.config) : null;
    if (diff) {
      exp.dispose();
      throw new MetaplasticError('E_USAGE', `${dir} holds a run trained with another configuration (${diff}); ${hints.resume}`);
    }
    return exp;
  }
  if (resume === true) {
    throw new MetaplasticError('E_USAGE', `${dir} has no checkpoint to resume (${CHECKPOINT_FILE} is missing); start a fresh run`);
  }
  if (existing && !options.overwrite) {
    throw new MetaplasticError('E_USAGE', `${dir} already holds a checkpoint (${CHECKPOINT_FILE}) of another run; ${hints.fresh}`);
  }
  if (options.config === undefined) throw configError('config', `${dir} holds no run yet: give the configuration (or preset name) to start one`);
  const exp = await Experiment.create(options.config, options.overrides);
  if (!writes) return exp;
  try {
    if (options.overwrite) for (const name of [CHECKPOINT_FILE, CONFIG_FILE, EVAL_FILE, METRICS_FILE]) rmSync(join(dir, name), { force: true });
    await writeFileAtomic(join(dir, CONFIG_FILE), JSON.stringify(exp.config, null, 2) + '\n');
  } catch (e) {
    exp.dispose();
    throw new MetaplasticError('E_IO', `cannot write ${join(dir, CONFIG_FILE)}: ${unwritableReason(dir, e)}; ${hints.folder}`, { cause: e });
  }
  return exp;
}

/** On opening a run, drops metrics lines past the checkpoint's step, so that resumed steps are not repeated. */
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
