/**
 * Why it works (docs/method.md §7): the analysis of a trained learner's updates on held-out continual streams,
 * as returned by `Experiment.analyze`, its figures, and the side-by-side analysis of checkpoints that
 * `metaplastic analyze` writes. The measurements themselves run in the engine (crates/metaplastic-core/src/analysis).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { configError, MetaplasticError } from './errors.js';
import { renderFigure, type Figure, type RenderOptions, type VegaLiteSpec } from './plot-render.js';
import { stableStringify, writeFileAtomic } from './results.js';
import type { TensorData } from './tensor.js';
import type { Analysis, AnalysisOptions, LearnedStats } from './engine-types.js';

export type { AnalysisStat, AnalysisStep, LayerStep, LayerSummary, RunAnalysis, Analysis, LearnedStats } from './engine-types.js';

/** What `Experiment.analyze` measures (the engine's `AnalysisOptions`), and the threads to run it with. */
export type AnalyzeOptions = AnalysisOptions & {
  /** libtorch intra-op threads (not part of the result). */
  threads?: number;
};

export interface Learned {
  stats: LearnedStats[];
  /**
   * The arrays by name: "rate.L", "decayCoefficient.L" (Oja's learned γ, where configured), "feedback.L.J.weight",
   * "feedback.L.J.bias", "strength.L", "stepSize.L".
   */
  arrays: Record<string, TensorData>;
}

// ---------------------------------------------------------------------------------------------
// Figures

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';
const CONFIG = { font: 'sans-serif', view: { stroke: '#ddd' }, axis: { labelFontSize: 11, titleFontSize: 12 }, title: { fontSize: 14, subtitleFontSize: 11 } };

function names(entries: readonly Analysis[]): string[] {
  if (entries.length === 0) throw configError('analyses', 'at least one analysis is required');
  const n = entries.map((e) => e.name);
  if (new Set(n).size !== n.length) throw configError('analyses', `learner names must differ (got ${n.join(', ')})`);
  return n;
}

/** Histogram of the per-step alignment cos(ΔW, −∇L), one panel per layer, learners overlaid. */
export function alignmentSpec(entries: readonly Analysis[]): VegaLiteSpec {
  names(entries);
  const rows = entries.flatMap((a) => a.layers.flatMap((l) => l.alignmentValues.map((v) => ({ learner: a.name, layer: `layer ${l.layer}`, alignment: v }))));
  return {
    $schema: SCHEMA,
    title: { text: 'Alignment of updates with the true gradient', subtitle: 'cos(ΔW, −∇W L) per inner step and plastic layer, held-out stream' },
    data: { values: rows },
    facet: { column: { field: 'layer', type: 'nominal', title: null } },
    spec: {
      width: 200,
      height: 180,
      mark: { type: 'bar', opacity: 0.6 },
      encoding: {
        x: { field: 'alignment', type: 'quantitative', bin: { extent: [-1, 1], step: 0.1 }, title: 'cosine' },
        y: { aggregate: 'count', type: 'quantitative', title: 'steps', stack: null },
        color: { field: 'learner', type: 'nominal' },
      },
    },
    config: CONFIG,
  };
}

/** Task × task mean update cosine, one heat map per learner (columns) and plastic layer (rows). */
export function overlapSpec(entries: readonly Analysis[]): VegaLiteSpec {
  names(entries);
  const rows = entries.flatMap((a) =>
    a.layers.flatMap((l) => l.overlap.flatMap((r, i) => r.map((v, j) => ({ learner: a.name, layer: `layer ${l.layer}`, a: i + 1, b: j + 1, cosine: v })))),
  );
  return {
    $schema: SCHEMA,
    title: { text: 'Interference between tasks', subtitle: 'mean cosine between the updates of task a and task b (diagonal: within a task)' },
    data: { values: rows.filter((r) => r.cosine !== null) },
    facet: { column: { field: 'learner', type: 'nominal', title: null }, row: { field: 'layer', type: 'nominal', title: null } },
    spec: {
      width: 160,
      height: 160,
      mark: 'rect',
      encoding: {
        x: { field: 'b', type: 'ordinal', title: 'task' },
        y: { field: 'a', type: 'ordinal', title: 'task' },
        color: { field: 'cosine', type: 'quantitative', scale: { scheme: 'redblue', domain: [-1, 1], reverse: true } },
      },
    },
    resolve: { scale: { x: 'independent', y: 'independent' } },
    config: CONFIG,
  };
}

/** Probe loss of each task after each 1/tasks of the stream (continual: after each task), per learner. */
export function forgettingSpec(entries: readonly Analysis[]): VegaLiteSpec {
  names(entries);
  const rows = entries.flatMap((a) =>
    a.forgetting.curve.flatMap((point, k) => point.map((loss, j) => ({ learner: a.name, task: j + 1, after: k + 1, loss })).filter((r) => r.after >= r.task && Number.isFinite(r.loss))),
  );
  return {
    $schema: SCHEMA,
    title: { text: 'Forgetting curves', subtitle: 'loss of each task on its held-out points from the moment it was learned (mean over runs)' },
    data: { values: rows },
    facet: { column: { field: 'learner', type: 'nominal', title: null } },
    spec: {
      width: 300,
      height: 220,
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'after', type: 'quantitative', title: 'tasks learned', axis: { tickMinStep: 1, format: 'd' } },
        y: { field: 'loss', type: 'quantitative', title: 'task loss', scale: { type: 'symlog' } },
        color: { field: 'task', type: 'ordinal' },
      },
    },
    config: CONFIG,
  };
}

export async function analysisFigures(dir: string, entries: readonly Analysis[], options: RenderOptions = {}): Promise<Figure[]> {
  return [
    await renderFigure(alignmentSpec(entries), dir, 'analysis-alignment', options),
    await renderFigure(overlapSpec(entries), dir, 'analysis-overlap', options),
    await renderFigure(forgettingSpec(entries), dir, 'analysis-forgetting', options),
  ];
}

// ---------------------------------------------------------------------------------------------
// Files and tables

export const ANALYSIS_FILE = 'analysis.json';

export interface AnalysisFile {
  format: 1;
  learners: { analysis: Analysis; checkpointStep: number; learned: LearnedStats[] }[];
}

export async function writeAnalysisFile(dir: string, file: AnalysisFile): Promise<string> {
  const path = join(dir, ANALYSIS_FILE);
  try {
    await mkdir(dir, { recursive: true });
    await writeFileAtomic(path, stableStringify(file) + '\n');
  } catch (e) {
    throw new MetaplasticError('E_IO', `cannot write ${path}: ${(e as Error).message}; choose a writable place with --out`, { cause: e });
  }
  return path;
}

const fmt = (v: number | null | undefined, digits = 3) => (v === null || v === undefined || !Number.isFinite(v) ? '—' : v.toPrecision(digits));

/** One line per learner and layer, then the forgetting figures. */
export function analysisTable(entries: readonly Analysis[]): string {
  const head = 'learner            layer  alignment (mean±sd)  sign agree  rows changed  eff. rank  overlap within  across';
  const lines = [head];
  for (const a of entries) {
    for (const l of a.layers) {
      lines.push(
        `${a.name.padEnd(18).slice(0, 18)} ${String(l.layer).padStart(5)}  ${`${fmt(l.alignment.mean)} ± ${fmt(l.alignment.std, 2)}`.padEnd(19)}  ${fmt(l.signAgreement.mean).padEnd(10)}  ${fmt(l.rowsChanged.mean).padEnd(12)}  ${fmt(l.effectiveRank.mean).padEnd(9)}  ${fmt(l.overlapWithin.mean).padEnd(14)}  ${fmt(l.overlapAcross.mean)}`,
      );
    }
  }
  lines.push('', 'learner            loss change per update: other tasks / current task   forgetting per task (final − just learned, mean)');
  for (const a of entries) {
    const f = a.forgetting;
    const per = f.perTask.filter((x): x is number => x !== null && Number.isFinite(x));
    const mean = per.length ? per.reduce((s, x) => s + x, 0) / per.length : null;
    lines.push(`${a.name.padEnd(18).slice(0, 18)} ${`${fmt(f.perUpdate.mean)} / ${fmt(f.currentTask.mean)}`.padEnd(52)} ${fmt(mean)}`);
  }
  return lines.join('\n') + '\n';
}
