import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from './helpers.js';
import { checkLibtorch, ensureLibtorch, findLibtorch, libtorchLibraries, readTorchVersion, SetupError, TORCH_VERSION } from '../scripts/libtorch.mjs';

function fakeLibtorch(version?: { py?: string; build?: string }, libs: string[] = libtorchLibraries()): string {
  const dir = mkdtempSync(join(tmpdir(), 'metaplastic-libtorch-'));
  mkdirSync(join(dir, 'lib'));
  mkdirSync(join(dir, 'include'));
  for (const lib of libs) writeFileSync(join(dir, 'lib', lib), '');
  if (version?.py) writeFileSync(join(dir, 'version.py'), `__version__ = '${version.py}'\n`);
  if (version?.build) writeFileSync(join(dir, 'build-version'), `${version.build}\n`);
  return dir;
}

/** Runs `fn` with some environment variables replaced, restoring them afterwards. */
function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const apply = (v: Record<string, string | undefined>) => {
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) delete process.env[k];
      else process.env[k] = x;
    }
  };
  apply(vars);
  try {
    return fn();
  } finally {
    apply(saved);
  }
}

test('a libtorch of the right version is accepted, from a wheel or a zip', (t) => {
  t.is(checkLibtorch(fakeLibtorch({ py: `${TORCH_VERSION}+cu130` }), 'LIBTORCH'), `${TORCH_VERSION}+cu130`);
  t.is(readTorchVersion(fakeLibtorch({ build: `${TORCH_VERSION}+cpu` })), `${TORCH_VERSION}+cpu`);
});

test('a wrong, unknown or missing libtorch stops setup with a named error saying what to do', (t) => {
  const wrong = t.throws(() => checkLibtorch(fakeLibtorch({ py: '2.10.0' }), 'LIBTORCH'), { instanceOf: SetupError });
  t.is(wrong!.code, 'E_LIBTORCH_VERSION');
  t.regex(wrong!.message, /is libtorch 2\.10\.0, but metaplastic builds against 2\.11\.0/);
  t.regex(wrong!.message, /Fix: point LIBTORCH at a libtorch 2\.11\.0/);
  const unknown = t.throws(() => checkLibtorch(fakeLibtorch(), 'LIBTORCH'), { instanceOf: SetupError });
  t.is(unknown!.code, 'E_LIBTORCH_INVALID');
  t.regex(unknown!.message, /cannot tell its version \(it has neither version\.py nor build-version\)/);
  t.regex(unknown!.message, /Fix: point LIBTORCH at/);
  const garbage = fakeLibtorch();
  writeFileSync(join(garbage, 'version.py'), '\x00\x17 not python\n');
  const unreadable = t.throws(() => checkLibtorch(garbage, 'LIBTORCH'), { instanceOf: SetupError });
  t.is(unreadable!.code, 'E_LIBTORCH_INVALID');
  t.regex(unreadable!.message, /its version\.py has no readable __version__ line/);
  t.regex(unreadable!.message, /Fix: /);
  const notDir = t.throws(() => checkLibtorch(join(tmpdir(), 'no-such-libtorch'), 'LIBTORCH'), { instanceOf: SetupError });
  t.is(notDir!.code, 'E_LIBTORCH_INVALID');
  t.regex(notDir!.message, /is not a libtorch directory/);
});

test('a libtorch without the libraries the addon links is named incomplete, with the command that repairs it', (t) => {
  const [first, second] = libtorchLibraries();
  const partial = t.throws(() => checkLibtorch(fakeLibtorch({ py: TORCH_VERSION }, [first]), 'cached libtorch'), { instanceOf: SetupError });
  t.is(partial!.code, 'E_LIBTORCH_PARTIAL');
  t.regex(partial!.message, new RegExp(`lib/ lacks ${second.replace('.', '\\.')}`));
  t.regex(partial!.message, /npx metaplastic setup --force/);
});

test('the libraries the loader opens are the platform\'s', (t) => {
  t.deepEqual(libtorchLibraries('linux'), ['libc10.so', 'libtorch_cpu.so']);
  t.deepEqual(libtorchLibraries('darwin'), ['libc10.dylib', 'libtorch_cpu.dylib']);
});

/** A Python whose venv works and whose pip dies halfway through the download, leaving files behind. */
function failingPython(dir: string): string {
  const python = join(dir, 'python3');
  writeFileSync(
    python,
    `#!/bin/sh
case "$1" in
  -c) echo 3 ;;
  -m) if [ "$2" = venv ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0; fi
      here=$(dirname "$0")
      mkdir -p "$here/../lib/python3/site-packages/torch/lib" && echo partial > "$here/../lib/python3/site-packages/torch/lib/libtorch_cpu.so"
      echo "pip: connection reset" >&2; exit 1 ;;
esac
`,
  );
  chmodSync(python, 0o755);
  return python;
}

test('an interrupted libtorch download leaves nothing half-installed, and its leftovers go on the next try', (t) => {
  const cache = mkdtempSync(join(tmpdir(), 'metaplastic-cache-'));
  const python = failingPython(mkdtempSync(join(tmpdir(), 'metaplastic-python-')));
  // A folder left by an install that was killed (its process is gone).
  const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' }).stdout.trim();
  const leftover = join(cache, `torch-${TORCH_VERSION}.partial-${dead}`);
  mkdirSync(join(leftover, 'lib'), { recursive: true });
  withEnv({ METAPLASTIC_CACHE: cache, LIBTORCH: undefined, PYTHON: python, METAPLASTIC_TORCH_CUDA: '0' }, () => {
    t.is(findLibtorch(), null);
    const e = t.throws(() => ensureLibtorch({ log: () => {} }), { instanceOf: SetupError });
    t.is(e!.code, 'E_LIBTORCH_MISSING');
    t.regex(e!.message, /pip could not install torch==2\.11\.0/);
    t.deepEqual(readdirSync(cache), []);
    t.is(findLibtorch(), null);
  });
  t.false(existsSync(leftover));
});

/** A Python whose pip "installs" a small stand-in for the torch wheel. */
function workingPython(dir: string): string {
  const python = join(dir, 'python3');
  writeFileSync(
    python,
    `#!/bin/sh
here=$(cd "$(dirname "$0")" && pwd)
site="$here/../lib/python3/site-packages"
case "$1" in
  -c) case "$2" in *sysconfig*) echo "$site" ;; *) echo 3 ;; esac ;;
  -m) if [ "$2" = venv ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0; fi
      case "$*" in *--no-deps*)
        mkdir -p "$site/torch/lib" "$site/torch/include"
        echo "__version__ = '${TORCH_VERSION}+cpu'" > "$site/torch/version.py"
        for l in ${libtorchLibraries().join(' ')}; do : > "$site/torch/lib/$l"; done ;;
      esac ;;
esac
`,
  );
  chmodSync(python, 0o755);
  return python;
}

test('a completed install is renamed into place in one step and found afterwards', (t) => {
  const cache = mkdtempSync(join(tmpdir(), 'metaplastic-cache-'));
  const python = workingPython(mkdtempSync(join(tmpdir(), 'metaplastic-python-')));
  withEnv({ METAPLASTIC_CACHE: cache, LIBTORCH: undefined, PYTHON: python, METAPLASTIC_TORCH_CUDA: '0' }, () => {
    const lines: string[] = [];
    const dir = ensureLibtorch({ log: (l) => lines.push(l) });
    t.regex(lines.join('\n'), /installing libtorch from PyPI torch==2\.11\.0/);
    t.is(dir, join(cache, `torch-${TORCH_VERSION}`, 'lib', 'python3', 'site-packages', 'torch'));
    t.deepEqual(readdirSync(cache), [`torch-${TORCH_VERSION}`]);
    t.deepEqual(findLibtorch(), { dir, origin: 'cache' });
    // Found again without running pip.
    t.is(ensureLibtorch({ log: () => t.fail('nothing to install') }), dir);
  });
});

test('a cache folder without the completion marker is not taken for an installed libtorch', (t) => {
  const cache = mkdtempSync(join(tmpdir(), 'metaplastic-cache-'));
  mkdirSync(join(cache, `torch-${TORCH_VERSION}`, 'lib'), { recursive: true });
  withEnv({ METAPLASTIC_CACHE: cache, LIBTORCH: undefined }, () => t.is(findLibtorch(), null));
});

test('the loader names a wrong or broken LIBTORCH before loading the addon, and the CLI exits 1', (t) => {
  const wrong = cli(['info'], { LIBTORCH: fakeLibtorch({ py: '2.10.0' }) });
  t.is(wrong.status, 1);
  t.regex(wrong.stderr, /\[E_LIBTORCH_VERSION\]: LIBTORCH = .* is libtorch 2\.10\.0/);
  // The right version, but its libraries are not libraries.
  const broken = cli(['info'], { LIBTORCH: fakeLibtorch({ py: TORCH_VERSION }) });
  t.is(broken.status, 1);
  t.regex(broken.stderr, /\[E_LIBTORCH_PARTIAL\]: .*libc10\.\w+ did not load/);
  t.regex(broken.stderr, /Fix: reinstall libtorch/);
});

test('the first use without libtorch says it is fetching it, and a failed fetch is a named error', (t) => {
  const cache = mkdtempSync(join(tmpdir(), 'metaplastic-cache-'));
  const python = failingPython(mkdtempSync(join(tmpdir(), 'metaplastic-python-')));
  const r = cli(['info'], { LIBTORCH: undefined, METAPLASTIC_CACHE: cache, PYTHON: python, METAPLASTIC_TORCH_CUDA: '0' });
  t.is(r.status, 1);
  t.regex(r.stderr, /libtorch 2\.11\.0 is not installed yet, so it is being fetched now/);
  t.regex(r.stderr, /npx metaplastic setup/);
  t.regex(r.stderr, /\[E_LIBTORCH_MISSING\]: pip could not install torch==2\.11\.0/);
  t.deepEqual(readdirSync(cache), []);
});
