/**
 * `metaplastic train --nproc N`: starts N workers of the same command on this machine, with the
 * torchrun-style variables (RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free MASTER_PORT) and a share of
 * the cores each. Rank 0 owns the terminal; the others' messages are prefixed with their rank. When a
 * worker fails, the others stop by themselves (the group names the lost rank); any still running after a
 * grace period are terminated, and the launcher exits with the failed worker's code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { createInterface } from 'node:readline';
import { EXIT } from './exit-codes.js';
import { hasCheckpoint } from '../run.js';

/** The signals that stop a run and save it: Ctrl-C, and what SLURM, Kubernetes and a closed terminal send. */
export const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Set in each worker's environment to the launcher's --nproc: the worker's resume hint repeats it. */
export const LAUNCHER_NPROC_ENV = 'METAPLASTIC_NPROC';

/** A port that was free a moment ago on the loopback interface (rank 0 listens on it). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The command line without the option `name` and its value (`--name V` or `--name=V`). */
export function withoutOption(args: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === name) i++;
    else if (!args[i].startsWith(`${name}=`)) out.push(args[i]);
  }
  return out;
}

export interface LaunchOptions {
  /** libtorch threads per worker (default: the cores divided among the workers). */
  threads?: number;
  /** Seconds the survivors get to stop by themselves after a worker fails, or to save after a signal; then
   *  SIGTERM, and after as long again SIGKILL (which also ends a stopped worker). */
  graceSeconds?: number;
  /** The run folder, to say whether it keeps a checkpoint when a worker fails. */
  runDir?: string;
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

/** Runs `args` (a `train` command line) as `nproc` workers; resolves to the launcher's exit code. */
export async function launchWorkers(args: string[], nproc: number, options: LaunchOptions = {}): Promise<number> {
  const port = await freeLoopbackPort();
  const threads = options.threads ?? Math.max(1, Math.floor(availableParallelism() / nproc));
  const workerArgs = [...withoutOption(withoutOption(args, '--nproc'), '--threads'), '--threads', String(threads)];
  const script = process.argv[1];
  const workers: ChildProcess[] = [];
  let failure: { rank: number; code: number; text: string } | undefined;
  let interrupted = false;
  const timers: NodeJS.Timeout[] = [];
  const grace = (options.graceSeconds ?? 30) * 1000;
  const running = () => workers.filter((w) => w.exitCode === null && w.signalCode === null);
  // Workers that outlast the grace period get SIGTERM (they save and stop), and after as long again SIGKILL:
  // a worker that hangs or was stopped (SIGSTOP) cannot keep the launcher waiting forever.
  const escalate = (first: NodeJS.Signals | null) => {
    if (first) timers.push(setTimeout(() => {
      for (const w of running()) w.kill(first);
    }, grace));
    timers.push(setTimeout(() => {
      for (const w of running()) w.kill('SIGKILL');
    }, first ? 2 * grace : grace));
  };

  const exited = Array.from({ length: nproc }, (_, rank) => {
    const env = { ...process.env, RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: String(nproc), LOCAL_WORLD_SIZE: String(nproc), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), [LAUNCHER_NPROC_ENV]: String(nproc) };
    // Own process group: a terminal's Ctrl-C reaches the launcher only, which forwards it exactly once. The IPC
    // channel closes when the launcher dies, however it dies (kill -9 included): the worker then saves and stops.
    const child = spawn(process.execPath, [...process.execArgv, script, ...workerArgs], { env, detached: true, stdio: ['ignore', rank === 0 ? 'inherit' : 'ignore', rank === 0 ? 'inherit' : 'pipe', 'ipc'] });
    workers.push(child);
    if (child.stderr) createInterface({ input: child.stderr }).on('line', (line) => process.stderr.write(`[rank ${rank}] ${line}\n`));
    return new Promise<void>((resolve) => {
      child.on('exit', (code, signal) => {
        const failed = signal !== null || (code !== 0 && code !== EXIT.interrupted);
        if (failed && !failure && !interrupted) {
          failure = { rank, code: code ?? EXIT.failure, text: describeExit(code, signal) };
          // The others notice the lost rank by themselves; terminate any that do not.
          escalate('SIGTERM');
        }
        resolve();
      });
      child.on('error', (e) => {
        failure ??= { rank, code: EXIT.failure, text: `could not start: ${e.message}` };
        resolve();
      });
    });
  });

  // Ctrl-C, SIGTERM and SIGHUP reach every worker once (each saves and stops); a second one ends them at once.
  const forward = (signal: NodeJS.Signals) => {
    if (interrupted) {
      for (const w of running()) w.kill('SIGKILL');
      return;
    }
    interrupted = true;
    for (const w of running()) w.kill(signal === 'SIGINT' ? 'SIGINT' : 'SIGTERM');
    escalate(null);
  };
  for (const s of STOP_SIGNALS) process.on(s, forward);
  try {
    await Promise.all(exited);
  } finally {
    for (const s of STOP_SIGNALS) process.removeListener(s, forward);
    timers.forEach(clearTimeout);
  }
  if (interrupted) return EXIT.interrupted;
  if (failure) {
    const kept = options.runDir === undefined ? 'the run folder keeps its last checkpoint, if any' : hasCheckpoint(options.runDir) ? `${options.runDir} keeps the last checkpoint` : `${options.runDir} holds no checkpoint yet`;
    process.stderr.write(`metaplastic: worker rank ${failure.rank} ${failure.text}; ${kept}\n`);
    return failure.code === 0 ? EXIT.failure : failure.code;
  }
  return EXIT.ok;
}
