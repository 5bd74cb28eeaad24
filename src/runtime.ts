import { native } from './native.js';
import { configError } from './errors.js';

export interface RuntimeInfo {
  /** metaplastic's version. */
  version: string;
  /** libtorch version the engine runs on, e.g. "2.11.0+cu130". */
  torchVersion: string;
  /** Default device: "cuda:0" when a CUDA GPU is usable, else "mps" on Apple silicon, else "cpu". */
  device: string;
  cudaAvailable: boolean;
  cudaDeviceCount: number;
  /** libtorch's MPS backend (Apple GPUs) is usable. */
  mpsAvailable: boolean;
  /** libtorch intra-op threads. */
  threads: number;
}

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
