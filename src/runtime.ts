import { native } from './native.js';
import { configError } from './errors.js';
import type { RuntimeInfo } from './engine-types.js';

export type { RuntimeInfo } from './engine-types.js';

export function runtimeInfo(): RuntimeInfo {
  return native.runtimeInfo();
}

/** Why CUDA is not in use (null when it is, or no reason is known). */
export function cudaLoadError(): string | null {
  return native.cudaLoadError() ?? null;
}

export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw configError('threads', `must be a positive integer, got ${n}`);
  native.setThreads(n);
}

/** Seeds libtorch's generators (CPU and CUDA). */
export function manualSeed(seed: number): void {
  if (!Number.isSafeInteger(seed)) throw configError('seed', `must be an integer, got ${seed}`);
  native.manualSeed(seed);
}
