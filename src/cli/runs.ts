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

/** The run's metrics, or [] when it has none (skipped, non-finite meta-steps have a null loss). */
export async function readRunMetrics(dir: string): Promise<MetricsRecord[]> {
  const path = join(dir, METRICS_FILE);
  if (!existsSync(path)) return [];
  return parseMetrics(await readFile(path, 'utf8'), path);
}
