import type { Command } from 'commander';
import { runtimeInfo, cudaLoadError } from '../runtime.js';

export function registerInfo(program: Command): void {
  program
    .command('info')
    .description('Show the metaplastic and libtorch versions, the device in use and thread count.')
    .option('--json', 'print the runtime information as JSON')
    .action((opts: { json?: boolean }) => {
      const info = runtimeInfo();
      if (opts.json) {
        process.stdout.write(JSON.stringify(info) + '\n');
        return;
      }
      const why = info.cudaAvailable ? '' : `  (CUDA not in use${cudaLoadError() ? ': ' + firstLine(cudaLoadError()!) : ''})`;
      process.stdout.write(
        [
          `metaplastic   ${info.version}`,
          `libtorch      ${info.torchVersion}`,
          `device        ${info.device}${why}`,
          `CUDA devices  ${info.cudaDeviceCount}`,
          `threads       ${info.threads}`,
        ].join('\n') + '\n',
      );
    });
}

function firstLine(s: string): string {
  return s.split('\n')[0].slice(0, 120);
}
