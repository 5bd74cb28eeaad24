import test from 'ava';
import { ciHalfWidth, logGamma, regularizedIncompleteBeta, studentTQuantile, summarize, summarizeCurves } from '../src/stats.js';

const close = (a: number, b: number, tol: number) => Math.abs(a - b) <= tol;

test('t quantiles match the printed tables', (t) => {
  const table: [number, number, number, number][] = [
    // p, df, table value, tolerance (table precision)
    [0.975, 1, 12.706, 5e-4],
    [0.975, 2, 4.303, 5e-4],
    [0.975, 4, 2.776, 5e-4],
    [0.975, 9, 2.262, 5e-4],
    [0.975, 29, 2.045, 5e-4],
    [0.975, 49, 2.0096, 5e-5],
    [0.975, 1000, 1.9623, 5e-5],
    [0.995, 10, 3.169, 5e-4],
    [0.95, 5, 2.015, 5e-4],
  ];
  for (const [p, df, want, tol] of table) t.true(close(studentTQuantile(p, df), want, tol), `t(${p}, ${df})`);
});

test('t quantiles match closed forms for df = 1 and df = 2, and the normal limit', (t) => {
  for (const p of [0.6, 0.9, 0.975, 0.999]) {
    t.true(close(studentTQuantile(p, 1), Math.tan(Math.PI * (p - 0.5)), 1e-9 * Math.tan(Math.PI * (p - 0.5))));
    const exact2 = (2 * p - 1) / Math.sqrt(2 * p * (1 - p));
    t.true(close(studentTQuantile(p, 2), exact2, 1e-10 * exact2));
  }
  t.true(close(studentTQuantile(0.975, 1e7), 1.959963984540054, 1e-6));
  t.is(studentTQuantile(0.5, 3), 0);
  t.is(studentTQuantile(0.025, 4), -studentTQuantile(0.975, 4));
  t.throws(() => studentTQuantile(1, 3), { instanceOf: RangeError });
  t.throws(() => studentTQuantile(0.9, 0), { instanceOf: RangeError });
});

test('special functions agree with known values', (t) => {
  t.true(close(logGamma(5), Math.log(24), 1e-12));
  t.true(close(logGamma(0.5), 0.5 * Math.log(Math.PI), 1e-12));
  // I_x(1, 1) = x and I_x(a, 1) = x^a
  t.true(close(regularizedIncompleteBeta(0.3, 1, 1), 0.3, 1e-14));
  t.true(close(regularizedIncompleteBeta(0.7, 3, 1), 0.343, 1e-13));
});

test('summarize: mean, sample std and t interval in closed form', (t) => {
  // 1..5: mean 3, sample variance 10/4 = 2.5
  const s = summarize([1, 2, 3, 4, 5]);
  t.is(s.n, 5);
  t.is(s.mean, 3);
  t.true(close(s.std, Math.sqrt(2.5), 1e-15));
  const half = 2.7764451051977987 * Math.sqrt(2.5) / Math.sqrt(5);
  t.true(close(s.ci95[0], 3 - half, 1e-12));
  t.true(close(s.ci95[1], 3 + half, 1e-12));
  t.true(close(ciHalfWidth(s), half, 1e-12));

  // two values a, b: std = |a-b|/√2, half-width = 12.706·|a-b|/2
  const two = summarize([2, 4]);
  t.true(close(two.std, Math.SQRT2, 1e-15));
  t.true(close(ciHalfWidth(two), 12.706204736174707, 1e-9));
});

test('summarize: constant values give exactly that mean and zero spread', (t) => {
  const s = summarize([0.1, 0.1, 0.1]);
  t.is(s.mean, 0.1);
  t.is(s.std, 0);
  t.deepEqual(s.ci95, [0.1, 0.1]);
});

test('summarize: one value has std 0 and a degenerate interval; none throws', (t) => {
  t.deepEqual(summarize([0.42]), { mean: 0.42, std: 0, ci95: [0.42, 0.42], n: 1 });
  t.throws(() => summarize([]), { message: /n = 0/ });
  t.throws(() => summarize([1, Number.NaN]), { message: /value 1 is not a finite number/ });
});

test('summarizeCurves: pointwise over runs', (t) => {
  const stats = summarizeCurves([
    [1, 10, 5],
    [3, 20, 5],
  ]);
  t.deepEqual(stats.map((s) => s.mean), [2, 15, 5]);
  t.deepEqual(stats.map((s) => s.n), [2, 2, 2]);
  t.true(close(stats[1].std, 10 / Math.SQRT2, 1e-12));
  t.is(stats[2].std, 0);
  t.throws(() => summarizeCurves([]), { message: /n = 0/ });
  t.throws(() => summarizeCurves([[1, 2], [1]]), { message: /curve 1 has 1 points/ });
});
