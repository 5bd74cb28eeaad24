// What a run directory holds (config.json, metrics.jsonl, the checkpoint, eval.json) and how the
// commands read it.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { METRICS_FILE } from '../run-folder.js';
import { parseMetrics, type MetricsRecord } from '../results.js';

export { CHECKPOINT_FILE, CONFIG_FILE, EVAL_FILE, hasCheckpoint } from '../run-folder.js';

/** The run's metrics, or [] when it has none (skipped, non-finite meta-steps have a null loss). */
export async function readRunMetrics(dir: string): Promise<MetricsRecord[]> {
  const path = join(dir, METRICS_FILE);
  if (!existsSync(path)) return [];
  return parseMetrics(await readFile(path, 'utf8'), path);
}
