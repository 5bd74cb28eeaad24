/** Every error metaplastic throws carries a stable `code` (see README: Errors). */
export const ERROR_CODES = [
  'E_CONFIG',
  'E_SHAPE',
  'E_DATA',
  'E_CHECKPOINT',
  'E_IO',
  'E_TORCH',
  'E_CANCELLED',
  'E_DIST',
  'E_INTERNAL',
  'E_PANIC',
  'E_NATIVE_MISSING',
  'E_NATIVE_INVALID',
  'E_LIBTORCH_MISSING',
  'E_LIBTORCH_INVALID',
  'E_LIBTORCH_VERSION',
  'E_LIBTORCH_PARTIAL',
  'E_USAGE',
  'E_BUSY',
  'E_LOCKED',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class MetaplasticError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MetaplasticError';
    this.code = code;
  }
}

const NATIVE_PREFIX = /^\[(E_[A-Z_]+)\] ([\s\S]*)$/;

/** Converts an error thrown by the native addon ("[CODE] message") into a MetaplasticError. */
export function fromNative(err: unknown): unknown {
  if (err instanceof Error) {
    const m = NATIVE_PREFIX.exec(err.message);
    if (m) return new MetaplasticError(m[1] as ErrorCode, m[2], { cause: err });
  }
  return err;
}

export function configError(field: string, message: string): MetaplasticError {
  return new MetaplasticError('E_CONFIG', `invalid configuration: ${field}: ${message}`);
}
