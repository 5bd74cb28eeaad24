// One-step setup from a fresh clone: npm packages, libtorch, the native addon, the compiled TypeScript.
// Every step is skipped when its result is already there and up to date.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureLibtorch, SetupError } from './libtorch.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const NAPI = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js');

function step(cmd, args, env = process.env, what = `${cmd} ${args.join(' ')}`) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env });
  if (r.error) throw new SetupError(`${what} could not start: ${r.error.message}`);
  if (r.status !== 0) throw new SetupError(`${what} failed (exit ${r.status}).`);
}

export function cargoEnv(libtorch) {
  return { ...process.env, LIBTORCH: libtorch, LIBTORCH_BYPASS_VERSION_CHECK: '1' };
}

/** `napi build` for this machine's platform; the release workflow adds `--target`. */
export function napiBuildArgs() {
  return ['build', '--platform', '--release', '--package', 'metaplastic-node', '--manifest-path', 'crates/metaplastic-node/Cargo.toml', '--output-dir', 'native', '--no-js', '--dts', '../binding.d.ts'];
}

export function setup() {
  // Reinstall whenever package-lock.json changed since the last install (a pull or merge that adds a
  // package would otherwise leave node_modules without it).
  const lockHash = createHash('sha256').update(readFileSync(join(root, 'package-lock.json'))).digest('hex');
  const stamp = join(root, 'node_modules', '.metaplastic-lock-sha256');
  if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== lockHash) {
    step('npm', ['ci', '--no-audit', '--no-fund']);
    writeFileSync(stamp, lockHash);
  }
  const libtorch = ensureLibtorch();
  const env = cargoEnv(libtorch);
  // The addon, as the release builds it: native/metaplastic.<platform>.node, and binding.d.ts regenerated
  // from the #[napi] items. Cargo is incremental: a no-op when nothing changed.
  step(process.execPath, [NAPI, ...napiBuildArgs()], env, 'napi build');
  // A clean dist/: nothing left from older builds (source maps of sources the package does not ship).
  rmSync(join(root, 'dist'), { recursive: true, force: true });
  step(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], env, 'TypeScript build');
  return { libtorch, env };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    setup();
  } catch (e) {
    if (e instanceof SetupError) {
      console.error(`\nmetaplastic setup failed: ${e.message}`);
      process.exit(1);
    }
    throw e;
  }
}
