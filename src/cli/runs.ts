// What a run directory holds (config.json, metrics.jsonl, the checkpoint, eval.json) and how the
// commands read it.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { METRICS_FILE } from '../experiment.js';
import { meanMetaLoss, parseMetrics, type MetricsRecord } from '../results.js';

/** The engine's checkpoint manifest (crates/metaplastic-core/src/checkpoint.rs). */
export const CHECKPOINT_FILE = 'checkpoint.json';
export const CONFIG_FILE = 'config.json';
export const EVAL_FILE = 'eval.json';

export function hasCheckpoint(dir: string): boolean {
  return existsSync(join(dir, CHECKPOINT_FILE));
}

/** The run's metrics, or [] when it has none (skipped, non-finite meta-steps have a null loss). */
export async function readRunMetrics(dir: string): Promise<MetricsRecord[]> {
  const path = join(dir, METRICS_FILE);
  if (!existsSync(path)) return [];
  return parseMetrics(await readFile(path, 'utf8'), path);
}

/** Mean meta-loss over the last 10% of the recorded steps (at least one), or null without records. */
export function finalMetaLoss(records: readonly MetricsRecord[]): number | null {
  if (records.length === 0) return null;
  return meanMetaLoss(records.slice(-Math.max(1, Math.round(records.length / 10))));
}

/** Mean meta-loss over the first 10% of the recorded steps, or null. */
export function initialMetaLoss(records: readonly MetricsRecord[]): number | null {
  if (records.length === 0) return null;
  return meanMetaLoss(records.slice(0, Math.max(1, Math.round(records.length / 10))));
}
