// A run folder has one writer at a time. The lock is a file created exclusively in the folder, holding
// the owner's pid and host; a lock whose process is gone (same host) is stale and taken over. Another
// live owner, or one on another host (which cannot be checked), is an E_LOCKED error naming it.
import { accessSync, constants, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { MetaplasticError } from './errors.js';

export const LOCK_FILE = '.metaplastic.lock';

interface LockOwner {
  pid: number;
  host: string;
  started: string;
}

/** Run folders locked by this process: a second user in the same process is refused too. */
const held = new Set<string>();

/** A held lock: the CLI takes one before it writes config.json and hands it to metaTrain. */
export interface RunLock {
  readonly dir: string;
  release(): void;
}

/** Whether `lock` is a live lock of `dir` (so metaTrain need not take it again). */
export function holds(lock: RunLock | undefined, dir: string): boolean {
  return lock !== undefined && lock.dir === resolve(dir) && held.has(lock.dir);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readOwner(path: string): LockOwner | null {
  try {
    const o = JSON.parse(readFileSync(path, 'utf8'));
    return Number.isInteger(o.pid) && typeof o.host === 'string' ? o : null;
  } catch {
    return null; // being written, or damaged
  }
}

/** A lock file without a readable owner is stale only once it is older than a writer could take to fill it. */
function unreadableAndOld(path: string): boolean {
  try {
    return Date.now() - statSync(path).mtimeMs > 5_000;
  } catch {
    return true;
  }
}

/**
 * Why a folder cannot be created or written. Creating a/b/c below a read-only mount fails with ENOENT for
 * the missing parent, which hides the cause: the nearest folder that exists says it (EROFS, EACCES).
 */
export function unwritableReason(dir: string, e: unknown): string {
  let existing = resolve(dir);
  while (!existsSync(existing) && dirname(existing) !== existing) existing = dirname(existing);
  try {
    accessSync(existing, constants.W_OK);
  } catch (denied) {
    const code = (denied as NodeJS.ErrnoException).code;
    const why = code === 'EROFS' ? 'is on a read-only file system' : code === 'EACCES' || code === 'EPERM' ? 'is not writable by this user' : `cannot be written (${code})`;
    return `${existing} ${why}`;
  }
  return (e as Error).message;
}

function ioError(dir: string, e: unknown): MetaplasticError {
  return new MetaplasticError('E_IO', `cannot use ${dir} as a run folder: ${unwritableReason(dir, e)}; choose a writable folder with --out`, { cause: e });
}

/** Takes the run folder's lock (creating the folder). */
export function lockRunDir(dir: string): RunLock {
  const key = resolve(dir);
  const path = join(key, LOCK_FILE);
  if (held.has(key)) throw new MetaplasticError('E_LOCKED', `${dir} is in use by another run of this process; wait for it or choose another folder`);
  try {
    mkdirSync(key, { recursive: true });
  } catch (e) {
    throw ioError(dir, e);
  }
  const me: LockOwner = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, JSON.stringify(me) + '\n', { flag: 'wx' });
      held.add(key);
      return { dir: key, release: once(() => release(key, path)) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(dir, e);
    }
    const owner = readOwner(path);
    const stale = owner === null ? unreadableAndOld(path) : owner.host === me.host && !alive(owner.pid);
    if (!stale) {
      if (owner === null) throw new MetaplasticError('E_LOCKED', `${dir} is being locked by another run (${path}); try again in a moment`);
      throw new MetaplasticError(
        'E_LOCKED',
        `${dir} is in use by another run (pid ${owner.pid} on ${owner.host}, since ${owner.started}); wait for it, choose another --out, ` +
          `or delete ${path} if you are sure that run is gone`,
      );
    }
    rmSync(path, { force: true }); // the owner died without releasing it
  }
  throw new MetaplasticError('E_LOCKED', `${dir}: could not take the lock ${path}; another run keeps recreating it`);
}

function release(key: string, path: string): void {
  held.delete(key);
  rmSync(path, { force: true });
}

function once(f: () => void): () => void {
  let done = false;
  return () => {
    if (!done) {
      done = true;
      f();
    }
  };
}
