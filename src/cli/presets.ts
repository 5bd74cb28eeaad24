/** `metaplastic presets [NAME]`: the named configurations, or one of them in full (to edit into --config). */
import type { Command } from 'commander';
import { listPresets, preset } from '../presets.js';

export function registerPresets(program: Command): void {
  program
    .command('presets')
    .description("List the paper's configurations, or print one in full as JSON (a starting point for --config).")
    .argument('[name]', 'preset to print')
    .option('--json', 'print the list as JSON')
    .action((name: string | undefined, opts: { json?: boolean }) => {
      if (name !== undefined) {
        // The config is JSON either way; key order kept as written, which reads best when editing.
        process.stdout.write(JSON.stringify(preset(name), null, 2) + '\n');
        return;
      }
      const list = listPresets();
      if (opts.json) {
        process.stdout.write(JSON.stringify(list, null, 2) + '\n');
        return;
      }
      const width = Math.max(...list.map((p) => p.name.length));
      for (const p of list) process.stdout.write(`${p.name.padEnd(width)}  ${p.description}\n`);
      process.stdout.write('\nPrint one in full with `metaplastic presets NAME`; train with `metaplastic train --preset NAME`.\n');
    });
}
