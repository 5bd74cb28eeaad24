/**
 * `metaplastic eval`: runs the task's evaluation protocol on a checkpoint, writes eval.json (canonical
 * bytes: a pure function of checkpoint, seed and options; timings go to stderr only) and the plots.
 */
import type { Command } from 'commander';
import { evalJson, type EvalOptions } from '../experiment.js';
import type { EvalFile } from '../results.js';
import { Run, type RunEvalResult } from '../run.js';
import { ENGINE_DEFAULTS } from '../engine-types.js';

const EVAL = ENGINE_DEFAULTS.EvalOptions;
import type { Stat } from '../stats.js';
import { formatDuration } from './progress.js';
import { intList, positiveInt, positiveNumberList, seedInt, usageError } from './args.js';
import { applyThreads } from './threads.js';

export interface EvalRequest {
  checkpoint: string;
  runs?: number;
  seed?: number;
  classes?: number[];
  /** Local rules: candidate rate bounds, chosen on the validation split with the learner's own. */
  rateBounds?: number[];
  /** Where eval.json goes (default: inside the checkpoint directory). */
  out?: string;
  /** Write the figures of this learner beside eval.json (default true): into the checkpoint directory, or
   *  with `out`, beside that file, so an evaluation written elsewhere never replaces the run's own figures. */
  plots?: boolean;
  threads?: number;
  log?: (line: string) => void;
}

export async function evalRun(req: EvalRequest): Promise<RunEvalResult> {
  const log = req.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const run = await Run.read(req.checkpoint);
  try {
    const exp = run.experiment;
    for (const [flag, given] of [['--classes', req.classes], ['--rate-bounds', req.rateBounds]] as const) {
      if (given && exp.config.task.type === 'sine') throw usageError(`${flag} applies to classification checkpoints; ${req.checkpoint} was trained on the sine task`);
    }
    applyThreads(req.threads, log);
    // Options left out take the engine's defaults; the eval file records the run count and seed used.
    const options: EvalOptions = { runs: req.runs, seed: req.seed, classes: req.classes, rateBounds: req.rateBounds };
    if (options.runs !== undefined && options.runs < 2) log(`${exp.name}: with ${options.runs} run there is no confidence interval (use --runs 2 or more)`);
    log(`${exp.name}: evaluating the checkpoint at step ${exp.step}`);
    const r = await run.evaluate(options, { out: req.out, plots: req.plots });
    log(`${exp.name}: evaluated ${r.file.result.runs} runs (seed ${r.file.seed}) in ${formatDuration(r.seconds)}`);
    return r;
  } finally {
    run.close();
  }
}

function stat(s: Stat, digits = 4): string {
  const p = (x: number) => x.toPrecision(digits);
  // One run says nothing about spread: no interval rather than one of zero width.
  if (s.n < 2) return `${p(s.mean)}  (${s.n} run: no confidence interval)`;
  return `${p(s.mean)}  (95% CI ${p(s.ci95[0])} – ${p(s.ci95[1])})`;
}

/** A few readable lines: sine final MSE per order, or Omniglot accuracy per class count. */
export function evalSummary(file: EvalFile): string {
  const r = file.result;
  const lines = [`${file.name} at meta-step ${file.checkpointStep}: ${r.runs} runs, seed ${file.seed}`];
  if (r.protocol === 'sine') {
    lines.push(`  MSE over all ${r.functions} functions after learning them:`);
    const diverged = (o: { diverged?: number }) => (o.diverged ? `  (${o.diverged} of ${r.runs} runs diverged and are left out)` : '');
    lines.push(`    continual  ${stat(r.continual.finalMse)}${diverged(r.continual)}`);
    lines.push(`    i.i.d.     ${stat(r.iid.finalMse)}${diverged(r.iid)}`);
  } else {
    lines.push('  classes   held-out accuracy                  train accuracy');
    for (const p of r.points) {
      lines.push(`  ${String(p.classes).padStart(7)}   ${stat(p.heldOut, 3).padEnd(33)}  ${stat(p.train, 3)}${p.stepSize !== undefined ? `   step ${p.stepSize}` : ''}${p.rateBound !== undefined ? `   rate bound ${p.rateBound}` : ''}`);
    }
  }
  return lines.join('\n');
}

interface EvalCliOptions {
  checkpoint: string;
  runs?: number;
  classes?: number[];
  rateBounds?: number[];
  seed?: number;
  out?: string;
  threads?: number;
  json?: boolean;
}

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description("Evaluate a checkpoint with its task's continual-learning protocol; writes eval.json and plots.")
    .requiredOption('--checkpoint <dir>', 'run directory holding the checkpoint')
    .option('--runs <n>', `independent evaluation runs (default ${EVAL.runs})`, positiveInt)
    .option('--classes <list>', `Omniglot: class counts, e.g. 10,50,100 (default ${EVAL.classes.join(',')})`, intList)
    .option('--rate-bounds <list>', "Omniglot, local rules: candidate bounds of the plasticity rates, e.g. 0.5,0.25,0.1, chosen on the validation split with the learner's own (as gradient learners' step sizes are)", positiveNumberList)
    .option('--seed <s>', `evaluation seed (default ${EVAL.seed})`, seedInt)
    .option('--out <file>', 'where to write the evaluation (default: <dir>/eval.json)')
    .option('--threads <n>', 'libtorch threads (default: all cores; give each of several processes a share)', positiveInt)
    .option('--json', 'print the evaluation JSON on stdout')
    .action(async (opts: EvalCliOptions) => {
      const r = await evalRun({ checkpoint: opts.checkpoint, runs: opts.runs, seed: opts.seed, classes: opts.classes, rateBounds: opts.rateBounds, out: opts.out, threads: opts.threads });
      if (opts.json) {
        process.stdout.write(evalJson(r.file));
        return;
      }
      process.stdout.write(evalSummary(r.file) + '\n');
      process.stdout.write(`wrote ${r.path}\n`);
      if (r.plots.length > 0) process.stdout.write(`plots: ${r.plots.join(', ')}\n`);
    });
}
