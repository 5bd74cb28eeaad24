// Finds a Python that can `import torch`, for the PyTorch reference and the matmul rate.
//
// Order: --python / METAPLASTIC_BENCH_PYTHON, then /opt/torch/.venv (the GPU machines), then the
// project's cached venv (scripts/libtorch.mjs), which holds the same torch wheel the engine links.
// That venv is installed for its libtorch only, so two things may be missing the first time:
//  - torch's pure-Python dependencies: installed into the venv with its pip;
//  - on a machine without a GPU, the NVIDIA libraries that libtorch_cuda.so links (the engine never
//    loads libtorch_cuda there, but `import torch` does). We then build empty stand-ins for them with
//    the C compiler in bench/out/cpu-shim and load torch lazily (RTLD_LAZY), so nothing of CUDA is ever
//    called. The CPU kernels are the same libtorch_cpu the engine uses.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cacheRoot, TORCH_VERSION } from '../scripts/libtorch.mjs';

const PURE_DEPS = ['typing_extensions', 'sympy', 'networkx', 'jinja2', 'fsspec', 'filelock', 'setuptools<82'];

function tryImport(python, env) {
  const r = spawnSync(python, ['-c', 'import os, sys\nif os.environ.get("METAPLASTIC_CPU_SHIM"): sys.setdlopenflags(os.RTLD_LAZY | os.RTLD_GLOBAL)\nimport warnings; warnings.filterwarnings("ignore")\nimport torch; print(torch.__version__)'], {
    encoding: 'utf8',
    env,
  });
  return { ok: r.status === 0, version: (r.stdout ?? '').trim(), error: `${r.error?.message ?? ''}${r.stderr ?? ''}`.trim() };
}

/** Builds empty shared libraries for the missing NVIDIA sonames that torch's libraries link. */
function buildCpuShim(torchLib, dir) {
  const missing = new Set();
  for (const f of readdirSync(torchLib).filter((f) => f.endsWith('.so'))) {
    const r = spawnSync('ldd', [join(torchLib, f)], { encoding: 'utf8' });
    for (const m of (r.stdout ?? '').matchAll(/^\s*(\S+) => not found/gm)) missing.add(m[1]);
  }
  mkdirSync(dir, { recursive: true });
  const src = join(dir, 'empty.c');
  writeFileSync(src, '/* stand-in for an NVIDIA library on a machine without a GPU */\n');
  for (const so of missing) {
    const r = spawnSync('cc', ['-shared', '-o', join(dir, so), `-Wl,-soname,${so}`, src], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cc could not build ${so}: ${r.stderr ?? r.error?.message}`);
  }
  return [...missing];
}

/**
 * Returns { python, env, version, note } or { error } with a readable reason.
 * `root` is the package root; `explicit` a user-given interpreter.
 */
export function findTorchPython(root, explicit, log = console.error) {
  const env = { ...process.env };
  const candidates = [explicit, process.env.METAPLASTIC_BENCH_PYTHON, '/opt/torch/.venv/bin/python3'].filter(Boolean);
  for (const python of candidates) {
    if (!existsSync(python) && python.includes('/')) continue;
    const r = tryImport(python, env);
    if (r.ok) return { python, env, version: r.version, note: python };
    if (python === explicit) return { error: `${python} cannot import torch:\n${r.error.split('\n').slice(-3).join('\n')}` };
  }
  const venv = join(cacheRoot(), `torch-${TORCH_VERSION}`);
  const python = join(venv, 'bin', 'python');
  if (!existsSync(python)) return { error: `no Python with torch found (tried ${candidates.join(', ') || 'none'} and ${venv})` };
  let r = tryImport(python, env);
  if (!r.ok && /No module named/.test(r.error)) {
    log(`bench: installing torch's pure-Python dependencies into ${venv} (once)`);
    const pip = spawnSync(python, ['-m', 'pip', 'install', '-q', ...PURE_DEPS], { encoding: 'utf8' });
    if (pip.status !== 0) return { error: `pip could not install ${PURE_DEPS.join(' ')}:\n${(pip.stderr ?? '').slice(-500)}` };
    r = tryImport(python, env);
  }
  let note = `${python} (the engine's torch wheel)`;
  if (!r.ok && /lib\S+\.so[.\d]*: cannot open shared object file/.test(r.error)) {
    const torchLib = join(venv, 'lib', readdirSync(join(venv, 'lib'))[0], 'site-packages', 'torch', 'lib');
    const shim = join(root, 'bench', 'out', 'cpu-shim');
    try {
      const libs = buildCpuShim(torchLib, shim);
      env.LD_LIBRARY_PATH = [shim, env.LD_LIBRARY_PATH].filter(Boolean).join(':');
      env.METAPLASTIC_CPU_SHIM = '1';
      r = tryImport(python, env);
      note += `, CPU-only: empty stand-ins for ${libs.length} NVIDIA libraries`;
    } catch (e) {
      return { error: `could not build the CPU shim: ${e.message}` };
    }
  }
  if (!r.ok) return { error: `${python} cannot import torch:\n${r.error.split('\n').slice(-3).join('\n')}` };
  return { python, env, version: r.version, note };
}
