// Threads for CLI commands: `--threads N`, and a warning when the machine's load says that other
// processes already compete for the cores (libtorch's threads then slow everything down several-fold).
import { availableParallelism, loadavg } from 'node:os';
import { runtimeInfo, setThreads } from '../runtime.js';

/** The warning to print, or null: when the 1-minute load plus our threads exceeds the cores. */
export function contentionWarning(load1: number, cores: number, threads: number): string | null {
  if (load1 + threads <= cores + 0.5) return null;
  return (
    `warning: the machine's load (${load1.toFixed(1)} over the last minute on ${cores} cores) says other processes compete for the cores, ` +
    `and libtorch will use ${threads} thread${threads === 1 ? '' : 's'}; oversubscribed threads slow every process down several-fold. ` +
    `Give each process a share with --threads N (or OMP_NUM_THREADS=N).`
  );
}

/** Applies --threads; without a choice (--threads or OMP_NUM_THREADS), warns about contention. */
export function applyThreads(threads: number | undefined, log: (line: string) => void): void {
  if (threads !== undefined) {
    setThreads(threads);
    return;
  }
  if (process.env.OMP_NUM_THREADS) return;
  const warning = contentionWarning(loadavg()[0], availableParallelism(), runtimeInfo().threads);
  if (warning) log(warning);
}
