// Side-by-side comparison of learners: one list of rows (metric × learner) rendered either as an
// aligned plain-text table or as JSON, so the two never disagree.
import { configError } from './errors.js';
import { FINAL_WINDOW, finalMetaLoss, finalMetaLossLabel, metaLossWindow, type CompareEntry, type EvalFile } from './results.js';
import { ciHalfWidth, type Stat } from './stats.js';

export type CompareValue = Stat | number | null;

export interface CompareRow {
  /** Stable machine key, e.g. "sine.continual.finalMse", "omniglot.heldOut.50". */
  key: string;
  /** What the text table prints. */
  label: string;
  /** One value per learner, in the order of `learners`; null where the learner has no such number. */
  values: CompareValue[];
}

export interface CompareJson {
  format: 1;
  learners: { name: string; preset: string; protocol: EvalFile['result']['protocol']; checkpointStep: number; seed: number; runs: number }[];
  rows: CompareRow[];
}

/** Metric rows of a comparison, in display order. */
export function compareRows(entries: readonly CompareEntry[]): CompareRow[] {
  checkEntries(entries);
  const rows: CompareRow[] = [];
  const row = (key: string, label: string, get: (e: CompareEntry) => CompareValue | undefined) => {
    const values = entries.map((e) => get(e) ?? null);
    if (values.some((v) => v !== null)) rows.push({ key, label, values });
  };

  row('checkpointStep', 'meta-training steps', (e) => e.eval.checkpointStep);
  const windows = new Set(entries.filter((e) => e.metrics?.length).map((e) => metaLossWindow(e.metrics!)));
  row('metaTraining.finalLoss', windows.size === 1 ? finalMetaLossLabel([...windows][0]) : finalMetaLossLabel(FINAL_WINDOW, true), (e) => finalMetaLoss(e.metrics ?? []) ?? undefined);
  row('sine.continual.finalMse', 'sine continual: MSE after all functions', (e) => sine(e)?.continual.finalMse);
  row('sine.iid.finalMse', 'sine i.i.d.: MSE after all functions', (e) => sine(e)?.iid.finalMse);

  const classCounts = [...new Set(entries.flatMap((e) => omniglot(e)?.points.map((p) => p.classes) ?? []))].sort((a, b) => a - b);
  const point = (e: CompareEntry, c: number) => omniglot(e)?.points.find((p) => p.classes === c);
  for (const c of classCounts) row(`omniglot.heldOut.${c}`, `omniglot held-out acc, ${c} classes`, (e) => point(e, c)?.heldOut);
  for (const c of classCounts) row(`omniglot.train.${c}`, `omniglot train acc, ${c} classes`, (e) => point(e, c)?.train);
  for (const c of classCounts) row(`omniglot.stepSize.${c}`, `omniglot step size, ${c} classes`, (e) => point(e, c)?.stepSize);
  for (const c of classCounts) row(`omniglot.rateBound.${c}`, `omniglot rate bound, ${c} classes`, (e) => point(e, c)?.rateBound);
  return rows;
}

/** The comparison as plain data (serialize it with stableStringify for byte-stable files). */
export function compareJson(entries: readonly CompareEntry[]): CompareJson {
  const rows = compareRows(entries);
  return {
    format: 1,
    learners: entries.map((e) => ({
      name: e.name,
      preset: e.eval.name,
      protocol: e.eval.result.protocol,
      checkpointStep: e.eval.checkpointStep,
      seed: e.eval.seed,
      runs: e.eval.result.runs,
    })),
    rows,
  };
}

export interface CompareTableOptions {
  /** Significant digits of each mean (default 3); the CI half-width is printed to the same decimal place. */
  digits?: number;
}

/**
 * An aligned plain-text table: learners as columns, metrics as rows, each cell "mean ± h" with h
 * the half-width of the 95% interval, and the number of runs under the learner names.
 */
export function compareTable(entries: readonly CompareEntry[], options: CompareTableOptions = {}): string {
  const digits = options.digits ?? 3;
  if (!(Number.isInteger(digits) && digits >= 1 && digits <= 10)) throw configError('digits', `must be an integer in 1..10, got ${digits}`);
  const rows = compareRows(entries);
  const header = ['', ...entries.map((e) => e.name)];
  const runs = ['runs', ...entries.map((e) => `n = ${e.eval.result.runs}`)];
  const body = rows.map((r) => {
    // One decimal place per row, so that the decimal points of a row line up.
    const decimals = rowDecimals(r.values, digits);
    return [r.label, ...r.values.map((v) => formatCell(v, decimals))];
  });
  const table = [header, runs, ...body];
  const widths = header.map((_, j) => Math.max(...table.map((line) => line[j].length)));
  const render = (line: string[]) =>
    line
      .map((cell, j) => (j === 0 ? cell.padEnd(widths[0]) : cell.padStart(widths[j])))
      .join('   ')
      .trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('   ');
  return [render(header), render(runs), rule, ...body.map(render)].join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------

function checkEntries(entries: readonly CompareEntry[]): void {
  if (entries.length === 0) throw configError('entries', 'nothing to compare');
  const names = entries.map((e) => e.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw configError('entries', `learner name ${JSON.stringify(dup)} appears twice`);
}

function sine(e: CompareEntry) {
  return e.eval.result.protocol === 'sine' ? e.eval.result : undefined;
}

function omniglot(e: CompareEntry) {
  return e.eval.result.protocol === 'omniglot' ? e.eval.result : undefined;
}

function isStat(v: CompareValue): v is Stat {
  return v !== null && typeof v === 'object';
}

// Enough decimals to give every value of the row `digits` significant digits.
function rowDecimals(values: readonly CompareValue[], digits: number): number {
  let decimals = 0;
  for (const v of values) {
    if (v === null || (!isStat(v) && Number.isInteger(v))) continue;
    decimals = Math.max(decimals, decimalsFor(isStat(v) ? v.mean : v, digits));
  }
  return decimals;
}

/** "0.352 ± 0.021": the mean and the CI half-width to `decimals` places; "-" for no value. */
function formatCell(v: CompareValue, decimals: number): string {
  if (v === null) return '-';
  if (!isStat(v)) return Number.isInteger(v) ? String(v) : fixed(v, decimals);
  const mean = fixed(v.mean, decimals);
  return v.n > 1 ? `${mean} ± ${fixed(ciHalfWidth(v), decimals)}` : mean;
}

function decimalsFor(x: number, digits: number): number {
  if (x === 0) return digits - 1;
  const magnitude = Math.floor(Math.log10(Math.abs(x)));
  return Math.min(12, Math.max(0, digits - 1 - magnitude));
}

function fixed(x: number, decimals: number): string {
  const s = x.toFixed(decimals);
  return /^-0\.?0*$/.test(s) ? s.slice(1) : s; // never print "-0.000"
}
