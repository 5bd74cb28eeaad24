// What the harness prints, and how two of its results files compare (bench/run.mjs --compare,
// bench/compare.mjs). Nothing here measures.
import { readFileSync } from 'node:fs';

export const fmt = (x, digits = 1) => (x == null || !Number.isFinite(x) ? '-' : x.toFixed(digits));

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** A Markdown table: `columns` are [heading, (row) => cell]; the first column left-aligned. */
export function table(rows, columns) {
  const cells = rows.map((r) => columns.map(([, f]) => String(f(r))));
  const widths = columns.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (vals) => '| ' + vals.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join(' | ') + ' |';
  const sep = '|' + widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|';
  return [line(columns.map(([h]) => h)), sep, ...cells.map(line)].join('\n');
}

/**
 * The engine against the reference over paired rounds: each round's engine median over that round's
 * reference median, then the median of those ratios. Pairing keeps a machine whose speed changes
 * between rounds (a busy neighbour, a throttled core) from counting against one side only.
 */
export function pairedRatio(rounds) {
  const ratios = rounds.filter((r) => r.engine.length && r.reference.length).map((r) => median(r.engine) / median(r.reference));
  return ratios.length ? { ratio: median(ratios), perRound: ratios } : null;
}

/** What differs between the machines of two reports, in words (empty when they match). */
export function machineDifferences(before, after) {
  const a = before.machine ?? {};
  const b = after.machine ?? {};
  const out = [];
  for (const [key, label] of [['cpu', 'CPU'], ['cores', 'cores'], ['threads', 'threads'], ['device', 'device']]) {
    if (a[key] !== b[key]) out.push(`${label}: ${a[key] ?? '?'} → ${b[key] ?? '?'}`);
  }
  if (before.profile?.name !== after.profile?.name) out.push(`profile: ${before.profile?.name ?? '?'} → ${after.profile?.name ?? '?'}`);
  return out;
}

/** The best rate any matmul of a report's `matmul` reached (the machine's limit), or null. */
export function matmulPeak(matmul) {
  const rates = matmul && !matmul.error ? Object.values(matmul).filter((v) => v?.gflops).map((v) => v.gflops) : [];
  return rates.length ? Math.max(...rates) : null;
}

/** Seconds per sample as the results file gives them: median, minimum, every sample (ms), GFLOP/s. */
export function timings(seconds, flops) {
  const sec = median(seconds);
  return { msMedian: sec * 1000, msMin: Math.min(...seconds) * 1000, samplesMs: seconds.map((x) => +(x * 1000).toFixed(1)), gflops: flops / sec / 1e9 };
}

/**
 * Scenario by scenario (those both reports measured without error): times before and after, the speed-up,
 * and the two figures that travel between machines and moods of one machine: the engine over the PyTorch
 * reference of the same run, and the fraction of the same run's matmul rate.
 */
export function compareReports(before, after) {
  const byName = new Map((before.scenarios ?? []).filter((s) => !s.error && s.msMedian > 0).map((s) => [s.name, s]));
  const rows = [];
  for (const s of after.scenarios ?? []) {
    const old = byName.get(s.name);
    if (!old || s.error || !(s.msMedian > 0)) continue;
    rows.push({
      name: s.name,
      beforeMs: old.msMedian,
      afterMs: s.msMedian,
      speedup: old.msMedian / s.msMedian,
      beforeOverReference: old.engineOverReference ?? null,
      afterOverReference: s.engineOverReference ?? null,
      beforeOfMatmul: old.fractionOfMatmulPeak ?? null,
      afterOfMatmul: s.fractionOfMatmulPeak ?? null,
      beforeRssMiB: old.maxRssMiB ?? null,
      afterRssMiB: s.maxRssMiB ?? null,
      beforeLoad: old.loadAverage ?? null,
      afterLoad: s.loadAverage ?? null,
    });
  }
  const missing = [...byName.keys()].filter((n) => !rows.some((r) => r.name === n));
  return { rows, missing, machines: machineDifferences(before, after), peaks: [matmulPeak(before.matmul), matmulPeak(after.matmul)] };
}

/** `compareReports` as the harness prints it. */
export function formatComparison(before, after, labels = ['before', 'after']) {
  const c = compareReports(before, after);
  const [b, a] = labels;
  const lines = [`${b}: ${before.date ?? '?'} (commit ${before.commit ?? '?'}); ${a}: ${after.date ?? '?'} (commit ${after.commit ?? '?'})`];
  if (c.machines.length) lines.push(`different machines or settings (${c.machines.join('; ')}): compare the engine/ref and of-matmul columns, not the times`);
  lines.push(`matmul peak: ${fmt(c.peaks[0])} → ${fmt(c.peaks[1])} GFLOP/s`);
  if (!c.rows.length) {
    lines.push('no scenario was measured in both');
    return lines.join('\n');
  }
  const pct = (x) => (x == null ? '-' : `${fmt(100 * x, 0)}%`);
  const times = (x) => (x == null ? '-' : `${fmt(x, 2)}×`);
  lines.push(table(c.rows, [
    ['scenario', (r) => r.name],
    [`${b} ms`, (r) => fmt(r.beforeMs, 0)],
    [`${a} ms`, (r) => fmt(r.afterMs, 0)],
    ['speed-up', (r) => times(r.speedup)],
    [`engine/ref ${b}`, (r) => times(r.beforeOverReference)],
    [`engine/ref ${a}`, (r) => times(r.afterOverReference)],
    [`of matmul ${b}`, (r) => pct(r.beforeOfMatmul)],
    [`of matmul ${a}`, (r) => pct(r.afterOfMatmul)],
    ['RSS MiB', (r) => `${r.beforeRssMiB ?? '-'} → ${r.afterRssMiB ?? '-'}`],
    ['load', (r) => `${fmt(r.beforeLoad, 2)} → ${fmt(r.afterLoad, 2)}`],
  ]));
  if (c.missing.length) lines.push(`measured only ${b}: ${c.missing.join(', ')}`);
  lines.push('speed-up > 1: faster now. engine/ref < 1: the engine is faster than PyTorch in that run.');
  return lines.join('\n');
}

/** A harness results file (bench/run.mjs --json), or an error that names the file and what is wrong with it. */
export function readReport(path) {
  let text;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${path}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  }
  let report;
  try {
    report = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path} is not JSON (${e.message}); expected a results file of bench/run.mjs --json`);
  }
  if (!report || !Array.isArray(report.scenarios)) throw new Error(`${path} has no "scenarios" list; expected a results file of bench/run.mjs --json`);
  return report;
}
