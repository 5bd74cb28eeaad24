/** The `metaplastic` command line. Each subcommand lives in its own module under src/cli/. */
import { Command, CommanderError } from 'commander';
import { MetaplasticError } from '../errors.js';
import { registerInfo } from './info.js';
import { registerData } from './data.js';
import { registerTrain } from './train.js';
import { registerEval } from './eval.js';
import { registerCompare } from './compare.js';
import { registerAnalyze } from './analyze.js';
import { registerPresets } from './presets.js';
import { registerDemo } from './demo.js';
import { registerSetup } from './setup.js';
import { CliExit } from './args.js';
import { packageVersion } from '../version.js';
import { EXIT, exitCodeFor, exitCodeHelp } from './exit-codes.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('metaplastic')
    .description('Meta-learn plastic networks with learned feedback (FLP) and compare them with OML.')
    .version(packageVersion(), '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', '\n' + exitCodeHelp())
    .exitOverride();
  registerSetup(program);
  registerInfo(program);
  registerData(program);
  registerPresets(program);
  registerTrain(program);
  registerEval(program);
  registerCompare(program);
  registerAnalyze(program);
  registerDemo(program);
  return program;
}

/** Runs the CLI; returns the process exit code instead of exiting (testable). */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version exit with code 0; usage errors (printed by commander) with the usage code.
      return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (e instanceof CliExit) {
      if (e.message) process.stderr.write(`metaplastic: ${e.message}\n`);
      return e.exitCode;
    }
    if (e instanceof MetaplasticError) {
      process.stderr.write(`metaplastic: error [${e.code}]: ${e.message}\n`);
      return exitCodeFor(e.code);
    }
    process.stderr.write(`metaplastic: unexpected error: ${e instanceof Error ? e.stack : String(e)}\n`);
    return EXIT.failure;
  }
}
