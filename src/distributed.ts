/**
 * Data-parallel meta-training: where a worker finds its group. Settings come from the caller or from the
 * environment variables that torchrun, SLURM scripts and Kubernetes training operators set for PyTorch
 * workers (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK), so metaplastic workers start unchanged
 * under them.
 */
import { configError } from './errors.js';

export interface DistributedOptions {
  /** This worker's rank, 0 … worldSize − 1. Rank 0 hosts the rendezvous store and writes the run folder. */
  rank: number;
  worldSize: number;
  /** Host name or address of rank 0. */
  masterAddr: string;
  /** Port rank 0 listens on for the rendezvous. */
  masterPort: number;
  /** Seconds a rendezvous or a meta-step's all-reduce waits for the slowest worker before the group stops
   * with an error naming the missing rank (default 300). */
  timeoutSeconds?: number;
  /** Network interface for the workers' connections (as GLOO_SOCKET_IFNAME; default: from the address). */
  ifname?: string;
}

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
export function distributedFromEnv(env: NodeJS.ProcessEnv = process.env): DistributedOptions | undefined {
  if (env.WORLD_SIZE === undefined || env.WORLD_SIZE.trim() === '') return undefined;
  const worldSize = envInt(env, 'WORLD_SIZE', 1);
  if (worldSize === 1) return undefined;
  const rank = envInt(env, 'RANK', 0, worldSize - 1);
  const masterAddr = env.MASTER_ADDR?.trim();
  if (!masterAddr) throw configError('MASTER_ADDR', 'is not set; give the host name or address of rank 0');
  const masterPort = envInt(env, 'MASTER_PORT', 1, 65535);
  const options: DistributedOptions = { rank, worldSize, masterAddr, masterPort };
  if (env.METAPLASTIC_DIST_TIMEOUT) {
    const t = Number(env.METAPLASTIC_DIST_TIMEOUT);
    if (!(t > 0 && Number.isFinite(t))) throw configError('METAPLASTIC_DIST_TIMEOUT', `expected a positive number of seconds, got ${JSON.stringify(env.METAPLASTIC_DIST_TIMEOUT)}`);
    options.timeoutSeconds = t;
  }
  if (env.GLOO_SOCKET_IFNAME) options.ifname = env.GLOO_SOCKET_IFNAME;
  return options;
}

/** Checks options given from TypeScript; returns them as the engine takes them. */
export function checkDistributed(d: unknown): DistributedOptions {
  if (typeof d !== 'object' || d === null) throw configError('distributed', 'expected { rank, worldSize, masterAddr, masterPort }');
  const o = d as Record<string, unknown>;
  const int = (k: string, min: number, max: number) => {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw configError(`distributed.${k}`, `expected an integer in ${min} … ${max}, got ${JSON.stringify(v)}`);
    return v;
  };
  const worldSize = int('worldSize', 1, 65535);
  const rank = int('rank', 0, worldSize - 1);
  const masterPort = int('masterPort', 1, 65535);
  if (typeof o.masterAddr !== 'string' || o.masterAddr.trim() === '') throw configError('distributed.masterAddr', 'expected the host name or address of rank 0');
  const out: DistributedOptions = { rank, worldSize, masterAddr: o.masterAddr, masterPort };
  if (o.timeoutSeconds !== undefined) {
    if (typeof o.timeoutSeconds !== 'number' || !(o.timeoutSeconds > 0) || !Number.isFinite(o.timeoutSeconds)) {
      throw configError('distributed.timeoutSeconds', `expected a positive number of seconds, got ${JSON.stringify(o.timeoutSeconds)}`);
    }
    out.timeoutSeconds = o.timeoutSeconds;
  }
  if (o.ifname !== undefined) {
    if (typeof o.ifname !== 'string' || o.ifname === '') throw configError('distributed.ifname', 'expected a network interface name');
    out.ifname = o.ifname;
  }
  return out;
}

export function sameGroup(a: DistributedOptions, b: DistributedOptions): boolean {
  return a.rank === b.rank && a.worldSize === b.worldSize && a.masterAddr === b.masterAddr && a.masterPort === b.masterPort;
}
