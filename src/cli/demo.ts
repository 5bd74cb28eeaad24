/**
 * `metaplastic demo` (what `npm run demo` runs): meta-trains FLP and OML on incremental sine regression
 * with reduced networks, evaluates both, prints the comparison and writes the figures, in a few minutes
 * on two CPU cores. The paper's 9-layer networks take seconds per meta-step; these take milliseconds.
 */
import type { Command } from 'commander';
import { join } from 'node:path';
import { mergeConfig, type DeepPartial, type ExperimentConfig, type LayerSpec } from '../config.js';
import { preset } from '../presets.js';
import { runtimeInfo, setThreads } from '../runtime.js';
import { formatDuration, type ProgressMode } from './progress.js';
import { positiveInt } from './args.js';
import { trainRun, trainSummary } from './train.js';
import { evalRun } from './eval.js';
import { compareRuns } from './compare.js';
import { hasCheckpoint } from './runs.js';

export type DemoScale = 'small' | 'tiny';

export interface DemoConfigs {
  flp: ExperimentConfig;
  oml: ExperimentConfig;
}

export const DEMO_STEPS = 1000;
export const DEMO_RUNS = 20;
export const DEMO_OUT = join('runs', 'demo');

const linear = (units: number): LayerSpec => ({ type: 'linear', units });

interface Shape {
  hidden: number[];
  sine: { poolSize?: number; functions?: number; slots?: number; batchesPerFunction: number; batchSize?: number; queryPerFunction?: number };
  metaBatch: number;
}

const SHAPES: Record<DemoScale, Shape> = {
  // Tuned on 2 CPU cores: both learners' meta-loss falls well below its start within DEMO_STEPS.
  small: { hidden: [64, 64, 64], sine: { batchesPerFunction: 5 }, metaBatch: 4 },
  // For tests: a few milliseconds per meta-step.
  tiny: { hidden: [16], sine: { poolSize: 10, functions: 3, slots: 3, batchesPerFunction: 2, batchSize: 4, queryPerFunction: 4 }, metaBatch: 2 },
};

/**
 * The demo's reduced FLP and OML configurations, built from the flp-sine / oml-sine presets. Fewer inner
 * steps and a smaller network call for larger forward meta learning rates than the paper's (both learners
 * use 3e-3); FLP keeps the preset's recipe (README "Training FLP").
 */
export function demoConfigs(options: { scale?: DemoScale; seed?: number } = {}): DemoConfigs {
  const shape = SHAPES[options.scale ?? 'small'];
  const seed = options.seed ?? 0;
  const layers = [...shape.hidden, 1].map(linear);
  const slots = shape.sine.slots ?? 10;
  const common = { task: { sine: shape.sine }, metaBatch: shape.metaBatch, seed };
  const build = (name: string, base: string, learner: DeepPartial<ExperimentConfig['learner']>): ExperimentConfig => {
    const config = preset(base, mergeConfig(common, { name, learner: { ...learner, inputShape: [slots + 1], seed } }));
    config.learner.layers = layers; // arrays are replaced, not merged: set the whole stack
    return config;
  };
  return {
    flp: build('flp-sine-demo', 'flp-sine', { rln: 0, meta: { lr: { forward: 3e-3 } } }),
    // The plastic tail is the last two layers, as OML's last three of nine.
    oml: build('oml-sine-demo', 'oml-sine', { rln: layers.length - 2, meta: { lr: { forward: 3e-3 } } }),
  };
}

export interface DemoOptions {
  out?: string;
  steps?: number;
  scale?: DemoScale;
  runs?: number;
  log?: (line: string) => void;
  progress?: ProgressMode | 'auto';
}

export async function runDemo(options: DemoOptions = {}): Promise<string> {
  const out = options.out ?? DEMO_OUT;
  const steps = options.steps ?? DEMO_STEPS;
  const runs = options.runs ?? DEMO_RUNS;
  const log = options.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const t0 = performance.now();
  // These networks are too small for intra-op parallelism to pay: one thread is faster on a CPU.
  if (runtimeInfo().device === 'cpu' && !process.env.OMP_NUM_THREADS) setThreads(1);

  const configs = demoConfigs({ scale: options.scale });
  const shape = SHAPES[options.scale ?? 'small'];
  log(`metaplastic demo: FLP vs OML on incremental sine regression, reduced networks (hidden ${shape.hidden.join('-')}, ` +
    `${shape.sine.batchesPerFunction} minibatches per function, meta-batch ${shape.metaBatch}), ${steps} meta-steps each, then ${runs} evaluation runs`);
  const dirs: string[] = [];
  for (const [i, config] of [configs.flp, configs.oml].entries()) {
    const dir = join(out, config.name!);
    dirs.push(dir);
    const resume = hasCheckpoint(dir); // a re-run (or one after Ctrl-C) continues where it stopped
    log(`\n[${i + 1}/2] meta-training ${config.name} into ${dir}`);
    const r = await trainRun({ config, out: dir, steps, resume, checkpointEvery: 100, log, progress: options.progress });
    log(trainSummary(r));
    const e = await evalRun({ checkpoint: dir, runs, seed: 0, log });
    log(`  eval: ${e.path}`);
  }
  log('');
  const cmp = await compareRuns(dirs, out);
  const lines = [cmp.table.trimEnd(), '', 'plots:', ...cmp.plots.map((p) => `  ${p}`), '', `demo finished in ${formatDuration((performance.now() - t0) / 1000)}`];
  return lines.join('\n') + '\n';
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('Meta-train FLP and OML on a reduced sine task, evaluate and compare them (a few minutes on a laptop).')
    .option('--out <dir>', 'where the runs and figures go', DEMO_OUT)
    .option('--steps <n>', `meta-steps per learner (default ${DEMO_STEPS})`, positiveInt, DEMO_STEPS)
    .option('--runs <n>', `evaluation runs (default ${DEMO_RUNS})`, positiveInt, DEMO_RUNS)
    .action(async (opts: { out: string; steps: number; runs: number }) => {
      process.stdout.write(await runDemo({ out: opts.out, steps: opts.steps, runs: opts.runs }));
    });
}
