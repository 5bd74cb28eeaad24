// `npm test`: setup, then the engine's cargo tests, then the ava suite. Fails if either fails.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setup } from './setup.mjs';
import { SetupError } from './libtorch.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cargoOnly = process.argv.includes('--cargo-only');

function run(cmd, args, env) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env });
  return r.status ?? 1;
}

let env;
try {
  ({ env } = setup());
} catch (e) {
  if (e instanceof SetupError) {
    console.error(`\nmetaplastic setup failed: ${e.message}`);
    process.exit(1);
  }
  throw e;
}
const testEnv = { ...env, OMP_NUM_THREADS: '1' };
// Release profile: shares the compiled libtorch bindings with the addon build.
const cargo = run('cargo', ['test', '--release', '-p', 'metaplastic-core'], testEnv);
if (cargo !== 0) {
  console.error('cargo test failed');
  process.exit(cargo);
}
if (cargoOnly) process.exit(0);
const ava = run(process.execPath, [join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs')], testEnv);
process.exit(ava);
