import type { Command } from 'commander';
import { ensureLibtorch, SetupError } from '../../scripts/libtorch.mjs';
import { MetaplasticError } from '../errors.js';
import { nativeLocation } from '../native.js';
import { runtimeInfo } from '../runtime.js';

export function registerSetup(program: Command): void {
  program
    .command('setup')
    .description('Install libtorch into the cache (or check the one LIBTORCH points at) and load the engine on it. The first use does this too.')
    .option('--force', 'reinstall the cached libtorch (after an error saying it is incomplete)')
    .option('--json', 'print where the addon and libtorch are, with the runtime information, as JSON')
    .action((opts: { force?: boolean; json?: boolean }) => {
      try {
        ensureLibtorch({ force: !!opts.force, log: (line) => process.stderr.write(line + '\n') });
      } catch (e) {
        if (e instanceof SetupError) throw new MetaplasticError(e.code === 'E_SETUP' ? 'E_LIBTORCH_MISSING' : e.code, e.message, { cause: e });
        throw e;
      }
      const info = runtimeInfo();
      const where = nativeLocation();
      if (opts.json) {
        process.stdout.write(JSON.stringify({ ...where, ...info }) + '\n');
        return;
      }
      process.stdout.write(
        [`libtorch  ${info.torchVersion}  ${where.libtorch}`, `addon     ${where.addon}`, `device    ${info.device}`, 'metaplastic is ready.'].join('\n') + '\n',
      );
    });
}
