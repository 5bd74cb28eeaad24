// Summary statistics over R independent evaluation runs: mean, sample standard deviation and a
// Student-t 95% confidence interval for the mean.
import { MetaplasticError } from './errors.js';

export interface Stat {
  mean: number;
  /** Sample standard deviation (divides by n - 1); 0 when n = 1. */
  std: number;
  /** mean ± t(0.975, n-1)·std/√n; [mean, mean] when n = 1 (one run says nothing about spread). */
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
  const half = studentTQuantile(0.975, n - 1) * (std / Math.sqrt(n));
  return { mean, std, ci95: [mean - half, mean + half], n };
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

// ---------------------------------------------------------------------------------------------
// Student-t quantile. The CDF is written through the regularized incomplete beta function,
// P(|T| > t) = I_{ν/(ν+t²)}(ν/2, 1/2), and inverted by bisection, which converges to full double
// precision for any ν without the tail-accuracy problems of series approximations.

const quantileCache = new Map<string, number>();

/** The p-quantile of Student's t distribution with `df` degrees of freedom (df > 0, 0 < p < 1). */
export function studentTQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`studentTQuantile: p must be in (0, 1), got ${p}`);
  if (!(df > 0) || !Number.isFinite(df)) throw new RangeError(`studentTQuantile: df must be > 0, got ${df}`);
  if (p === 0.5) return 0;
  if (p < 0.5) return -studentTQuantile(1 - p, df);
  const key = `${p}:${df}`;
  const hit = quantileCache.get(key);
  if (hit !== undefined) return hit;
  const tail = 1 - p; // upper-tail probability we want: P(T > t) = tail
  const upperTail = (t: number) => 0.5 * regularizedIncompleteBeta(df / (df + t * t), df / 2, 0.5);
  let lo = 0;
  let hi = 1;
  while (upperTail(hi) > tail) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-15 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (upperTail(mid) > tail) lo = mid;
    else hi = mid;
  }
  const t = (lo + hi) / 2;
  quantileCache.set(key, t);
  return t;
}

/** I_x(a, b), the regularized incomplete beta function, by its continued fraction. */
export function regularizedIncompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const logFront = a * Math.log(x) + b * Math.log1p(-x) - logBeta(a, b);
  // The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise.
  if (x < (a + 1) / (a + b + 2)) return (Math.exp(logFront) * betaContinuedFraction(x, a, b)) / a;
  return 1 - (Math.exp(logFront) * betaContinuedFraction(1 - x, b, a)) / b;
}

// Modified Lentz evaluation of the continued fraction for I_x(a, b).
function betaContinuedFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let f = d;
  for (let m = 1; m <= 10_000; m++) {
    // even step
    let num = (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m));
    d = 1 + num * d;
    c = 1 + num / c;
    if (Math.abs(d) < tiny) d = tiny;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    f *= d * c;
    // odd step
    num = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 + num * d;
    c = 1 + num / c;
    if (Math.abs(d) < tiny) d = tiny;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return f;
}

function logBeta(a: number, b: number): number {
  return logGamma(a) + logGamma(b) - logGamma(a + b);
}

// Lanczos approximation (g = 7, 9 terms), accurate to ~1e-15 for positive arguments.
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
  12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
];

export function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  const z = x - 1;
  let sum = LANCZOS[0];
  for (let i = 1; i < LANCZOS.length; i++) sum += LANCZOS[i] / (z + i);
  const t = z + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(sum);
}
