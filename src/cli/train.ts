/**
 * `metaplastic train`: meta-trains one learner into a run directory (config.json, metrics.jsonl, the
 * checkpoint, meta-loss plot), with a progress bar, Ctrl-C → checkpoint → exit 130, and exact resume.
 */
import type { Command } from 'commander';
import { join } from 'node:path';
import type { ProgressEvent } from '../experiment.js';
import { MetaplasticError } from '../errors.js';
import { mergeConfig, type ExperimentConfig } from '../config.js';
import { preset } from '../presets.js';
import { runtimeInfo } from '../runtime.js';
import { createProgress, formatDuration, type ProgressMode } from './progress.js';
import { applySet, CliExit, collect, nonNegativeInt, positiveInt, positiveNumber, readConfigFile, seedInt, usageError } from './args.js';
import { CHECKPOINT_FILE, DEFAULT_CHECKPOINT_EVERY, hasCheckpoint, Run, type TrainResult } from '../run.js';
import { checkConfigData } from '../validate.js';
import { applyThreads } from './threads.js';
import { EXIT } from './exit-codes.js';
import { restoreTerminal } from './progress.js';
import { distributedFromEnv, type GroupSettings } from '../distributed.js';
import { LAUNCHER_NPROC_ENV, launchWorkers, STOP_SIGNALS } from './launch.js';
import { ENGINE_DEFAULTS } from '../engine-types.js';

/** First call: `first`; any later call: `later` (Ctrl-C, then Ctrl-C again). */
export function interruptHandler<A extends unknown[]>(first: (...args: A) => void, later: () => void): (...args: A) => void {
  let calls = 0;
  return (...args: A) => (calls++ === 0 ? first(...args) : later());
}

/**
 * Calls `first` on the first stop signal (or when the launcher of this worker is gone: its IPC channel
 * closes), `later` on any after it. Returns the function that removes the handlers.
 */
export function onStop(first: (why: string) => void, later: () => void): () => void {
  const handle = interruptHandler(first, later);
  const bySignal = STOP_SIGNALS.map((signal) => [signal, () => handle(signal)] as const);
  for (const [signal, h] of bySignal) process.on(signal, h);
  const orphaned = () => handle('the launcher is gone');
  process.on('disconnect', orphaned);
  if (process.env[LAUNCHER_NPROC_ENV] && !process.connected) orphaned(); // it went before we listened
  return () => {
    for (const [signal, h] of bySignal) process.removeListener(signal, h);
    process.removeListener('disconnect', orphaned);
  };
}

/** The command that resumes a run, as the user started it (with --nproc when the launcher started this worker). */
export function resumeCommand(out: string, steps: number, distributed?: GroupSettings): string {
  const nproc = process.env[LAUNCHER_NPROC_ENV];
  const group = distributed ? (nproc ? ` --nproc ${nproc}` : ` (with ${distributed.worldSize} workers again)`) : '';
  return `metaplastic train --resume --out ${out} --steps ${steps}${group}`;
}

/** The second Ctrl-C: the terminal as it was before the bar, a word on the checkpoint, exit 130. */
export function quitWithoutSaving(message: string, stream: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr, exit: (code: number) => void = process.exit): void {
  restoreTerminal(stream);
  stream.write(`\n${message}\n`);
  exit(EXIT.interrupted);
}

export const DEFAULT_STEPS = 1000;

export interface TrainRequest {
  /** The configuration to train; with `resume`, checked against the checkpoint's (may be omitted). */
  config?: ExperimentConfig;
  out: string;
  /** Total meta-steps of the run. */
  steps: number;
  /** Continue the checkpoint in `out` (true), refuse one (false), or take what is there ('auto', the demo). */
  resume?: boolean | 'auto';
  checkpointEvery?: number;
  /** Progress label (default: the learner's name). */
  label?: string;
  log?: (line: string) => void;
  /** Progress display (default 'auto': a bar on a terminal, lines otherwise). */
  progress?: ProgressMode | 'auto';
  /** libtorch intra-op threads (default: all cores, with a warning when the machine is busy). */
  threads?: number;
  /** This process is one worker of a data-parallel group; only rank 0 writes `out`. */
  distributed?: GroupSettings;
}

/** The command line's words for continuing or replacing a run. */
const CLI_HINTS = {
  resume: 'resume with `--resume --out DIR` alone, or choose another --out',
  fresh: 'continue it with --resume, or choose another --out',
  folder: 'choose a writable folder with --out',
};

/** Meta-trains `req.config` (or resumes the run in `req.out`) up to `req.steps`, with a progress bar and Ctrl-C → checkpoint → exit 130. */
export async function trainRun(req: TrainRequest): Promise<TrainResult> {
  const log = req.log ?? ((line: string) => process.stderr.write(line + '\n'));
  applyThreads(req.threads, log);
  if (req.resume === true && !hasCheckpoint(req.out)) {
    throw usageError(`--resume: ${req.out} has no checkpoint (${CHECKPOINT_FILE} is missing); start a fresh run without --resume`);
  }
  if (!req.resume && !req.config) throw usageError('give --preset NAME or --config FILE.json (see `metaplastic presets`)');
  const hints = { ...CLI_HINTS, resume: `resume with \`--resume --out ${req.out}\` alone, or choose another --out` };
  const run = await Run.open(req.out, { config: req.config, resume: req.resume ?? false, distributed: req.distributed, hints });
  try {
    return await trainOpenRun(run, req, log);
  } finally {
    run.close();
  }
}

async function trainOpenRun(run: Run, req: TrainRequest, log: (line: string) => void): Promise<TrainResult> {
  const name = run.name;
  const startStep = run.experiment.step;
  const leader = !req.distributed || req.distributed.rank === 0;
  if (leader && startStep >= req.steps) log(`${name}: the checkpoint in ${req.out} is already at step ${startStep} (--steps ${req.steps}); nothing to train`);
  else if (leader && startStep > 0) log(`${name}: resuming from step ${startStep} in ${req.out}`);
  const controller = new AbortController();
  const progress = leader ? createProgress({ label: req.label ?? name, mode: req.progress }) : undefined;
  // First Ctrl-C (or SIGTERM, SIGHUP): stop inside the current meta-step, save, exit 130. A second one quits
  // at once, with the terminal restored (cursor, line wrap) and the last checkpoint on disk untouched.
  const resume = resumeCommand(req.out, req.steps, req.distributed);
  const removeHandlers = leader
    ? onStop(
        (why) => {
          log(`\n${name}: interrupted (${why}); saving a checkpoint (press Ctrl-C again to quit without saving)`);
          controller.abort();
        },
        () => quitWithoutSaving(`${name}: quit without saving; the last checkpoint in ${req.out} is intact (resume with: ${resume})`),
      )
    : onStop(() => controller.abort(), () => process.exit(EXIT.interrupted));
  try {
    if (startStep < req.steps) progress?.start(req.steps, startStep);
    const onProgress = progress && ((e: ProgressEvent) => progress.update(e.step, { 'meta-loss': e.metaLoss ?? 'nan', skipped: e.skippedTotal, exploded: e.explodedTotal }));
    return await run.train({ steps: req.steps, signal: controller.signal, checkpointEvery: req.checkpointEvery, onProgress });
  } catch (e) {
    if (e instanceof MetaplasticError && e.code === 'E_CANCELLED') {
      progress?.stop();
      const message = leader ? `${name}: stopped at step ${run.experiment.step} of ${req.steps}; checkpoint saved in ${req.out}.\nResume with: ${resume}` : '';
      throw new CliExit(EXIT.interrupted, message);
    }
    throw e;
  } finally {
    progress?.stop();
    removeHandlers();
  }
}

/** --preset / --config / --set / --seed → one configuration (null when none of them is given). */
export async function resolveConfig(opts: { preset?: string; config?: string; set?: string[]; seed?: number }): Promise<ExperimentConfig | null> {
  if (!opts.preset && !opts.config && !opts.set?.length && opts.seed === undefined) return null;
  let config: Record<string, unknown>;
  if (opts.config) {
    const file = await readConfigFile(opts.config);
    // With a preset the file holds overrides; alone it is a complete configuration.
    config = opts.preset ? (preset(opts.preset, file) as unknown as Record<string, unknown>) : file;
  } else if (opts.preset) {
    config = preset(opts.preset) as unknown as Record<string, unknown>;
  } else {
    throw usageError('give --preset NAME or --config FILE.json (see `metaplastic presets`)');
  }
  for (const s of opts.set ?? []) applySet(config, s);
  checkConfigData(config, ''); // a --set value such as 1e400 (Infinity) is named before anything starts
  if (opts.seed !== undefined) {
    config = mergeConfig(config, { seed: opts.seed, learner: { seed: opts.seed } });
  }
  if (typeof config.learner !== 'object' || typeof config.task !== 'object') {
    throw new MetaplasticError('E_CONFIG', `invalid configuration: ${opts.config}: needs "learner" and "task" (print a complete one with \`metaplastic presets flp-sine\`)`);
  }
  return config as unknown as ExperimentConfig;
}

/** `runs/<name>-<seed>`. */
export function defaultRunDir(config: ExperimentConfig): string {
  return join('runs', `${config.name ?? 'experiment'}-${config.seed ?? 0}`);
}

function fmt(x: number | null): string {
  return x === null ? '-' : x.toPrecision(4);
}

export function trainSummary(r: TrainResult): string {
  const lines = [
    `${r.name}: ${r.steps} meta-steps in ${r.out} (${r.steps - r.startStep} this run, ${formatDuration(r.seconds)})`,
    `  meta-loss (mean of ${r.metaLossSteps === 1 ? 'one step' : `${r.metaLossSteps} steps`})  first: ${fmt(r.initialMetaLoss)}   final: ${fmt(r.finalMetaLoss)}`,
  ];
  if (r.skipped > 0) lines.push(`  skipped non-finite meta-steps: ${r.skipped}`);
  if (r.exploded > 0) lines.push(`  skipped exploded lifetimes: ${r.exploded}`);
  if (r.plots.length > 0) lines.push(`  plot: ${r.plots.join(', ')}`);
  return lines.join('\n');
}

interface TrainOptions {
  preset?: string;
  config?: string;
  set?: string[];
  steps: number;
  out?: string;
  seed?: number;
  resume?: boolean;
  checkpointEvery: number;
  threads?: number;
  json?: boolean;
  nproc?: number;
  distTimeout?: number;
}

export function registerTrain(program: Command): void {
  program
    .command('train')
    .description('Meta-train a learner from a preset or configuration into a run directory (resumable).')
    .option('--preset <name>', 'preset to start from (see `metaplastic presets`)')
    .option('--config <file>', 'JSON configuration: complete, or overrides of --preset')
    .option('--set <key.path=value>', 'override one field, e.g. --set task.sine.batchSize=16 (repeatable; values are JSON or strings)', collect)
    .option('--steps <n>', `the run's TOTAL number of meta-steps (a resumed run continues up to it); the paper trains 20,000`, positiveInt, DEFAULT_STEPS)
    .option('--out <dir>', 'run directory (default: runs/<name>-<seed>)')
    .option('--seed <s>', 'seed of the task streams and of the initial weights', seedInt)
    .option('--resume', 'continue the checkpoint in --out up to --steps')
    .option('--checkpoint-every <n>', 'also checkpoint every n meta-steps (0 = only at the end)', nonNegativeInt, DEFAULT_CHECKPOINT_EVERY)
    .option('--threads <n>', 'libtorch threads (default: all cores; give each of several processes a share)', positiveInt)
    .option('--json', 'print the result as JSON on stdout')
    .option('--nproc <n>', 'data-parallel: run n worker processes on this machine, each with its share of the meta-batch and of the cores (under torchrun or srun, leave it out: the RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT variables make this process a worker)', positiveInt)
    .option('--dist-timeout <seconds>', `data-parallel: how long a worker waits for the others (rendezvous, each meta-step) before stopping with an error that names the missing rank (default ${ENGINE_DEFAULTS.GroupSettings.timeoutSeconds})`, positiveNumber)
    .action(async (opts: TrainOptions, command: Command) => {
      const fromEnv = distributedFromEnv();
      if (opts.nproc !== undefined && opts.nproc > 1) {
        if (fromEnv) throw usageError('--nproc starts its own workers; leave it out when a launcher (torchrun, srun) already set RANK and WORLD_SIZE');
        // A bad configuration is reported once, before any worker starts or anything is written.
        const config = await resolveConfig(opts);
        const metaBatch = config?.metaBatch ?? 1;
        if (config && !opts.resume && metaBatch % opts.nproc !== 0) {
          throw new MetaplasticError('E_CONFIG', `invalid configuration: metaBatch: ${metaBatch} episodes cannot be split evenly over ${opts.nproc} processes; use a multiple of ${opts.nproc}`);
        }
        const runDir = opts.out ?? (config ? defaultRunDir(config) : undefined);
        // The workers get the same command line (--dist-timeout included), less --nproc.
        const args = process.argv.slice(process.argv.indexOf(command.name()));
        // A worker that outlasts the group's timeout after a failure or a signal is terminated, then killed.
        const code = await launchWorkers(args, opts.nproc, { threads: opts.threads, runDir, graceSeconds: opts.distTimeout });
        if (code !== EXIT.ok) throw new CliExit(code, '');
        return;
      }
      const distributed = fromEnv && (opts.distTimeout ? { ...fromEnv, timeoutSeconds: opts.distTimeout } : fromEnv);
      const config = await resolveConfig(opts);
      if (!opts.resume && !config) throw usageError('give --preset NAME or --config FILE.json (see `metaplastic presets`)');
      if (opts.resume && !opts.out) throw usageError('--resume needs --out DIR, the run directory to continue');
      const out = opts.out ?? defaultRunDir(config!);
      const r = await trainRun({ config: config ?? undefined, out, steps: opts.steps, resume: opts.resume, checkpointEvery: opts.checkpointEvery, threads: opts.threads, distributed });
      if (distributed && distributed.rank !== 0) return; // rank 0 reports the run
      if (opts.json) {
        const json = { name: r.name, out: r.out, steps: r.steps, startStep: r.startStep, finalMetaLoss: r.finalMetaLoss, initialMetaLoss: r.initialMetaLoss, metaLossSteps: r.metaLossSteps, skipped: r.skipped, exploded: r.exploded, seconds: r.seconds, plots: r.plots, threads: runtimeInfo().threads };
        process.stdout.write(JSON.stringify(json) + '\n');
      } else {
        process.stdout.write(trainSummary(r) + '\n');
      }
    });
}
