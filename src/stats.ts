// Summary statistics over R independent evaluation runs: mean, sample standard deviation and a 95%
// percentile-bootstrap confidence interval for the mean. The bootstrap interval is made of means of the
// runs' own values, so it never leaves the range the quantity can take (an MSE stays >= 0, an accuracy in
// [0, 1]), which a Student-t interval does at small run counts (n = 2: mean ± 12.7·std/√2).
import { MetaplasticError } from './errors.js';

/** Resamples per interval: the 2.5% and 97.5% points move by well under a tenth of the interval's width between seeds. */
export const BOOTSTRAP_RESAMPLES = 2000;

/** How `ci95` is computed: recorded in eval.json and stated in the docs. */
export const CI_METHOD = `95% percentile bootstrap over the runs (${BOOTSTRAP_RESAMPLES} resamples, fixed seed)`;

export interface Stat {
  mean: number;
  /** Sample standard deviation (divides by n - 1); 0 when n = 1. */
  std: number;
  /** 95% percentile-bootstrap interval of the mean (see CI_METHOD); [mean, mean] when n = 1 (one run says nothing about spread). */
  ci95: [number, number];
  n: number;
}

/**
 * Summarizes the values of R runs. Throws on an empty list or a non-finite value: a NaN or
 * infinite metric means a broken run, and averaging it away would hide that.
 */
export function summarize(values: readonly number[]): Stat {
  const n = values.length;
  if (n === 0) throw new MetaplasticError('E_DATA', 'summarize: no values (n = 0)');
  values.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new MetaplasticError('E_DATA', `summarize: value ${i} is not a finite number (${String(v)})`);
    }
  });
  const mean = meanOf(values);
  if (n === 1) return { mean, std: 0, ci95: [mean, mean], n };
  let ss = 0;
  for (const v of values) ss += (v - mean) * (v - mean);
  const std = Math.sqrt(ss / (n - 1));
  return { mean, std, ci95: bootstrapInterval(values, mean), n };
}

/**
 * The 2.5% and 97.5% quantiles of the means of BOOTSTRAP_RESAMPLES resamples (with replacement) of
 * `values`. The generator's seed is fixed, so equal values give byte-equal intervals (eval.json is a pure
 * function of its inputs). The mean is kept inside the interval, as a percentile interval of a skewed
 * quantity can otherwise miss it by a rounding.
 */
export function bootstrapInterval(values: readonly number[], mean = meanOf(values)): [number, number] {
  const n = values.length;
  const next = mulberry32(0x5eed + n);
  const means = new Float64Array(BOOTSTRAP_RESAMPLES);
  for (let b = 0; b < BOOTSTRAP_RESAMPLES; b++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += values[Math.floor(next() * n)];
    means[b] = sum / n;
  }
  means.sort();
  // The resampled means lie within [min, max] of the values up to rounding; clamp that rounding away.
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const clamp = (x: number) => Math.min(hi, Math.max(lo, x));
  return [Math.min(mean, clamp(quantileSorted(means, 0.025))), Math.max(mean, clamp(quantileSorted(means, 0.975)))];
}

/** The p-quantile of sorted values, linearly interpolated between order statistics (R's type 7). */
export function quantileSorted(sorted: ArrayLike<number>, p: number): number {
  const h = (sorted.length - 1) * p;
  const i = Math.floor(h);
  const j = Math.min(i + 1, sorted.length - 1);
  return sorted[i] + (h - i) * (sorted[j] - sorted[i]);
}

/** A small, fast, seedable uniform generator on [0, 1) (Mulberry32). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Pointwise summary of R curves of equal length (curves[run][point]): one Stat per point.
 */
export function summarizeCurves(curves: readonly (readonly number[])[]): Stat[] {
  if (curves.length === 0) throw new MetaplasticError('E_DATA', 'summarizeCurves: no curves (n = 0)');
  const len = curves[0].length;
  curves.forEach((c, r) => {
    if (c.length !== len) {
      throw new MetaplasticError('E_SHAPE', `summarizeCurves: curve ${r} has ${c.length} points, curve 0 has ${len}`);
    }
  });
  const out: Stat[] = [];
  for (let k = 0; k < len; k++) out.push(summarize(curves.map((c) => c[k])));
  return out;
}

/** Half-width of the 95% interval (what a "mean ± x" table shows). */
export function ciHalfWidth(s: Stat): number {
  return (s.ci95[1] - s.ci95[0]) / 2;
}

// Mean with a correction pass, so that n copies of x average to exactly x.
function meanOf(values: readonly number[]): number {
  let sum = 0;
  for (const v of values) sum += v;
  const m = sum / values.length;
  let resid = 0;
  for (const v of values) resid += v - m;
  return m + resid / values.length;
}
