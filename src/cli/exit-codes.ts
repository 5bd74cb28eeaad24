// The command line's exit codes: one table for every command, printed by `--help` and documented in the
// README (a test checks that both match it).
import type { ErrorCode } from '../errors.js';

export const EXIT = { ok: 0, failure: 1, usage: 2, locked: 3, interrupted: 130 } as const;

export const EXIT_CODE_TABLE: readonly { code: number; meaning: string }[] = [
  { code: EXIT.ok, meaning: 'success' },
  { code: EXIT.failure, meaning: 'data, file or engine error (E_DATA, E_IO, E_CHECKPOINT, E_SHAPE, E_TORCH, E_DIST, E_INTERNAL, E_PANIC, E_NATIVE_MISSING, E_NATIVE_INVALID, E_LIBTORCH_*)' },
  { code: EXIT.usage, meaning: 'usage or configuration error: unknown command or option, bad option value (E_USAGE, E_CONFIG)' },
  { code: EXIT.locked, meaning: 'the run folder or experiment is in use by another run (E_LOCKED, E_BUSY)' },
  { code: EXIT.interrupted, meaning: 'interrupted by Ctrl-C (E_CANCELLED); the last checkpoint is kept' },
];

export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case 'E_USAGE':
    case 'E_CONFIG':
      return EXIT.usage;
    case 'E_LOCKED':
    case 'E_BUSY':
      return EXIT.locked;
    case 'E_CANCELLED':
      return EXIT.interrupted;
    default:
      return EXIT.failure;
  }
}

export function exitCodeHelp(): string {
  return ['Exit codes:', ...EXIT_CODE_TABLE.map((r) => `  ${String(r.code).padStart(3)}  ${r.meaning}`)].join('\n');
}
