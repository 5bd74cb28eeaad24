// What a user installs: a license, declarations that compile in a strict consumer, no dangling source maps.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
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
