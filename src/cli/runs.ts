// What a run directory holds (config.json, metrics.jsonl, the checkpoint, eval.json) and how the
// commands read it.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { METRICS_FILE } from '../experiment.js';
import { parseMetrics, type MetricsRecord } from '../results.js';

/** The engine's checkpoint manifest (crates/metaplastic-core/src/checkpoint.rs). */
export const CHECKPOINT_FILE = 'checkpoint.json';
export const CONFIG_FILE = 'config.json';
export const EVAL_FILE = 'eval.json';

export function hasCheckpoint(dir: string): boolean {
  return existsSync(join(dir, CHECKPOINT_FILE));
}

/**
 * The run's metrics, or [] when it has none. Skipped (non-finite) meta-steps are recorded with a null
 * loss; they are dropped here, since the schema and the plots want finite losses.
 */
export async function readRunMetrics(dir: string): Promise<MetricsRecord[]> {
  const path = join(dir, METRICS_FILE);
  if (!existsSync(path)) return [];
  const text = await readFile(path, 'utf8');
  const kept = text.split('\n').filter((line) => !/"metaLoss":null\b/.test(line));
  return parseMetrics(kept.join('\n'), path);
}

/** Mean meta-loss over the last 10% of the recorded steps (at least one), or null without records. */
export function finalMetaLoss(records: readonly MetricsRecord[]): number | null {
  if (records.length === 0) return null;
  const tail = records.slice(-Math.max(1, Math.round(records.length / 10)));
  return tail.reduce((s, r) => s + r.metaLoss, 0) / tail.length;
}

/** Mean meta-loss over the first 10% of the recorded steps, or null. */
export function initialMetaLoss(records: readonly MetricsRecord[]): number | null {
  if (records.length === 0) return null;
  const head = records.slice(0, Math.max(1, Math.round(records.length / 10)));
  return head.reduce((s, r) => s + r.metaLoss, 0) / head.length;
}
