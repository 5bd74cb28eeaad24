// What a user installs: a license, declarations that compile in a strict consumer, no dangling source maps,
// nothing a user does not need, and one prebuilt addon per platform in the napi-rs layout.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './helpers.js';

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]));
}

test('a LICENSE file matches package.json', (t) => {
  t.is(pkg.license, 'MIT');
  t.regex(readFileSync(join(root, 'LICENSE'), 'utf8'), /^MIT License\n/);
});

test('dist holds no source maps (their sources are not shipped)', (t) => {
  const shipped = files(join(root, 'dist'));
  t.true(shipped.length > 0, 'dist is built');
  t.deepEqual(shipped.filter((f) => f.endsWith('.map')), []);
  t.deepEqual(shipped.filter((f) => f.endsWith('.js') && readFileSync(f, 'utf8').includes('sourceMappingURL')), []);
});

test("the public declarations keep third-party (vega) types out and compile with skipLibCheck: false", (t) => {
  const decls = files(join(root, 'dist')).filter((f) => f.endsWith('.d.ts'));
  t.deepEqual(decls.filter((f) => /from ['"]vega/.test(readFileSync(f, 'utf8'))), []);
  const dir = mkdtempSync(join(tmpdir(), 'mp-consumer-'));
  writeFileSync(join(dir, 'use.ts'), `import type * as mp from ${JSON.stringify(join(root, 'index.js'))};\nexport type Spec = ReturnType<typeof mp.sineCurveSpec>;\n`);
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '--noEmit', '--strict', '--skipLibCheck', 'false', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--lib', 'es2022,esnext.disposable', '--types', 'node', '--typeRoots', join(root, 'node_modules', '@types'), join(dir, 'use.ts')], { encoding: 'utf8', cwd: dir });
  t.is(r.status, 0, r.stdout + r.stderr);
});

test('the package holds what runs and nothing of the build: no sources, tests, crates or addon', (t) => {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json'], { cwd: root, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  const paths: string[] = JSON.parse(r.stdout)[0].files.map((f: { path: string }) => f.path);
  t.deepEqual(paths.filter((p) => /^(src|test|crates|native|npm|bench|docs|target|\.github)\/|^Cargo|\.node$|\.rs$/.test(p)), []);
  t.deepEqual(paths.filter((p) => p.startsWith('scripts/')).sort(), ['scripts/libtorch.d.mts', 'scripts/libtorch.mjs']);
  for (const needed of ['bin/metaplastic.js', 'dist/index.js', 'dist/native.js', 'dist/cli/setup.js', 'index.d.ts', 'binding.d.ts', 'LICENSE', 'README.md', 'package.json']) {
    t.true(paths.includes(needed), needed);
  }
  t.deepEqual(pkg.scripts.install ?? pkg.scripts.postinstall ?? pkg.scripts.preinstall, undefined, 'installing runs nothing');
});

test('each target has its platform package in npm/, of the same version', (t) => {
  const targets: Record<string, { os: string; cpu: string; libc?: string }> = {
    'x86_64-unknown-linux-gnu': { os: 'linux', cpu: 'x64', libc: 'glibc' },
    'aarch64-unknown-linux-gnu': { os: 'linux', cpu: 'arm64', libc: 'glibc' },
    'aarch64-apple-darwin': { os: 'darwin', cpu: 'arm64' },
  };
  t.deepEqual([...pkg.napi.targets].sort(), Object.keys(targets).sort());
  const dirs = readdirSync(join(root, 'npm')).sort();
  t.is(dirs.length, pkg.napi.targets.length);
  for (const dir of dirs) {
    const sub = JSON.parse(readFileSync(join(root, 'npm', dir, 'package.json'), 'utf8'));
    t.is(sub.name, `metaplastic-${dir}`);
    t.is(sub.version, pkg.version, `${dir} version`);
    t.is(sub.main, `metaplastic.${dir}.node`);
    t.deepEqual(sub.files, [sub.main]);
    const target = Object.values(targets).find((x) => dir === `${x.os}-${x.cpu}${x.libc ? '-gnu' : ''}`);
    t.truthy(target, dir);
    t.deepEqual(sub.os, [target!.os]);
    t.deepEqual(sub.cpu, [target!.cpu]);
    t.deepEqual(sub.libc, target!.libc ? [target!.libc] : undefined);
  }
  // `napi prepublish` makes them optional dependencies at release; listed here, they would have to be in
  // package-lock.json, and `npm ci` would fail until they are published.
  t.is(pkg.optionalDependencies, undefined);
});

test('the built addon carries no runpath: it finds libtorch through the loader wherever libtorch is', (t) => {
  if (process.platform !== 'linux') return t.pass('readelf checks ELF files (Linux)');
  const addon = join(root, 'native', readdirSync(join(root, 'native')).find((f) => f.endsWith('.node'))!);
  t.true(existsSync(addon));
  const r = spawnSync('readelf', ['-d', addon], { encoding: 'utf8' });
  t.is(r.status, 0, `readelf (binutils, installed with the C++ toolchain) is needed: ${r.error?.message ?? r.stderr}`);
  t.regex(r.stdout, /NEEDED.*\[libtorch_cpu\.so\]/);
  t.notRegex(r.stdout, /R(UN)?PATH/);
});
