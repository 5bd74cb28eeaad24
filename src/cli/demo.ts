/**
 * `metaplastic demo` (what `npm run demo` runs): meta-trains FLP and OML on incremental sine regression
 * with reduced networks, evaluates both, prints the comparison and writes the figures, in a few minutes
 * on two CPU cores. The paper's 9-layer networks take seconds per meta-step; these take milliseconds.
 */
import type { Command } from 'commander';
import { join } from 'node:path';
import { demoConfigs, demoShape, type DemoScale } from '../presets.js';
import { runtimeInfo } from '../runtime.js';
import { formatDuration, type ProgressMode } from './progress.js';
import { positiveInt } from './args.js';
import { trainRun, trainSummary } from './train.js';
import { compareRuns } from './compare.js';
import { evalRun } from './eval.js';

export const DEMO_STEPS = 1000;
export const DEMO_RUNS = 20;
export const DEMO_OUT = join('runs', 'demo');

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
  // These networks are too small for intra-op parallelism to pay: one thread is faster on a CPU. It is the
  // demo's own choice, so the machine's load (right after `npm run demo` built the addon, that of the build
  // itself) is no reason to warn about contention or to change it.
  const threads = runtimeInfo().device === 'cpu' && !process.env.OMP_NUM_THREADS ? 1 : undefined;

  const configs = demoConfigs({ scale: options.scale });
  const shape = demoShape(options.scale);
  log(`metaplastic demo: FLP vs OML on incremental sine regression, reduced networks (hidden ${shape.hidden.join('-')}, ` +
    `${shape.sine.batchesPerFunction} minibatches per function, meta-batch ${shape.metaBatch}), ${steps} meta-steps each, then ${runs} evaluation runs`);
  const dirs: string[] = [];
  for (const [i, config] of [configs.flp, configs.oml].entries()) {
    const dir = join(out, config.name!);
    dirs.push(dir);
    log(`\n[${i + 1}/2] meta-training ${config.name} into ${dir}`);
    // A re-run (or one after Ctrl-C) continues where it stopped.
    log(trainSummary(await trainRun({ config, out: dir, steps, resume: 'auto', threads, log, progress: options.progress })));
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
