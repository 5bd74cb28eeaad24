// The figures a researcher makes from meta-training metrics and evaluation files, as vega-lite
// specs (exported, for notebooks) and as SVG + PNG files (rendered headless by plot-render.ts).
import { OMNIGLOT_PUBLISHED } from './published.js';
import { configError } from './errors.js';
import type {
  CompareEntry,
  MetricsRecord,
  OmniglotEvalResult,
  SineEvalResult,
  Stat,
} from './results.js';
import { renderFigure, type Figure, type RenderOptions, type VegaLiteSpec } from './plot-render.js';

export { renderFigure, specToSvg, type Figure, type RenderOptions, type VegaLiteSpec } from './plot-render.js';

export interface LossSeries {
  name: string;
  records: readonly MetricsRecord[];
}

export interface LearnerResult<R> {
  name: string;
  result: R;
}

export interface SpecOptions {
  /** Every learner of the comparison, in order: fixes each one's colour across figures. */
  learners?: readonly string[];
}

export type PlotOptions = SpecOptions & RenderOptions;

export interface MetaLossOptions extends SpecOptions {
  /** Exponential smoothing weight in [0, 1) (TensorBoard-style, bias-corrected); 0 = raw only. */
  smoothing?: number;
  /** Longest series drawn per learner; longer ones are thinned evenly (default 2000). */
  maxPoints?: number;
}

/** Figure names written by the plot functions (and by compareFigures). */
export const FIGURE_NAMES = {
  metaLoss: 'meta-loss',
  sineCurve: 'sine-curve',
  sinePerFunction: 'sine-per-function',
  omniglotAccuracy: 'omniglot-accuracy',
} as const;

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';
const ORDERS = [
  ['continual', 'continual'],
  ['iid', 'i.i.d.'],
] as const;
const SPLITS = [
  ['heldOut', 'held-out images'],
  ['train', 'training images'],
] as const;
const PANEL = { width: 340, height: 240 };
const CONFIG = {
  background: 'white',
  font: 'sans-serif',
  title: { fontSize: 15, subtitleFontSize: 12, anchor: 'start' as const },
  axis: { labelFontSize: 11, titleFontSize: 12 },
  // Bands and raw losses are drawn faint; the legend should show the solid colour.
  legend: { labelFontSize: 12, titleFontSize: 12, labelLimit: 260, symbolOpacity: 1 },
  header: { labelFontSize: 13, titleFontSize: 13 },
};

// Tableau 10, vega's default categorical scheme, listed so a learner keeps its colour across
// figures that show different subsets of a comparison.
const PALETTE = ['#4c78a8', '#f58518', '#e45756', '#72b7b2', '#54a24b', '#eeca3b', '#b279a2', '#ff9da6', '#9d755d', '#bab0ac'];

/** Colours for `names`, given each learner's position in the whole comparison (default: its own order). */
function learnerColor(names: readonly string[], all: readonly string[] = names) {
  const range = names.map((n, i) => PALETTE[(all.includes(n) ? all.indexOf(n) : i) % PALETTE.length]);
  return { field: 'learner', type: 'nominal' as const, title: 'Learner', scale: { domain: [...names], range }, sort: [...names] };
}

function checkNames(names: readonly string[], what: string): void {
  if (names.length === 0) throw configError(what, 'nothing to plot');
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw configError(what, `learner name ${JSON.stringify(dup)} appears twice; names label the lines`);
}

/** Mean and 95% interval, clipped to what the quantity can be (an MSE is never below 0, an accuracy is in [0, 1]). */
function band(s: Stat, min = -Infinity, max = Infinity) {
  const clip = (v: number) => Math.min(max, Math.max(min, v));
  return { mean: s.mean, lo: clip(s.ci95[0]), hi: clip(s.ci95[1]) };
}

/** Every log axis labels its ticks the same way: 1e-3, 1e+0, 1e+20. */
const LOG_AXIS = { format: '~e' };

// ---------------------------------------------------------------------------------------------
// (a) Meta-training loss.

/** Bias-corrected exponential moving average (weight w on the past). */
export function smoothEma(values: readonly number[], w: number): number[] {
  if (!(w >= 0 && w < 1)) throw configError('smoothing', `must be in [0, 1), got ${w}`);
  const out: number[] = [];
  let acc = 0;
  let norm = 0;
  for (const v of values) {
    acc = w * acc + (1 - w) * v;
    norm = w * norm + (1 - w);
    out.push(acc / norm);
  }
  return out;
}

function thin<T>(items: readonly T[], maxPoints: number): T[] {
  if (items.length <= maxPoints) return [...items];
  const out: T[] = [];
  for (let i = 0; i < maxPoints; i++) out.push(items[Math.round((i * (items.length - 1)) / (maxPoints - 1))]);
  return out;
}

/** The q-quantile (0..1) of sorted values, linearly interpolated. */
function quantile(sorted: readonly number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/**
 * The y-range of a log axis from the bulk of the losses: the 1st to 99th percentile, widened by a
 * factor of 2 each way (and at least one decade in all), so a handful of huge losses cannot stretch the
 * axis over many decades. Losses outside it are clipped at the frame.
 */
export function bulkLogDomain(losses: readonly number[]): [number, number] | undefined {
  const logs = losses.filter((l) => l > 0 && Number.isFinite(l)).map(Math.log10).sort((a, b) => a - b);
  if (logs.length === 0) return undefined;
  let lo = quantile(logs, 0.01) - Math.log10(2);
  let hi = quantile(logs, 0.99) + Math.log10(2);
  if (hi - lo < 1) {
    const mid = (hi + lo) / 2;
    [lo, hi] = [mid - 0.5, mid + 0.5];
  }
  return [10 ** lo, 10 ** hi];
}

type LossRow = { learner: string; step: number; loss: number; kind: 'raw' | 'smoothed' | 'skipped' | 'exploded' };

/**
 * Meta-loss against step on a log axis. Smoothing is an EMA of log-loss (a geometric mean, so one huge
 * loss cannot drag the line for hundreds of steps) over the applied steps only; steps skipped as non-finite
 * or as exploded lifetimes are left out of both lines and marked by a triangle at the top of the frame.
 */
export function metaLossSpec(series: readonly LossSeries[], options: MetaLossOptions = {}): VegaLiteSpec {
  const names = series.map((s) => s.name);
  checkNames(names, 'series');
  const smoothing = options.smoothing ?? 0;
  const maxPoints = options.maxPoints ?? 2000;
  if (!(Number.isInteger(maxPoints) && maxPoints >= 2)) throw configError('maxPoints', `must be an integer >= 2, got ${maxPoints}`);
  const rows: LossRow[] = [];
  const marks: { learner: string; step: number; kind: 'skipped' | 'exploded' }[] = [];
  for (const s of series) {
    for (const r of s.records) {
      if (r.exploded) marks.push({ learner: s.name, step: r.step, kind: 'exploded' });
      else if (r.metaLoss === null) marks.push({ learner: s.name, step: r.step, kind: 'skipped' });
    }
    // A log axis cannot show non-positive losses; non-finite ones are null in metrics.jsonl.
    const recs = s.records.filter((r): r is MetricsRecord & { metaLoss: number } => !r.exploded && r.metaLoss !== null && r.metaLoss > 0);
    const smoothed = smoothing > 0 ? smoothEma(recs.map((r) => Math.log(r.metaLoss)), smoothing).map(Math.exp) : undefined;
    const points = thin(recs.map((r, i) => ({ step: r.step, raw: r.metaLoss, smooth: smoothed?.[i] })), maxPoints);
    for (const p of points) {
      rows.push({ learner: s.name, step: p.step, loss: p.raw, kind: 'raw' });
      if (p.smooth !== undefined) rows.push({ learner: s.name, step: p.step, loss: p.smooth, kind: 'smoothed' });
    }
  }
  const domain = bulkLogDomain(rows.filter((r) => r.kind === 'raw').map((r) => r.loss));
  for (const m of thin(marks, maxPoints)) rows.push({ ...m, loss: domain ? domain[1] : 1 });
  const x = { field: 'step', type: 'quantitative' as const, title: 'Meta-training step' };
  const y = { field: 'loss', type: 'quantitative' as const, title: 'Meta-loss (log scale)', scale: { type: 'log' as const, ...(domain ? { domain } : {}) }, axis: LOG_AXIS };
  const color = learnerColor(names, options.learners);
  const lines =
    smoothing > 0
      ? [
          { transform: [{ filter: "datum.kind === 'raw'" }], mark: { type: 'line' as const, opacity: 0.25, strokeWidth: 1, clip: true }, encoding: { x, y, color: color } },
          { transform: [{ filter: "datum.kind === 'smoothed'" }], mark: { type: 'line' as const, strokeWidth: 2, clip: true }, encoding: { x, y, color } },
        ]
      : [{ transform: [{ filter: "datum.kind === 'raw'" }], mark: { type: 'line' as const, strokeWidth: 1.5, clip: true }, encoding: { x, y, color } }];
  const shape = { field: 'kind', type: 'nominal' as const, title: 'Skipped step', scale: { domain: ['skipped', 'exploded'], range: ['triangle-down', 'diamond'] } };
  const skippedLayer = marks.length
    ? [{ transform: [{ filter: "datum.kind === 'skipped' || datum.kind === 'exploded'" }], mark: { type: 'point' as const, filled: true, size: 40, clip: false }, encoding: { x, y, color, shape } }]
    : [];
  const what = smoothing > 0 ? `faint: raw; solid: smoothed (EMA ${smoothing} of log-loss)` : 'raw values';
  const counts = marks.length ? `; ${marks.filter((m) => m.kind === 'skipped').length} non-finite and ${marks.filter((m) => m.kind === 'exploded').length} exploded steps marked at the top` : '';
  return {
    $schema: SCHEMA,
    title: { text: 'Meta-training loss', subtitle: `${what}${counts}` },
    data: { values: rows },
    width: 520,
    height: 300,
    layer: [...lines, ...skippedLayer],
    config: CONFIG,
  };
}

// ---------------------------------------------------------------------------------------------
// (b) Sine: MSE over the functions seen so far, after each function.

export function sineCurveSpec(entries: readonly LearnerResult<SineEvalResult>[], options: SpecOptions = {}): VegaLiteSpec {
  const names = entries.map((e) => e.name);
  checkNames(names, 'entries');
  const rows = entries.flatMap((e) =>
    ORDERS.flatMap(([key, label]) =>
      e.result[key].curve.map((s, k) => ({ learner: e.name, order: label, functions: k + 1, ...band(s, 0) })),
    ),
  );
  // Continual: function k has just been learned; i.i.d.: the same amount of data, shuffled across functions.
  const x = { field: 'functions', type: 'quantitative' as const, title: "Data seen (functions' worth)", axis: { tickMinStep: 1, format: 'd' } };
  const color = learnerColor(names, options.learners);
  return {
    $schema: SCHEMA,
    title: {
      text: 'Incremental sine regression',
      subtitle: ["MSE over the functions whose data has been seen; mean and 95% bootstrap CI over runs", "continual: after learning function k; i.i.d.: after k functions' worth of shuffled data"],
    },
    data: { values: rows },
    facet: { column: { field: 'order', type: 'nominal', title: null, sort: ORDERS.map(([, l]) => l) } },
    spec: {
      ...PANEL,
      layer: [
        { mark: { type: 'area', opacity: 0.18 }, encoding: { x, y: { field: 'lo', type: 'quantitative', title: 'MSE' }, y2: { field: 'hi' }, color: color } },
        { mark: { type: 'line', point: true }, encoding: { x, y: { field: 'mean', type: 'quantitative' }, color } },
      ],
    },
    config: CONFIG,
  };
}

// ---------------------------------------------------------------------------------------------
// (c) Sine: error on each function after all functions were learned (what is forgotten).

export function sinePerFunctionSpec(entries: readonly LearnerResult<SineEvalResult>[], options: SpecOptions = {}): VegaLiteSpec {
  const names = entries.map((e) => e.name);
  checkNames(names, 'entries');
  const rows = entries.flatMap((e) =>
    ORDERS.flatMap(([key, label]) =>
      // Log scale: a lower bound at or below 0 is drawn at 1% of the mean.
      e.result[key].perFunction.map((s, i) => ({ learner: e.name, order: label, fn: i + 1, ...band(s, s.mean / 100) })),
    ),
  );
  const last = Math.max(...entries.map((e) => e.result.functions));
  const x = { field: 'fn', type: 'ordinal' as const, title: 'Function (in the order learned)', axis: { labelAngle: 0 } };
  const xOffset = { field: 'learner', type: 'nominal' as const, sort: [...names] };
  const color = learnerColor(names, options.learners);
  return {
    $schema: SCHEMA,
    title: { text: `Sine: error on each function after learning all ${last}`, subtitle: 'mean and 95% bootstrap CI over runs; log scale, so every learner stays readable' },
    data: { values: rows },
    facet: { column: { field: 'order', type: 'nominal', title: null, sort: ORDERS.map(([, l]) => l) } },
    spec: {
      ...PANEL,
      layer: [
        { mark: { type: 'rule', strokeWidth: 1.5 }, encoding: { x, xOffset, y: { field: 'lo', type: 'quantitative', title: 'MSE (log scale)', scale: { type: 'log' }, axis: LOG_AXIS }, y2: { field: 'hi' }, color } },
        { mark: { type: 'point', filled: true, size: 40 }, encoding: { x, xOffset, y: { field: 'mean', type: 'quantitative', scale: { type: 'log' } }, color } },
      ],
    },
    config: CONFIG,
  };
}

// ---------------------------------------------------------------------------------------------
// (d) Omniglot: accuracy against the number of classes learned.

/** A published figure drawn beside this library's results: hollow markers (or a rule), labelled with their source. */
export interface PublishedPoint {
  /** Who reported it, e.g. "OML paper (figure)" or "ANML, a public replication". */
  source: string;
  /** Omniglot: the class count and split; a point without `classes` is a level across the axis (a rule). */
  classes?: number;
  split?: 'heldOut' | 'train';
  value: number;
}

export interface OmniglotSpecOptions extends SpecOptions {
  published?: readonly PublishedPoint[];
}

export function omniglotAccuracySpec(entries: readonly LearnerResult<OmniglotEvalResult>[], options: OmniglotSpecOptions = {}): VegaLiteSpec {
  const names = entries.map((e) => e.name);
  checkNames(names, 'entries');
  const rows = entries.flatMap((e) =>
    SPLITS.flatMap(([key, label]) =>
      e.result.points.map((p) => ({ learner: e.name, split: label, classes: p.classes, ...band(p[key], 0, 1) })),
    ),
  );
  const splitLabel = Object.fromEntries(SPLITS);
  const published = (options.published ?? []).filter((p) => p.classes !== undefined).map((p) => ({ source: p.source, split: splitLabel[p.split ?? 'heldOut'], classes: p.classes, published: p.value }));
  const x = { field: 'classes', type: 'quantitative' as const, title: 'Classes learned' };
  const y = { field: 'lo', type: 'quantitative' as const, title: 'Accuracy', axis: { format: '.0%' }, scale: { domain: [0, 1] } };
  const color = learnerColor(names, options.learners);
  const layers: Record<string, unknown>[] = [
    { mark: { type: 'area', opacity: 0.18 }, encoding: { x, y, y2: { field: 'hi' }, color: color } },
    { mark: { type: 'line', point: true }, encoding: { x, y: { field: 'mean', type: 'quantitative' }, color } },
  ];
  if (published.length > 0) {
    layers.push({
      transform: [{ filter: 'isValid(datum.published)' }],
      mark: { type: 'point', filled: false, size: 70, strokeWidth: 1.5, color: '#555' },
      encoding: { x, y: { field: 'published', type: 'quantitative' }, shape: { field: 'source', type: 'nominal', title: 'published (hollow)', legend: { labelLimit: 360 } } },
    });
  }
  return {
    $schema: SCHEMA,
    title: { text: 'Omniglot continual learning', subtitle: 'accuracy over all classes after learning them one by one; mean and 95% CI over runs' + (published.length > 0 ? '; hollow: published figures' : '') },
    data: { values: [...rows, ...published] },
    facet: { column: { field: 'split', type: 'nominal', title: null, sort: SPLITS.map(([, l]) => l) } },
    spec: { ...PANEL, layer: layers },
    config: CONFIG,
  };
}

// ---------------------------------------------------------------------------------------------
// (e) A quantity against meta-steps (evaluations at checkpoints), with published levels as rules.

export interface MetaStepSeries {
  name: string;
  points: readonly { step: number; stat: Stat }[];
}

export interface MetaStepOptions extends SpecOptions {
  title: string;
  subtitle?: string;
  /** The quantity, e.g. "continual MSE". */
  quantity: string;
  logY?: boolean;
  published?: readonly PublishedPoint[];
}

export function metaStepSpec(series: readonly MetaStepSeries[], options: MetaStepOptions): VegaLiteSpec {
  const names = series.map((s) => s.name);
  checkNames(names, 'series');
  const rows = series.flatMap((s) => s.points.map((p) => ({ learner: s.name, step: p.step, ...band(p.stat, options.logY ? 1e-12 : -Infinity) })));
  const rules = (options.published ?? []).map((p) => ({ source: p.source, level: p.value }));
  const x = { field: 'step', type: 'quantitative' as const, title: 'Meta-steps' };
  const scale = options.logY ? { type: 'log' as const } : {};
  const y = { field: 'lo', type: 'quantitative' as const, title: options.quantity, scale };
  const color = learnerColor(names, options.learners);
  const layers: Record<string, unknown>[] = [
    { mark: { type: 'area', opacity: 0.18 }, encoding: { x, y, y2: { field: 'hi' }, color } },
    { mark: { type: 'line', point: true }, encoding: { x, y: { field: 'mean', type: 'quantitative', scale }, color } },
  ];
  if (rules.length > 0) {
    layers.push({ data: { values: rules }, mark: { type: 'rule', strokeDash: [5, 4], color: '#555' }, encoding: { y: { field: 'level', type: 'quantitative', scale }, strokeDash: { field: 'source', type: 'nominal', title: 'published (dashed)', legend: { labelLimit: 360 } } } });
  }
  return {
    $schema: SCHEMA,
    title: { text: options.title, subtitle: options.subtitle ?? 'mean and 95% CI over evaluation runs at each checkpoint' },
    data: { values: rows },
    ...PANEL,
    layer: layers,
    config: CONFIG,
  };
}

// ---------------------------------------------------------------------------------------------
// Files.

export function plotMetaLoss(dir: string, series: readonly LossSeries[], options: MetaLossOptions & RenderOptions = {}): Promise<Figure> {
  return renderFigure(metaLossSpec(series, options), dir, FIGURE_NAMES.metaLoss, options);
}

export function plotSineCurve(dir: string, entries: readonly LearnerResult<SineEvalResult>[], options: PlotOptions = {}): Promise<Figure> {
  return renderFigure(sineCurveSpec(entries, options), dir, FIGURE_NAMES.sineCurve, options);
}

export function plotSinePerFunction(dir: string, entries: readonly LearnerResult<SineEvalResult>[], options: PlotOptions = {}): Promise<Figure> {
  return renderFigure(sinePerFunctionSpec(entries, options), dir, FIGURE_NAMES.sinePerFunction, options);
}

export function plotOmniglotAccuracy(dir: string, entries: readonly LearnerResult<OmniglotEvalResult>[], options: OmniglotSpecOptions & RenderOptions = {}): Promise<Figure> {
  return renderFigure(omniglotAccuracySpec(entries, options), dir, FIGURE_NAMES.omniglotAccuracy, options);
}

export interface CompareFiguresOptions extends RenderOptions {
  /** Meta-loss smoothing (default 0.9). */
  smoothing?: number;
  /** Reference points drawn hollow on the Omniglot figure (default: the published long-stream figures; [] for none). */
  published?: readonly PublishedPoint[];
}

/**
 * Every figure that the entries have data for: sine figures for sine evaluations, the Omniglot
 * figure for Omniglot evaluations, the meta-loss figure for entries that carry metrics.
 */
export async function compareFigures(dir: string, entries: readonly CompareEntry[], options: CompareFiguresOptions = {}): Promise<Figure[]> {
  const learners = entries.map((e) => e.name);
  checkNames(learners, 'entries');
  const shared = { learners, scale: options.scale };
  const figures: Figure[] = [];
  const withMetrics = entries.filter((e) => e.metrics && e.metrics.length > 0);
  if (withMetrics.length > 0) {
    const series = withMetrics.map((e) => ({ name: e.name, records: e.metrics! }));
    figures.push(await plotMetaLoss(dir, series, { ...shared, smoothing: options.smoothing ?? 0.9 }));
  }
  const sine = pick(entries, (r): r is SineEvalResult => r.protocol === 'sine');
  if (sine.length > 0) {
    figures.push(await plotSineCurve(dir, sine, shared));
    figures.push(await plotSinePerFunction(dir, sine, shared));
  }
  const omniglot = pick(entries, (r): r is OmniglotEvalResult => r.protocol === 'omniglot');
  if (omniglot.length > 0) figures.push(await plotOmniglotAccuracy(dir, omniglot, { ...shared, published: options.published ?? OMNIGLOT_PUBLISHED }));
  return figures;
}

function pick<R extends SineEvalResult | OmniglotEvalResult>(
  entries: readonly CompareEntry[],
  is: (r: SineEvalResult | OmniglotEvalResult) => r is R,
): LearnerResult<R>[] {
  const out: LearnerResult<R>[] = [];
  for (const e of entries) if (is(e.eval.result)) out.push({ name: e.name, result: e.eval.result });
  return out;
}
