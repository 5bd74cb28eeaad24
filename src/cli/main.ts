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
import { registerReproduce } from './reproduce.js';
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
  registerReproduce(program);
  return program;
}

/**
 * A reader that closes the pipe early (`| head`, quitting `less`) ends the command quietly with exit 0, as
 * git and ls do, instead of an EPIPE stack trace. Nothing is lost: every command writes its files before it
 * prints, so only the rest of the printout goes unread.
 */
export function quietOnClosedPipe(stream: NodeJS.WriteStream, exit: (code: number) => void = process.exit): void {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') exit(EXIT.ok);
    else throw e;
  });
}

/** Edit distance (insertions, deletions, substitutions, adjacent swaps) for "did you mean". */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The command named by argv, when it is not one of the program's: commander would print the top-level help
 * and exit 0 for `metaplastic trian --help`, so a script could not tell. The top level takes no option with a
 * value, so the first word that is not an option is the command.
 */
export function unknownCommand(program: Command, argv: string[]): string | null {
  const word = argv.find((a) => !a.startsWith('-'));
  if (word === undefined) return null;
  const known = ['help', ...program.commands.flatMap((c) => [c.name(), ...c.aliases()])];
  if (known.includes(word)) return null;
  const near = known.map((k) => ({ k, d: editDistance(word, k) })).filter((x) => x.d <= Math.max(1, Math.floor(x.k.length / 3))).sort((x, y) => x.d - y.d)[0];
  return `unknown command '${word}'${near ? ` (did you mean '${near.k}'?)` : ''}; see \`metaplastic --help\` for the commands`;
}

let pipesWatched = false;

/** Runs the CLI; returns the process exit code instead of exiting (testable). */
export async function main(argv: string[]): Promise<number> {
  if (!pipesWatched) {
    pipesWatched = true;
    // A worker of `train --nproc` has an IPC channel to its launcher, used only to notice that the launcher is
    // gone (train.ts onStop); it must not keep the process alive by itself.
    process.channel?.unref();
    quietOnClosedPipe(process.stdout);
    quietOnClosedPipe(process.stderr);
  }
  const program = buildProgram();
  const unknown = unknownCommand(program, argv);
  if (unknown) {
    process.stderr.write(`metaplastic: ${unknown}\n`);
    return EXIT.usage;
  }
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
