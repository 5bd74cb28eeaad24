// Types of libtorch.mjs (plain JavaScript so that it runs before `npm install`).
export declare const TORCH_VERSION: string;

export type LibtorchErrorCode = 'E_SETUP' | 'E_LIBTORCH_MISSING' | 'E_LIBTORCH_INVALID' | 'E_LIBTORCH_VERSION' | 'E_LIBTORCH_PARTIAL';

export declare class SetupError extends Error {
  constructor(message: string, code?: LibtorchErrorCode);
  readonly code: LibtorchErrorCode;
}

export declare function cacheRoot(): string;
export declare function cachedVenv(): string;
export declare function libtorchLibraries(platform?: NodeJS.Platform): string[];
export declare function readTorchVersion(libtorch: string): string | null;
export declare function checkLibtorch(dir: string, origin: string, platform?: NodeJS.Platform): string;
export declare function findLibtorch(): { dir: string; origin: 'LIBTORCH' | 'cache' } | null;
export declare function ensureLibtorch(options?: { log?: (line: string) => void; force?: boolean }): string;
