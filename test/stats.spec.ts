import test from 'ava';
import { ciHalfWidth, summarize, summarizeCurves } from '../src/stats.js';

const close = (a: number, b: number, tol: number) => Math.abs(a - b) <= tol;

// A seeded normal sample (Box–Muller on a linear congruential generator), independent of the code under test.
function normals(n: number, seed: number, mean = 0, sd = 1): number[] {
  let state = seed >>> 0;
  const uniform = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state + 0.5) / 4294967296;
  };
  return Array.from({ length: n }, () => mean + sd * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()));
}

test('summarize: mean and sample std in closed form', (t) => {
  // 1..5: mean 3, sample variance 10/4 = 2.5
  const s = summarize([1, 2, 3, 4, 5]);
  t.is(s.n, 5);
  t.is(s.mean, 3);
  t.true(close(s.std, Math.sqrt(2.5), 1e-15));
  t.true(s.ci95[0] < 3 && s.ci95[1] > 3);
  t.true(close(ciHalfWidth(s), (s.ci95[1] - s.ci95[0]) / 2, 0));
  const two = summarize([2, 4]);
  t.true(close(two.std, Math.SQRT2, 1e-15));
});

test('bootstrap interval of two values is [min, max]: the resampled means are a, (a+b)/2, b with probabilities 1/4, 1/2, 1/4', (t) => {
  t.deepEqual(summarize([2, 4]).ci95, [2, 4]);
  t.deepEqual(summarize([0.9, 0.1]).ci95, [0.1, 0.9]);
});

test('bootstrap interval of three values matches the exact percentiles of all 27 resamples', (t) => {
  const values = [0.3, 1.1, 4.0];
  const means: number[] = [];
  for (const a of values) for (const b of values) for (const c of values) means.push((a + b + c) / 3);
  means.sort((x, y) => x - y);
  // Exact distribution function of the resampled mean; the interval's ends sit where it crosses 2.5% and 97.5%.
  const cdf = (x: number) => means.filter((m) => m <= x + 1e-12).length / means.length;
  const [lo, hi] = summarize(values).ci95;
  t.true(cdf(lo) >= 0.025 - 0.01 && cdf(lo - 1e-9) <= 0.025 + 0.01, `lower ${lo}`);
  t.true(cdf(hi) >= 0.975 - 0.01 && cdf(hi - 1e-9) <= 0.975 + 0.01, `upper ${hi}`);
});

test('bootstrap interval covers the true mean about 95% of the time (normal samples of 50)', (t) => {
  let covered = 0;
  const trials = 300;
  for (let k = 0; k < trials; k++) {
    const [lo, hi] = summarize(normals(50, 1000 + k, 1, 2)).ci95;
    if (lo <= 1 && 1 <= hi) covered++;
  }
  // Percentile bootstrap undercovers slightly at n = 50 (≈ 93–94%); 300 trials have a 1.3-point standard error.
  t.true(covered / trials > 0.89 && covered / trials < 0.99, `coverage ${covered / trials}`);
});

test('bootstrap interval stays within the quantity\'s range: errors >= 0, accuracies in [0, 1], at n = 2 and n = 50', (t) => {
  const errors = normals(50, 7).map((z) => 0.01 * Math.exp(2.5 * z)); // heavy right tail, all > 0
  const accuracies = normals(50, 8).map((z) => Math.min(1, Math.max(0, 0.9 + 0.2 * z))); // many exactly 1
  for (const values of [errors, accuracies]) {
    for (const n of [2, 50]) {
      const s = summarize(values.slice(0, n));
      t.true(s.ci95[0] >= Math.min(...values.slice(0, n)) && s.ci95[1] <= Math.max(...values.slice(0, n)));
      t.true(s.ci95[0] <= s.mean && s.mean <= s.ci95[1]);
    }
  }
  t.true(summarize(errors.slice(0, 2)).ci95[0] >= 0);
});

test('bootstrap interval is a pure function of the values (eval.json stays byte-identical)', (t) => {
  const values = normals(20, 3);
  t.deepEqual(summarize(values).ci95, summarize([...values]).ci95);
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
