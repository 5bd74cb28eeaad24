// `npm test`: setup, then the engine's cargo tests, then the ava suite. Fails if either fails.
// Ends with one summary line, "N passed, N failed", counted from both runners' own reports.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setup } from './setup.mjs';
import { SetupError } from './libtorch.mjs';

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

function sum(text, re) {
  return [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
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
const cargo = await run('cargo', ['test', '--release', '-p', 'metaplastic-core'], testEnv);
let passed = sum(cargo.text, /test result: \w+\. (\d+) passed/g);
let failed = sum(cargo.text, /test result: \w+\. \d+ passed; (\d+) failed/g);
let code = cargo.code;
if (code === 0 && !cargoOnly) {
  const ava = await run(process.execPath, [join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs')], { ...testEnv, FORCE_COLOR: '0' });
  passed += sum(ava.text, /^\s*(\d+) tests? passed/gm);
  failed += sum(ava.text, /^\s*(\d+) tests? failed/gm) + sum(ava.text, /^\s*(\d+) uncaught exceptions?/gm);
  code = ava.code;
} else if (code !== 0) {
  console.error('cargo test failed; the TypeScript tests were not run');
}
console.log(`\n${passed} passed, ${failed} failed`);
process.exit(code !== 0 && failed === 0 ? code : failed > 0 ? 1 : code);
