import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { runtimeInfo, cudaLoadError, type RuntimeInfo } from '../runtime.js';
import { nativeLocation } from '../native.js';

export interface DeviceFacts {
  /** An NVIDIA driver is installed (so a GPU is expected). */
  driver: boolean;
  /** METAPLASTIC_DISABLE_CUDA is set. */
  disabled: boolean;
  /** The dynamic loader's message when libtorch's CUDA library did not load. */
  loadError: string | null;
}

function nvidiaDriver(): boolean {
  return existsSync('/proc/driver/nvidia/version') || existsSync('/dev/nvidiactl');
}

/**
 * Why the device is the CPU, in words a user can act on: no GPU is the normal case and says so; a
 * loader message (a missing CUDA library) matters only when there is a GPU, or with --verbose.
 */
export function deviceNote(info: Pick<RuntimeInfo, 'cudaAvailable'>, facts: DeviceFacts, verbose: boolean): string[] {
  if (info.cudaAvailable) return [];
  const detail = verbose && facts.loadError ? [`CUDA loader: ${facts.loadError.split('\n')[0]}`] : [];
  if (facts.disabled) return ['CUDA disabled by METAPLASTIC_DISABLE_CUDA; using the CPU', ...detail];
  if (!facts.driver) return ['no NVIDIA GPU found; using the CPU', ...detail];
  return [`an NVIDIA driver is present but libtorch's CUDA support did not load; using the CPU${verbose ? '' : ' (run with --verbose for the loader message)'}`, ...detail];
}

export function registerInfo(program: Command): void {
  program
    .command('info')
    .description('Show the metaplastic and libtorch versions, the device in use, thread count, and where the addon and libtorch are.')
    .option('--json', 'print the runtime information as JSON')
    .option('--verbose', 'also show why CUDA support did not load (the dynamic loader message)')
    .action((opts: { json?: boolean; verbose?: boolean }) => {
      const info = runtimeInfo();
      if (opts.json) {
        process.stdout.write(JSON.stringify(info) + '\n');
        return;
      }
      const facts = { driver: nvidiaDriver(), disabled: !!process.env.METAPLASTIC_DISABLE_CUDA && process.env.METAPLASTIC_DISABLE_CUDA !== '0', loadError: cudaLoadError() };
      const note = deviceNote(info, facts, !!opts.verbose);
      const where = nativeLocation();
      process.stdout.write(
        [
          `metaplastic   ${info.version}`,
          `libtorch      ${info.torchVersion}`,
          `device        ${info.device}${note.length ? `  (${note[0]})` : ''}`,
          ...note.slice(1).map((l) => `              ${l}`),
          `CUDA devices  ${info.cudaDeviceCount}`,
          `threads       ${info.threads}`,
          `addon         ${where.addon}`,
          `libtorch dir  ${where.libtorch}`,
        ].join('\n') + '\n',
      );
    });
}
