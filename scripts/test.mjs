// `npm test`: setup, then the engine's cargo tests, then the ava suite. Fails if either fails.
// Ends with one summary line, "N passed, N failed", counted from both runners' own reports.
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setup } from './setup.mjs';
import { SetupError } from './libtorch.mjs';
import { countCargo, countTap } from './test-counts.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cargoOnly = process.argv.includes('--cargo-only');

/** Runs a command, echoing its output, and resolves with its exit code and everything it printed. */
function run(cmd, args, env) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    const echo = (stream) => (chunk) => {
      text += chunk;
      stream.write(chunk);
    };
    child.stdout.on('data', echo(process.stdout));
    child.stderr.on('data', echo(process.stderr));
    child.on('close', (code) => resolve({ code: code ?? 1, text }));
  });
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
// Release profile and the host's target triple, as `napi build` passes it: shares the compiled libtorch
// bindings with the addon build. --show-output lets the tests that need data they cannot find say that
// they skipped.
const host = spawnSync('rustc', ['-vV'], { encoding: 'utf8' }).stdout?.match(/^host: (\S+)$/m)?.[1];
const targetArgs = host ? ['--target', host] : [];

// Style gates first, each a named failure: the TypeScript linter (Biome, biome.json), rustfmt (rustfmt.toml) and
// clippy with warnings as errors (the engine with its tests and examples; the addon's library).
const gates = [
  ['Biome lint', process.execPath, [join(root, 'node_modules', '@biomejs', 'biome', 'bin', 'biome'), 'lint', '--error-on-warnings', '--max-diagnostics=50']],
  ['rustfmt', 'cargo', ['fmt', '--all', '--check']],
  ['clippy (engine)', 'cargo', ['clippy', '--release', ...targetArgs, '-p', 'metaplastic-core', '--all-targets', '--', '-D', 'warnings']],
  ['clippy (addon)', 'cargo', ['clippy', '--release', ...targetArgs, '-p', 'metaplastic-node', '--lib', '--', '-D', 'warnings']],
];
for (const [name, cmd, args] of cargoOnly ? [] : gates) {
  const gate = await run(cmd, args, testEnv);
  if (gate.code !== 0) {
    const fix = name === 'rustfmt' ? ' (format with `cargo fmt --all`; if cargo says fmt is not installed: `rustup component add rustfmt clippy`)' : '';
    console.error(`\n${name} failed${fix}; the tests were not run`);
    console.log('\n0 passed, 1 failed');
    process.exit(1);
  }
}
const cargo = await run('cargo', ['test', '--release', ...targetArgs, '-p', 'metaplastic-core', '--', '--show-output'], testEnv);
const counts = countCargo(cargo.text);
let code = cargo.code;
if (code === 0 && !cargoOnly) {
  // TAP: one line per test, so passed tests are counted even when some fail.
  const ava = await run(process.execPath, [join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs'), '--tap'], { ...testEnv, FORCE_COLOR: '0' });
  const tap = countTap(ava.text);
  for (const k of Object.keys(counts)) counts[k] += tap[k];
  code = ava.code;
} else if (code !== 0) {
  console.error('cargo test failed; the TypeScript tests were not run');
}
if (counts.skipped > 0) {
  console.log(`\n${counts.skipped} skipped (they need data or hardware this machine lacks; the lines marked SKIPPED / # SKIP above say which, e.g. set METAPLASTIC_DATA to the full Omniglot set)`);
}
console.log(`\n${counts.passed} passed, ${counts.failed} failed`);
process.exit(code !== 0 && counts.failed === 0 ? code : counts.failed > 0 ? 1 : code);
