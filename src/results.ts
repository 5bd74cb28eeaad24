// Evaluation result files (eval.json) and meta-training metrics (metrics.jsonl): types, runtime
// validation, readers that name the file and line of what is wrong, and a canonical serializer.
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { MetaplasticError } from './errors.js';
import type { Stat } from './stats.js';
import type { StepRecord } from './engine-types.js';

export type { Stat } from './stats.js';

export interface SineOrderResult {
  finalMse: Stat;
  /** After each function k = 1..F: MSE over the functions seen so far. */
  curve: Stat[];
  /** Error on function i after all F functions were learned. */
  perFunction: Stat[];
  /** Runs whose errors were not finite (the learner diverged); the statistics cover the other runs. */
  diverged?: number;
}

export interface SineEvalResult {
  protocol: 'sine';
  runs: number;
  functions: number;
  continual: SineOrderResult;
  iid: SineOrderResult;
}

export interface OmniglotPoint {
  classes: number;
  heldOut: Stat;
  train: Stat;
  /** Gradient learners: the meta-test step size chosen on the validation split. */
  stepSize?: number;
  /** Local rules evaluated with `rateBounds`: the rate bound chosen on the validation split (absent: unbounded). */
  rateBound?: number;
}

export interface OmniglotEvalResult {
  protocol: 'omniglot';
  runs: number;
  points: OmniglotPoint[];
}

export interface EvalFile {
  format: 1;
  /** Learner / preset name. */
  name: string;
  checkpointStep: number;
  seed: number;
  options: Record<string, unknown>;
  /** How each `ci95` was computed (stats.ts CI_METHOD); absent in files written before it was recorded. */
  interval?: string;
  result: SineEvalResult | OmniglotEvalResult;
}

/**
 * "Final meta-loss", everywhere (train's summary, compare's table): the mean meta-loss of the last
 * FINAL_WINDOW recorded steps, or of all of them in a shorter run; skipped steps are left out.
 * The label says how many steps it averages.
 */
export const FINAL_WINDOW = 100;

export function metaLossWindow(records: readonly MetricsRecord[]): number {
  return Math.min(FINAL_WINDOW, records.length);
}

export function finalMetaLoss(records: readonly MetricsRecord[]): number | null {
  return records.length === 0 ? null : meanMetaLoss(records.slice(-metaLossWindow(records)));
}

/** The same window at the start of the run. */
export function initialMetaLoss(records: readonly MetricsRecord[]): number | null {
  return records.length === 0 ? null : meanMetaLoss(records.slice(0, metaLossWindow(records)));
}

/** The row label; runs of different lengths (`mixed`) share FINAL_WINDOW, which a shorter run fills with all its steps. */
export function finalMetaLossLabel(steps: number, mixed = false): string {
  const what = `last ${steps} step${steps === 1 ? '' : 's'}`;
  return `final meta-loss (mean of ${mixed ? `${what}, or all in a shorter run` : what})`;
}

/** Mean meta-loss of the steps that were applied (neither skipped nor exploded), or null when there are none. */
export function meanMetaLoss(records: readonly MetricsRecord[]): number | null {
  const losses = records.filter((r) => !r.exploded).map((r) => r.metaLoss).filter((l): l is number => l !== null);
  return losses.length === 0 ? null : losses.reduce((a, b) => a + b, 0) / losses.length;
}

/**
 * One line of metrics.jsonl: the engine's step record as it came (the same record `metaTrain` resolves
 * with and `onProgress` receives), and when it was written.
 */
export interface MetricsRecord extends StepRecord {
  time?: string;
}

// ---------------------------------------------------------------------------------------------
// Schemas. The interfaces above are the documented shape; `Equal` checks below keep the schemas
// from drifting away from them.

const finite = z.number().finite();
const count = z.number().int().nonnegative();

export const statSchema = z
  .object({
    mean: finite,
    std: finite.nonnegative(),
    ci95: z.tuple([finite, finite]),
    n: z.number().int().positive(),
  })
  .refine((s) => s.ci95[0] <= s.ci95[1], { message: 'lower bound exceeds upper bound', path: ['ci95'] });

export const sineOrderResultSchema = z.object({
  finalMse: statSchema,
  curve: z.array(statSchema),
  perFunction: z.array(statSchema),
  diverged: count.optional(),
});

export const sineEvalResultSchema = z
  .object({
    protocol: z.literal('sine'),
    runs: z.number().int().positive(),
    functions: z.number().int().positive(),
    continual: sineOrderResultSchema,
    iid: sineOrderResultSchema,
  })
  .superRefine((r, ctx) => {
    for (const order of ['continual', 'iid'] as const) {
      for (const key of ['curve', 'perFunction'] as const) {
        const len = r[order][key].length;
        if (len !== r.functions) {
          ctx.addIssue({
            code: 'custom',
            path: [order, key],
            message: `has ${len} entries, expected one per function (${r.functions})`,
          });
        }
      }
    }
  });

export const omniglotPointSchema = z.object({
  classes: z.number().int().positive(),
  heldOut: statSchema,
  train: statSchema,
  stepSize: finite.positive().optional(),
  rateBound: finite.positive().optional(),
});

export const omniglotEvalResultSchema = z.object({
  protocol: z.literal('omniglot'),
  runs: z.number().int().positive(),
  points: z.array(omniglotPointSchema),
});

export const evalFileSchema = z.object({
  format: z.literal(1),
  name: z.string().min(1),
  checkpointStep: count,
  seed: z.number().int(),
  options: z.record(z.string(), z.unknown()),
  interval: z.string().optional(),
  result: z.discriminatedUnion('protocol', [sineEvalResultSchema, omniglotEvalResultSchema]),
});

export const metricsRecordSchema = z.object({
  step: count,
  metaLoss: finite.nullable(),
  gradNorm: finite.nullable(),
  clipped: z.boolean(),
  skipped: z.boolean(),
  skippedTotal: count,
  exploded: z.boolean(),
  explodedTotal: count,
  seconds: finite.nonnegative(),
  time: z.string().optional(),
});

/**
 * The lines metaplastic wrote before the metrics file held the engine's step record: cumulative counts under
 * `skipped`/`exploded`, the group rates and the chunk's speed. Read into the current record.
 */
const legacyMetricsRecordSchema = z.object({
  step: count,
  metaLoss: finite.nullable(),
  gradNorm: finite.nullable().optional(),
  lr: z.record(z.string(), finite),
  skipped: count,
  exploded: count.optional(),
  stepsPerSec: finite.nonnegative(),
  time: z.string().optional(),
});

/** A line of the earlier format as the current record; `before` is the record of the line above, if any. */
function fromLegacy(l: z.infer<typeof legacyMetricsRecordSchema>, before: MetricsRecord | undefined): MetricsRecord {
  const explodedTotal = l.exploded ?? 0;
  return {
    step: l.step,
    metaLoss: l.metaLoss,
    gradNorm: l.gradNorm ?? null,
    clipped: false,
    skipped: l.skipped > (before?.skippedTotal ?? 0),
    skippedTotal: l.skipped,
    exploded: explodedTotal > (before?.explodedTotal ?? 0),
    explodedTotal,
    seconds: l.stepsPerSec > 0 ? 1 / l.stepsPerSec : 0,
    ...(l.time === undefined ? {} : { time: l.time }),
  };
}

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(): T | undefined {
  return undefined;
}
assertType<Equal<z.infer<typeof statSchema>, Stat>>();
assertType<Equal<z.infer<typeof omniglotPointSchema>, OmniglotPoint>>();
assertType<Equal<z.infer<typeof evalFileSchema>, EvalFile>>();
assertType<Equal<z.infer<typeof metricsRecordSchema>, MetricsRecord>>();

// ---------------------------------------------------------------------------------------------
// Parsing and reading.

/** "result.continual.curve[3].ci95: expected number" — the first few issues, field paths first. */
function describeIssues(error: z.ZodError): string {
  const shown = error.issues.slice(0, 3).map((i) => `${formatPath(i.path)}: ${i.message}`);
  const more = error.issues.length > 3 ? ` (and ${error.issues.length - 3} more)` : '';
  return shown.join('; ') + more;
}

function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(root)';
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out;
}

// JSON.parse reports a character offset (when it reports one); people want a line and column.
function jsonErrorLocation(text: string, err: unknown): string {
  const m = /position (\d+)/.exec(err instanceof Error ? err.message : '');
  if (!m) return '';
  const pos = Number(m[1]);
  const before = text.slice(0, pos);
  const line = before.split('\n').length;
  const col = pos - before.lastIndexOf('\n');
  return `:${line}:${col}`;
}

/** Validates an already-parsed eval file; `source` names it in errors. */
export function parseEvalFile(text: string, source = '<eval>'): EvalFile {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new MetaplasticError('E_DATA', `${source}${jsonErrorLocation(text, err)}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
  const format = (data as { format?: unknown } | null)?.format;
  if (data !== null && typeof data === 'object' && format !== undefined && format !== 1) {
    throw new MetaplasticError('E_DATA', `${source}: eval file format ${JSON.stringify(format)} is not supported (this version reads format 1)`);
  }
  const parsed = evalFileSchema.safeParse(data);
  if (!parsed.success) {
    throw new MetaplasticError('E_DATA', `${source}: not a valid eval file: ${describeIssues(parsed.error)}`);
  }
  return parsed.data;
}

/** Reads and validates an eval.json file. */
export async function readEvalFile(path: string): Promise<EvalFile> {
  return parseEvalFile(await readText(path, 'eval file'), path);
}

export interface ReadMetricsOptions {
  /**
   * A run killed mid-write leaves a last line without its newline; by default such a line is
   * dropped if it does not parse. Set false to treat it as corruption like any other line.
   */
  allowPartialLastLine?: boolean;
}

/** Parses metrics.jsonl text; blank lines are skipped. `source` names it in errors. */
export function parseMetrics(text: string, source = '<metrics>', options: ReadMetricsOptions = {}): MetricsRecord[] {
  const allowPartial = options.allowPartialLastLine ?? true;
  const lines = text.split('\n');
  const records: MetricsRecord[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    const isUnterminatedLast = i === lines.length - 1 && !text.endsWith('\n');
    let data: unknown;
    try {
      data = JSON.parse(line);
    } catch (err) {
      if (allowPartial && isUnterminatedLast) break;
      throw new MetaplasticError('E_DATA', `${source}:${i + 1}: not valid JSON (${(err as Error).message})`, { cause: err });
    }
    const parsed = metricsRecordSchema.safeParse(data);
    // Lines of the earlier format (a run started by an earlier version) read as the current record.
    if (parsed.success) {
      records.push(parsed.data);
      continue;
    }
    const old = legacyMetricsRecordSchema.safeParse(data);
    if (!old.success) throw new MetaplasticError('E_DATA', `${source}:${i + 1}: not a valid metrics record: ${describeIssues(parsed.error)}`);
    records.push(fromLegacy(old.data, records.at(-1)));
  }
  return records;
}

/** Reads and validates metrics.jsonl (one MetricsRecord per line). */
export async function readMetrics(path: string, options: ReadMetricsOptions = {}): Promise<MetricsRecord[]> {
  return parseMetrics(await readText(path, 'metrics file'), path, options);
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EISDIR' ? 'is a directory' : (err as Error).message;
    throw new MetaplasticError('E_IO', `${path}: cannot read ${what}: ${why}`, { cause: err });
  }
}

// ---------------------------------------------------------------------------------------------
// Canonical serialization and atomic writing.

export interface StableStringifyOptions {
  /** Spaces per indentation level (default 2; 0 for one line). */
  indent?: number;
  /**
   * Round every number to this many significant digits before printing (default: none, print the
   * shortest text that round-trips). Use it to compare results across machines whose last bits differ.
   */
  significantDigits?: number;
}

/**
 * JSON with object keys sorted at every level and numbers printed one way (-0 as 0, optional
 * rounding), so equal results give equal bytes. Non-finite numbers throw: JSON cannot hold them
 * and silently writing null would lose the fact that a run diverged.
 */
export function stableStringify(value: unknown, options: StableStringifyOptions = {}): string {
  const indent = options.indent ?? 2;
  const digits = options.significantDigits;
  if (digits !== undefined && !(Number.isInteger(digits) && digits >= 1 && digits <= 17)) {
    throw new RangeError(`stableStringify: significantDigits must be an integer in 1..17, got ${digits}`);
  }
  const formatNumber = (n: number, path: string): string => {
    if (!Number.isFinite(n)) throw new MetaplasticError('E_DATA', `stableStringify: ${path || '(root)'} is ${n}, which JSON cannot hold`);
    const r = digits === undefined ? n : Number(n.toPrecision(digits));
    return Object.is(r, -0) ? '0' : String(r);
  };
  const pad = (depth: number) => (indent > 0 ? '\n' + ' '.repeat(indent * depth) : '');
  const sep = indent > 0 ? ': ' : ':';
  const seen = new Set<object>();

  const write = (v: unknown, depth: number, path: string): string | undefined => {
    if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
      v = (v as { toJSON: () => unknown }).toJSON();
    }
    if (v === null) return 'null';
    switch (typeof v) {
      case 'number':
        return formatNumber(v, path);
      case 'string':
      case 'boolean':
        return JSON.stringify(v);
      case 'bigint':
        return v.toString();
      case 'undefined':
      case 'function':
      case 'symbol':
        return undefined;
    }
    const obj = v as object;
    if (seen.has(obj)) throw new MetaplasticError('E_DATA', `stableStringify: circular reference at ${path || '(root)'}`);
    seen.add(obj);
    let out: string;
    if (Array.isArray(obj)) {
      const items = obj.map((x, i) => write(x, depth + 1, `${path}[${i}]`) ?? 'null');
      out = items.length === 0 ? '[]' : `[${items.map((s) => pad(depth + 1) + s).join(',')}${pad(depth)}]`;
    } else {
      const keys = Object.keys(obj).sort();
      const parts: string[] = [];
      for (const k of keys) {
        const s = write((obj as Record<string, unknown>)[k], depth + 1, path ? `${path}.${k}` : k);
        if (s !== undefined) parts.push(`${pad(depth + 1)}${JSON.stringify(k)}${sep}${s}`);
      }
      out = parts.length === 0 ? '{}' : `{${parts.join(',')}${pad(depth)}}`;
    }
    seen.delete(obj);
    return out;
  };
  return write(value, 0, '') ?? 'null';
}

/** Writes `text` to `path` through a temporary file and a rename, so readers never see half a file. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw new MetaplasticError('E_IO', `${path}: cannot write: ${(err as Error).message}`, { cause: err });
  }
}

/** Validates and writes an eval file in canonical form (stableStringify + newline), atomically. */
export async function writeEvalFile(path: string, file: EvalFile): Promise<void> {
  const parsed = evalFileSchema.safeParse(file);
  if (!parsed.success) throw new MetaplasticError('E_DATA', `${path}: refusing to write an invalid eval file: ${describeIssues(parsed.error)}`);
  await writeFileAtomic(path, stableStringify(parsed.data) + '\n');
}

/** One learner in a comparison: its evaluation and, optionally, its meta-training metrics. */
export interface CompareEntry {
  /** Label shown in tables and legends (usually the learner or preset name). */
  name: string;
  eval: EvalFile;
  metrics?: MetricsRecord[];
}
