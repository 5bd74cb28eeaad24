// Finds or installs the libtorch this project builds against (PyPI torch==2.11.0 in a cached virtual
// environment outside the repository), or checks the one the user points LIBTORCH at.
// Node built-ins only: this runs before `npm install`.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export const TORCH_VERSION = '2.11.0';
// Linux wheels are CUDA builds whose libtorch_cpu links these two small NVIDIA runtime libraries; they are
// all a machine without a GPU needs. macOS wheels are CPU builds with no such dependency.
const CPU_EXTRAS = process.platform === 'linux' ? ['cuda-toolkit[cudart,cupti]==13.0.2'] : [];

export class SetupError extends Error {}

export function cacheRoot() {
  if (process.env.METAPLASTIC_CACHE) return process.env.METAPLASTIC_CACHE;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'metaplastic');
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: opts.quiet ? 'pipe' : 'inherit', encoding: 'utf8', ...opts });
  return r;
}

function findPython() {
  for (const cand of [process.env.PYTHON, 'python3', 'python'].filter(Boolean)) {
    const r = run(cand, ['-c', 'import sys; print(sys.version_info[0])'], { quiet: true });
    if (r.status === 0 && r.stdout.trim() === '3') return cand;
  }
  throw new SetupError(
    'Python 3 was not found (tried $PYTHON, python3, python). metaplastic installs libtorch from PyPI with pip.\n' +
      '  Fix: install Python 3 with pip, or set LIBTORCH to an existing libtorch ' + TORCH_VERSION + ' and rerun.',
  );
}

function hasNvidiaGpu() {
  if (process.env.METAPLASTIC_TORCH_CUDA === '1') return true;
  if (process.env.METAPLASTIC_TORCH_CUDA === '0') return false;
  const r = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' });
  return r.status === 0 && /GPU \d/.test(r.stdout ?? '');
}

/** Reads the version of a libtorch directory: torch/version.py (PyPI wheel) or build-version (zip). */
export function readTorchVersion(libtorch) {
  const py = join(libtorch, 'version.py');
  if (existsSync(py)) {
    const m = readFileSync(py, 'utf8').match(/__version__\s*=\s*['"]([^'"]+)['"]/);
    if (m) return m[1];
  }
  const bv = join(libtorch, 'build-version');
  if (existsSync(bv)) return readFileSync(bv, 'utf8').trim();
  return null;
}

export function checkLibtorch(dir, origin) {
  if (!existsSync(join(dir, 'lib')) || !existsSync(join(dir, 'include'))) {
    throw new SetupError(`${origin} = ${dir} is not a libtorch directory (expected lib/ and include/ inside it).`);
  }
  const version = readTorchVersion(dir);
  if (!version) {
    throw new SetupError(`${origin} = ${dir}: cannot tell its version (no version.py or build-version). metaplastic needs libtorch ${TORCH_VERSION}.`);
  }
  if (!version.startsWith(TORCH_VERSION)) {
    throw new SetupError(
      `${origin} = ${dir} is libtorch ${version}, but metaplastic builds against ${TORCH_VERSION} (tch 0.24.0).\n` +
        `  Fix: point LIBTORCH at a libtorch ${TORCH_VERSION}, or unset it to let setup install one.`,
    );
  }
  return version;
}

/** Returns the libtorch directory, installing it into the cache if needed. */
export function ensureLibtorch({ log = console.error } = {}) {
  if (process.env.LIBTORCH) {
    checkLibtorch(process.env.LIBTORCH, 'LIBTORCH');
    return process.env.LIBTORCH;
  }
  const venv = join(cacheRoot(), `torch-${TORCH_VERSION}`);
  const marker = join(venv, '.metaplastic-complete');
  if (existsSync(marker)) {
    const dir = readFileSync(marker, 'utf8').trim();
    if (existsSync(join(dir, 'lib'))) {
      checkLibtorch(dir, 'cached libtorch');
      return dir;
    }
  }
  const python = findPython();
  const gpu = hasNvidiaGpu();
  log(`metaplastic: installing PyPI torch==${TORCH_VERSION} (${gpu ? 'with CUDA libraries' : 'CPU use'}) into ${venv} (once; reused afterwards)`);
  rmSync(venv, { recursive: true, force: true });
  mkdirSync(cacheRoot(), { recursive: true });
  if (run(python, ['-m', 'venv', venv]).status !== 0) {
    throw new SetupError(`Could not create a virtual environment with '${python} -m venv ${venv}'.\n  Fix: install the venv module (Debian: apt-get install python3-venv).`);
  }
  const pip = join(venv, process.platform === 'win32' ? 'Scripts' : 'bin', 'pip');
  // On a GPU machine take the wheel with all its NVIDIA dependencies; elsewhere only what libtorch_cpu links.
  const installs = gpu
    ? [['install', '--no-compile', `torch==${TORCH_VERSION}`]]
    : [['install', '--no-compile', '--no-deps', `torch==${TORCH_VERSION}`], ...(CPU_EXTRAS.length ? [['install', '--no-compile', ...CPU_EXTRAS]] : [])];
  for (const args of installs) {
    const r = run(pip, args);
    if (r.status === 0) continue;
    throw new SetupError(`pip could not install ${args.slice(2).join(' ')} (exit ${r.status}); see pip's output above.\n  Fix: check network access to PyPI, or set LIBTORCH to an existing libtorch ${TORCH_VERSION}.`);
  }
  const site = run(join(venv, 'bin', 'python'), ['-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], { quiet: true });
  const dir = join(site.stdout.trim(), 'torch');
  checkLibtorch(dir, 'installed torch');
  writeFileSync(marker, dir + '\n');
  return dir;
}
