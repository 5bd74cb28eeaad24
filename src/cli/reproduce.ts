/**
 * `metaplastic reproduce sine|omniglot`: one of the paper's comparisons end to end (src/studies.ts), on the
 * library's reproduce(): meta-train both learners, evaluate them at each milestone, draw the figures and
 * the table beside the published figures. Ctrl-C stops with every finished part kept; the same command
 * continues.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { join } from 'node:path';
import { MetaplasticError } from '../errors.js';
import { reproduce } from '../reproduce.js';
import { LEARNER_FAMILIES, study, type LearnerFamily, type StudyName } from '../studies.js';
import { CliExit, positiveInt, seedInt, usageError } from './args.js';
import { EXIT } from './exit-codes.js';
import { onStop, quitWithoutSaving } from './train.js';
import { applyThreads } from './threads.js';

interface ReproduceOptions {
  steps?: number;
  out?: string;
  seeds?: number[];
  runs?: number;
  full?: boolean;
  learners?: LearnerFamily[];
  every?: number;
  summarize?: boolean;
  threads?: number;
}

/** "0,1" → [0, 1]. */
function seedList(value: string): number[] {
  return value.split(',').map((s) => seedInt(s.trim()));
}

/** "flp" or "flp,oml" → the learner families, each once. */
function learnerList(value: string): LearnerFamily[] {
  const names = value.split(',').map((s) => s.trim());
  for (const name of names) {
    if (!(LEARNER_FAMILIES as readonly string[]).includes(name)) throw new InvalidArgumentError(`expected ${LEARNER_FAMILIES.join(' and/or ')}, got '${name}'`);
  }
  return [...new Set(names as LearnerFamily[])];
}

export function registerReproduce(program: Command): void {
  program
    .command('reproduce')
    .argument('<study>', 'sine (FLP vs OML on the paper\'s sine protocol) or omniglot (continual Omniglot, 10 to 600 classes)')
    .description('Reproduce one of the paper\'s comparisons end to end and resumably: meta-train FLP and OML, evaluate at milestones, figures and a table beside the published figures.')
    .option('--steps <n>', 'meta-steps per learner (sine: 900, or 3000 with --full; omniglot: 5000, under two hours of FLP on one core, or 20000 with --full)', positiveInt)
    .option('--out <dir>', 'the study folder (default: runs/reproduce-<study>)')
    .option('--seeds <list>', 'seeds of the learners, e.g. 0,1 (sine default 0,1; omniglot 0)', seedList)
    .option('--runs <n>', 'evaluation runs at each milestone (default 20)', positiveInt)
    .option('--full', "the full-size setting: the paper's 9-layer sine networks, or Omniglot at 84×84 (a GPU's work)")
    .option('--learners <list>', 'only these learners: flp, oml or flp,oml (default: both)', learnerList)
    .option('--every <n>', 'evaluate every n meta-steps and at the last (default: 3 milestones for sine, 6 with --full; 4 for omniglot)', positiveInt)
    .option('--summarize', 'train and evaluate nothing: the table and figures from the evaluations the folder holds')
    .option('--threads <n>', 'libtorch threads', positiveInt)
    .action(async (name: string, opts: ReproduceOptions) => {
      if (name !== 'sine' && name !== 'omniglot') throw usageError(`unknown study '${name}' (known: sine, omniglot)`);
      const out = opts.out ?? join('runs', `reproduce-${name}${opts.full ? '-full' : ''}`);
      const log = (line: string) => process.stderr.write(line + '\n');
      applyThreads(opts.threads, log);
      const s = study(name as StudyName, { steps: opts.steps, seeds: opts.seeds, runs: opts.runs, full: opts.full, learners: opts.learners, every: opts.every });
      const again = `metaplastic reproduce ${process.argv.slice(process.argv.indexOf('reproduce') + 1).join(' ')}`;
      const controller = new AbortController();
      const removeHandlers = onStop(
        (why) => {
          log(`\nreproduce ${name}: interrupted (${why}); saving a checkpoint (press Ctrl-C again to quit without saving)`);
          controller.abort();
        },
        () => quitWithoutSaving(`reproduce ${name}: quit without saving; finished parts in ${out} are intact (continue with: ${again})`),
      );
      let last = 0;
      const onProgress = (label: string, e: { step: number; totalSteps: number; metaLoss: number | null }) => {
        if (Date.now() - last < 10_000) return; // a line every 10 s: this runs for hours
        last = Date.now();
        log(`${label}: step ${e.step}/${e.totalSteps} meta-loss ${e.metaLoss?.toPrecision(4) ?? 'nan'}`);
      };
      try {
        const r = await reproduce(s, { out, signal: controller.signal, onProgress, log, summarizeOnly: opts.summarize });
        process.stdout.write(r.summary + `\nfigures: ${r.figures.filter((f) => f.endsWith('.svg')).join(', ')}\n`);
      } catch (e) {
        if (e instanceof MetaplasticError && e.code === 'E_CANCELLED') throw new CliExit(EXIT.interrupted, `reproduce ${name}: stopped; every finished part is kept in ${out}.\nContinue with: ${again}`);
        throw e;
      } finally {
        removeHandlers();
      }
    });
}
