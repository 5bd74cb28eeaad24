/**
 * `metaplastic analyze`: the analysis of learned updates (docs/method.md §7) of one checkpoint, or of two side
 * by side on the same held-out streams (`--against`); writes analysis.json, the learned arrays
 * (learned-NAME.safetensors) and the figures.
 */
import type { Command } from 'commander';
import { join } from 'node:path';
import { Experiment } from '../experiment.js';
import { native } from '../native.js';
import type { ExperimentConfig } from '../config.js';
import { sameTask } from './compare.js';
import { analysisFigures, analysisTable, writeAnalysisFile, type AnalysisFile, type AnalyzeOptions } from '../analysis.js';
import { stableStringify } from '../results.js';
import { positiveInt, seedInt, usageError } from './args.js';
import { formatDuration } from './progress.js';
import { ENGINE_DEFAULTS } from '../engine-types.js';

export interface AnalyzeRequest {
  checkpoint: string;
  against?: string;
  out?: string;
  options: AnalyzeOptions;
  log?: (line: string) => void;
}

export interface AnalyzeResult {
  file: AnalysisFile;
  path: string;
  plots: string[];
  table: string;
}

/** The evaluation protocol a task type is scored by (the image tasks share Omniglot's). */
const taskProtocol = (type: string) => (type === 'sine' ? 'sine' : type === 'custom' ? 'custom' : 'omniglot');

export async function analyzeRun(req: AnalyzeRequest): Promise<AnalyzeResult> {
  const log = req.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const out = req.out ?? join(req.checkpoint, 'analysis');
  const dirs = [req.checkpoint, ...(req.against ? [req.against] : [])];
  const file: AnalysisFile = { format: 1, learners: [] };
  // From the manifests: nothing is loaded (or analysed) for a pair that cannot share a table.
  sameTask(dirs, dirs.map((d) => taskProtocol((native.readCheckpointManifest(d) as { config: ExperimentConfig }).config.task.type)));
  for (const dir of dirs) {
    using exp = await Experiment.load(dir);
    const t0 = performance.now();
    const analysis = await exp.analyze(req.options);
    log(`${exp.name}: analysed the checkpoint at step ${exp.step} in ${formatDuration((performance.now() - t0) / 1000)}`);
    const learned = exp.learned().stats;
    await exp.exportLearned(join(out, `learned-${exp.name.replace(/[^A-Za-z0-9._-]/g, '_')}.safetensors`));
    file.learners.push({ analysis, checkpointStep: exp.step, learned });
  }
  const entries = file.learners.map((l) => l.analysis);
  if (entries.length === 2 && entries[0].name === entries[1].name) entries[1] = { ...entries[1], name: `${entries[1].name} (against)` };
  const path = await writeAnalysisFile(out, file);
  const figs = await analysisFigures(out, entries);
  return { file, path, plots: figs.flatMap((f) => [f.svg, f.png]), table: analysisTable(entries) };
}

interface AnalyzeCliOptions {
  checkpoint: string;
  against?: string;
  out?: string;
  runs: number;
  every: number;
  seed: number;
  order?: string;
  classes?: number;
  threads?: number;
  json?: boolean;
}

export function registerAnalyze(program: Command): void {
  program
    .command('analyze')
    .description('Analyse a checkpoint\'s learned updates on held-out streams (alignment, overlap, forgetting); writes analysis.json and figures.')
    .requiredOption('--checkpoint <dir>', 'run directory holding the checkpoint')
    .option('--against <dir>', 'a second checkpoint, analysed on the same streams (e.g. OML against FLP)')
    .option('--out <dir>', 'where to write analysis.json and the figures (default: <checkpoint>/analysis)')
    .option('--runs <n>', 'independent held-out streams', positiveInt, 1)
    .option('--every <n>', 'measure every n-th inner step (cheaper; the stream itself is unchanged)', positiveInt, 1)
    .option('--seed <s>', 'seed of the held-out streams', seedInt, 0)
    .option('--order <order>', 'sine: continual or iid')
    .option('--classes <n>', `image tasks: classes in the stream (default ${ENGINE_DEFAULTS.AnalysisOptions.classes})`, positiveInt)
    .option('--threads <n>', 'libtorch threads (default: all cores; give each of several processes a share)', positiveInt)
    .option('--json', 'print analysis.json on stdout')
    .action(async (opts: AnalyzeCliOptions) => {
      if (opts.order !== undefined && opts.order !== 'continual' && opts.order !== 'iid') throw usageError(`--order must be continual or iid, got ${opts.order}`);
      const options: AnalyzeOptions = { runs: opts.runs, every: opts.every, seed: opts.seed, order: opts.order as AnalyzeOptions['order'], classes: opts.classes, threads: opts.threads };
      const r = await analyzeRun({ checkpoint: opts.checkpoint, against: opts.against, out: opts.out, options });
      if (opts.json) {
        process.stdout.write(stableStringify(r.file) + '\n');
        return;
      }
      process.stdout.write(r.table);
      process.stdout.write(`wrote ${r.path}\nplots: ${r.plots.join(', ')}\n`);
    });
}
