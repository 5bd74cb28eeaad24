// What a run folder holds, named once for the library and the command line, and the one rule for starting
// a run in a folder: a folder that holds another run's checkpoint is never written over unless asked.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { MetaplasticError } from './errors.js';

/** The engine's checkpoint manifest (crates/metaplastic-core/src/checkpoint.rs). */
export const CHECKPOINT_FILE = 'checkpoint.json';
export const CONFIG_FILE = 'config.json';
export const EVAL_FILE = 'eval.json';
export const METRICS_FILE = 'metrics.jsonl';

export function hasCheckpoint(dir: string): boolean {
  return existsSync(join(dir, CHECKPOINT_FILE));
}

/**
 * Refuses to start a run in `dir` when it holds another run's checkpoint. `how` says how this caller
 * continues that run instead or replaces it (the CLI's flags, the API's options).
 */
export function refuseExistingRun(dir: string, how: string): void {
  if (hasCheckpoint(dir)) throw new MetaplasticError('E_USAGE', `${dir} already holds a checkpoint (${CHECKPOINT_FILE}) of another run; ${how}`);
}

/** Replacing a run: the files that describe the old one go with it (metrics are cut by step separately). */
export function clearRunFiles(dir: string): void {
  for (const name of [CHECKPOINT_FILE, CONFIG_FILE, EVAL_FILE]) rmSync(join(dir, name), { force: true });
}
