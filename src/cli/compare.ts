/**
 * `metaplastic compare`: side-by-side table of several evaluated runs (eval.json, plus metrics.jsonl
 * when present) and the comparison figures.
 */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { compareJson, compareTable } from '../compare.js';
import { compareFigures } from '../plots.js';
import { readEvalFile, stableStringify, type CompareEntry } from '../results.js';
import { usageError } from './args.js';
import { EVAL_FILE, readRunMetrics } from '../run.js';

export const DEFAULT_COMPARE_DIR = join('runs', 'compare');

/** Reads each run directory; learners are named by their eval name, or by directory where names collide. */
export async function loadEntries(dirs: readonly string[]): Promise<CompareEntry[]> {
  const missing = dirs.filter((d) => !existsSync(join(d, EVAL_FILE)));
  if (missing.length > 0) {
    throw usageError(`no ${EVAL_FILE} in ${missing.join(', ')}; run \`metaplastic eval --checkpoint ${missing[0]}\` first`);
  }
  const entries: CompareEntry[] = [];
  for (const dir of dirs) entries.push({ name: '', eval: await readEvalFile(join(dir, EVAL_FILE)), metrics: await readRunMetrics(dir) });
  sameTask(dirs, entries.map((e) => e.eval.result.protocol));
  const names = entries.map((e) => e.eval.name);
  const bases = dirs.map((d) => basename(resolve(d)));
  const count = (xs: string[], x: string) => xs.filter((y) => y === x).length;
  entries.forEach((e, i) => {
    // Two runs of one preset (e.g. seeds) get their directory names, or their paths if those collide too.
    e.name = count(names, names[i]) === 1 ? names[i] : count(bases, bases[i]) === 1 ? bases[i] : dirs[i];
  });
  return entries;
}

/**
 * Runs of different tasks share no metric, and their meta-losses are different quantities (a sine MSE, an
 * image task's cross-entropy): one axis or table for both would mislead, so they are refused.
 */
export function sameTask(dirs: readonly string[], tasks: readonly string[]): void {
  const i = tasks.findIndex((t) => t !== tasks[0]);
  if (i > 0) {
    throw usageError(`${dirs[0]} holds a run of the ${tasks[0]} task and ${dirs[i]} one of the ${tasks[i]} task: their meta-losses measure different things (${lossName(tasks[0])} against ${lossName(tasks[i])}); compare runs of one task`);
  }
}

const lossName = (task: string) => (task === 'sine' ? 'mean squared error' : 'cross-entropy');

export interface CompareResult {
  entries: CompareEntry[];
  table: string;
  plots: string[];
}

export async function compareRuns(dirs: readonly string[], out: string = DEFAULT_COMPARE_DIR): Promise<CompareResult> {
  if (dirs.length === 0) throw usageError('compare needs at least one run directory');
  const entries = await loadEntries(dirs);
  const table = compareTable(entries);
  const figs = await compareFigures(out, entries);
  return { entries, table, plots: figs.flatMap((f) => [f.svg, f.png]) };
}

export function registerCompare(program: Command): void {
  program
    .command('compare')
    .description('Compare evaluated runs side by side (table and figures).')
    .argument('<dirs...>', 'run directories holding eval.json (from `metaplastic eval`)')
    .option('--out <dir>', 'where the figures go', DEFAULT_COMPARE_DIR)
    .option('--json', 'print the comparison as JSON on stdout')
    .action(async (dirs: string[], opts: { out: string; json?: boolean }) => {
      const r = await compareRuns(dirs, opts.out);
      if (opts.json) {
        process.stdout.write(stableStringify(compareJson(r.entries)) + '\n');
        return;
      }
      process.stdout.write(r.table);
      process.stdout.write(`plots: ${r.plots.join(', ')}\n`);
    });
}
