/**
 * Data-parallel meta-training: where a worker finds its group. Settings come from the caller or from the
 * environment variables that torchrun, SLURM scripts and Kubernetes training operators set for PyTorch
 * workers (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK), so metaplastic workers start unchanged
 * under them.
 */
import { configError } from './errors.js';
import type { GroupSettings } from './engine-types.js';

/** Where this worker finds its group (generated from the engine's definition, which validates it). */
export type { GroupSettings } from './engine-types.js';
/** @deprecated The engine's name for it: `GroupSettings`. */
export type DistributedOptions = GroupSettings;

function envInt(env: NodeJS.ProcessEnv, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') throw configError(name, 'is not set; a distributed worker needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (torchrun sets them all)');
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min || v > max) throw configError(name, `expected an integer in ${min} … ${max}, got ${JSON.stringify(raw)}`);
  return v;
}

/**
 * The group described by the environment, or undefined when this process is not one of several workers
 * (WORLD_SIZE unset or 1). A partial or malformed description is an error naming the variable.
 */
export function distributedFromEnv(env: NodeJS.ProcessEnv = process.env): GroupSettings | undefined {
  if (env.WORLD_SIZE === undefined || env.WORLD_SIZE.trim() === '') return undefined;
  const worldSize = envInt(env, 'WORLD_SIZE', 1);
  if (worldSize === 1) return undefined;
  const rank = envInt(env, 'RANK', 0, worldSize - 1);
  const masterAddr = env.MASTER_ADDR?.trim();
  if (!masterAddr) throw configError('MASTER_ADDR', 'is not set; give the host name or address of rank 0');
  const masterPort = envInt(env, 'MASTER_PORT', 1, 65535);
  const options: GroupSettings = { rank, worldSize, masterAddr, masterPort };
  if (env.METAPLASTIC_DIST_TIMEOUT) {
    const t = Number(env.METAPLASTIC_DIST_TIMEOUT);
    if (!(t > 0 && Number.isFinite(t))) throw configError('METAPLASTIC_DIST_TIMEOUT', `expected a positive number of seconds, got ${JSON.stringify(env.METAPLASTIC_DIST_TIMEOUT)}`);
    options.timeoutSeconds = t;
  }
  if (env.GLOO_SOCKET_IFNAME) options.ifname = env.GLOO_SOCKET_IFNAME;
  return options;
}

export function sameGroup(a: GroupSettings, b: GroupSettings): boolean {
  return a.rank === b.rank && a.worldSize === b.worldSize && a.masterAddr === b.masterAddr && a.masterPort === b.masterPort;
}
