// Finds, checks or installs the libtorch metaplastic runs on: the user's LIBTORCH, or PyPI's torch==2.11.0
// wheel in a cached virtual environment outside any project. Used by `npm run setup` (before `npm install`,
// so Node built-ins only), by `metaplastic setup`, and by the addon's loader (src/native.ts) at first use.
// Shipped in the package as is; typed by libtorch.d.mts.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, relative } from 'node:path';

export const TORCH_VERSION = '2.11.0';
// Linux wheels are CUDA builds whose libtorch_cpu links these two small NVIDIA runtime libraries; they are
// all a machine without a GPU needs. macOS wheels are CPU builds (with MPS) with no such dependency.
const CPU_EXTRAS = process.platform === 'linux' ? ['cuda-toolkit[cudart,cupti]==13.0.2'] : [];
const MARKER = '.metaplastic-complete';

/** A setup step failed; `code` names the problem (E_LIBTORCH_* for libtorch itself, E_SETUP otherwise). */
export class SetupError extends Error {
  constructor(message, code = 'E_SETUP') {
    super(message);
    this.name = 'SetupError';
    this.code = code;
  }
}

export function cacheRoot() {
  if (process.env.METAPLASTIC_CACHE) return process.env.METAPLASTIC_CACHE;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'metaplastic');
}

/** The cached virtual environment that holds the torch wheel. */
export function cachedVenv() {
  return join(cacheRoot(), `torch-${TORCH_VERSION}`);
}

/** The shared libraries the addon links, in load order (dependencies first). */
export function libtorchLibraries(platform = process.platform) {
  const ext = platform === 'darwin' ? 'dylib' : 'so';
  return [`libc10.${ext}`, `libtorch_cpu.${ext}`];
}

function run(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { stdio: opts.quiet ? 'pipe' : 'inherit', encoding: 'utf8', ...opts });
}

function findPython() {
  for (const cand of [process.env.PYTHON, 'python3', 'python'].filter(Boolean)) {
    const r = run(cand, ['-c', 'import sys; print(sys.version_info[0])'], { quiet: true });
    if (r.status === 0 && r.stdout.trim() === '3') return cand;
  }
  throw new SetupError(
    'Python 3 was not found (tried $PYTHON, python3, python). metaplastic installs libtorch from PyPI with pip.\n' +
      '  Fix: install Python 3 with pip, or set LIBTORCH to an existing libtorch ' + TORCH_VERSION + ' and rerun.',
    'E_LIBTORCH_MISSING',
  );
}

function hasNvidiaGpu() {
  if (process.env.METAPLASTIC_TORCH_CUDA === '1') return true;
  if (process.env.METAPLASTIC_TORCH_CUDA === '0') return false;
  if (process.platform !== 'linux') return false;
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

/**
 * Checks a libtorch directory and returns its version. Throws SetupError with code E_LIBTORCH_INVALID (not
 * libtorch at all), E_LIBTORCH_VERSION (another version) or E_LIBTORCH_PARTIAL (libraries missing).
 */
export function checkLibtorch(dir, origin, platform = process.platform) {
  if (!existsSync(join(dir, 'lib')) || !existsSync(join(dir, 'include'))) {
    throw new SetupError(`${origin} = ${dir} is not a libtorch directory (expected lib/ and include/ inside it).\n  Fix: point LIBTORCH at the torch/ folder of a torch ${TORCH_VERSION} wheel or an unpacked libtorch ${TORCH_VERSION}, or unset it.`, 'E_LIBTORCH_INVALID');
  }
  const version = readTorchVersion(dir);
  if (!version) {
    const why = existsSync(join(dir, 'version.py')) ? 'its version.py has no readable __version__ line' : 'it has neither version.py nor build-version';
    throw new SetupError(
      `${origin} = ${dir}: cannot tell its version (${why}). metaplastic needs libtorch ${TORCH_VERSION}.\n` +
        `  Fix: point LIBTORCH at the torch/ folder of a torch ${TORCH_VERSION} wheel or an unpacked libtorch ${TORCH_VERSION}, or unset it to let setup install one.`,
      'E_LIBTORCH_INVALID',
    );
  }
  if (!version.startsWith(TORCH_VERSION)) {
    throw new SetupError(
      `${origin} = ${dir} is libtorch ${version}, but metaplastic builds against ${TORCH_VERSION} (tch 0.24.0).\n` +
        `  Fix: point LIBTORCH at a libtorch ${TORCH_VERSION}, or unset it to let setup install one.`,
      'E_LIBTORCH_VERSION',
    );
  }
  const missing = libtorchLibraries(platform).filter((name) => !existsSync(join(dir, 'lib', name)));
  if (missing.length > 0) {
    throw new SetupError(
      `${origin} = ${dir} is an incomplete libtorch ${version}: lib/ lacks ${missing.join(', ')}.\n` +
        `  Fix: reinstall it (for the cached one: \`npx metaplastic setup --force\`), or point LIBTORCH at a complete libtorch ${TORCH_VERSION}.`,
      'E_LIBTORCH_PARTIAL',
    );
  }
  return version;
}

/** The torch directory recorded in a finished cache (relative to the venv; older caches hold it absolute). */
function cachedTorchDir(venv) {
  const marker = join(venv, MARKER);
  if (!existsSync(marker)) return null;
  const recorded = readFileSync(marker, 'utf8').trim();
  return isAbsolute(recorded) ? recorded : join(venv, recorded);
}

/**
 * The libtorch to use without installing anything: { dir, origin }, or null when there is none yet.
 * Throws SetupError (E_LIBTORCH_*) when the one found is wrong or incomplete.
 */
export function findLibtorch() {
  if (process.env.LIBTORCH) {
    checkLibtorch(process.env.LIBTORCH, 'LIBTORCH');
    return { dir: process.env.LIBTORCH, origin: 'LIBTORCH' };
  }
  const dir = cachedTorchDir(cachedVenv());
  if (!dir) return null;
  checkLibtorch(dir, 'cached libtorch');
  return { dir, origin: 'cache' };
}

/** Leftovers of installs that were interrupted (their names end in .partial-<pid>). */
function removeStalePartials(root) {
  if (!existsSync(root)) return;
  const prefix = `torch-${TORCH_VERSION}.partial-`;
  for (const name of readdirSync(root)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length));
    if (Number.isInteger(pid) && pid !== process.pid && isAlive(pid)) continue;
    rmSync(join(root, name), { recursive: true, force: true });
  }
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

/**
 * Returns the libtorch directory, installing it into the cache if needed (`force`: reinstall the cached one). The wheel
 * goes into a `.partial-<pid>` folder that is renamed into place only once complete, so an interrupted
 * download leaves nothing that looks installed; the next run removes the leftover.
 */
export function ensureLibtorch({ log = console.error, force = false } = {}) {
  // LIBTORCH is the user's own: checked, never replaced.
  if (!force || process.env.LIBTORCH) {
    const found = findLibtorch();
    if (found) return found.dir;
  }
  if (process.platform === 'darwin' && process.arch === 'x64') {
    throw new SetupError(`PyPI has no torch ${TORCH_VERSION} for Intel Macs (the last one there is 2.2.2).\n  Fix: build libtorch ${TORCH_VERSION} from source and set LIBTORCH to it.`, 'E_LIBTORCH_MISSING');
  }
  const root = cacheRoot();
  const venv = cachedVenv();
  mkdirSync(root, { recursive: true });
  removeStalePartials(root);
  const python = findPython();
  const gpu = hasNvidiaGpu();
  const flavour = gpu ? 'CUDA build with its NVIDIA libraries' : process.platform === 'darwin' ? 'macOS build, CPU and MPS' : 'for CPU use';
  log(`metaplastic: installing libtorch from PyPI torch==${TORCH_VERSION} (${flavour}, about 1 GB) into ${venv}; once, reused afterwards`);
  const partial = `${venv}.partial-${process.pid}`;
  rmSync(partial, { recursive: true, force: true });
  try {
    if (run(python, ['-m', 'venv', partial]).status !== 0) {
      throw new SetupError(`Could not create a virtual environment with '${python} -m venv ${partial}'.\n  Fix: install the venv module (Debian: apt-get install python3-venv).`, 'E_LIBTORCH_MISSING');
    }
    const venvPython = join(partial, process.platform === 'win32' ? 'Scripts' : 'bin', 'python');
    // On a GPU machine take the wheel with all its NVIDIA dependencies; elsewhere only what libtorch_cpu links.
    const installs = gpu
      ? [['install', '--no-compile', `torch==${TORCH_VERSION}`]]
      : [['install', '--no-compile', '--no-deps', `torch==${TORCH_VERSION}`], ...(CPU_EXTRAS.length ? [['install', '--no-compile', ...CPU_EXTRAS]] : [])];
    for (const args of installs) {
      // pip draws its own progress bar on a terminal.
      const r = run(venvPython, ['-m', 'pip', '--disable-pip-version-check', ...args], { stdio: ['ignore', process.stderr, process.stderr] });
      if (r.status === 0) continue;
      throw new SetupError(`pip could not install ${args.slice(1).filter((a) => !a.startsWith('--')).join(' ')} (exit ${r.status}); see pip's output above.\n  Fix: check network access to PyPI, or set LIBTORCH to an existing libtorch ${TORCH_VERSION}.`, 'E_LIBTORCH_MISSING');
    }
    const site = run(venvPython, ['-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], { quiet: true });
    const torchDir = relative(partial, join(site.stdout.trim(), 'torch'));
    checkLibtorch(join(partial, torchDir), 'installed torch');
    writeFileSync(join(partial, MARKER), torchDir + '\n');
    // Another setup may have finished meanwhile: keep its install (a process may be using it).
    if (!cachedTorchDir(venv)) {
      rmSync(venv, { recursive: true, force: true });
      renameSync(partial, venv);
    }
  } finally {
    rmSync(partial, { recursive: true, force: true });
  }
  const dir = cachedTorchDir(venv);
  checkLibtorch(dir, 'cached libtorch');
  return dir;
}
