import test from 'ava';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// @ts-expect-error plain ESM script without typings
import { checkLibtorch, readTorchVersion, SetupError, TORCH_VERSION } from '../scripts/libtorch.mjs';

function fakeLibtorch(version?: { py?: string; build?: string }): string {
  const dir = mkdtempSync(join(tmpdir(), 'metaplastic-libtorch-'));
  mkdirSync(join(dir, 'lib'));
  mkdirSync(join(dir, 'include'));
  if (version?.py) writeFileSync(join(dir, 'version.py'), `__version__ = '${version.py}'\n`);
  if (version?.build) writeFileSync(join(dir, 'build-version'), `${version.build}\n`);
  return dir;
}

test('a libtorch of the right version is accepted, from a wheel or a zip', (t) => {
  t.is(checkLibtorch(fakeLibtorch({ py: `${TORCH_VERSION}+cu130` }), 'LIBTORCH'), `${TORCH_VERSION}+cu130`);
  t.is(readTorchVersion(fakeLibtorch({ build: `${TORCH_VERSION}+cpu` })), `${TORCH_VERSION}+cpu`);
});

test('a wrong, unknown or missing libtorch stops setup with a message saying what to do', (t) => {
  const wrong = t.throws(() => checkLibtorch(fakeLibtorch({ py: '2.10.0' }), 'LIBTORCH'), { instanceOf: SetupError });
  t.regex(wrong!.message, /is libtorch 2\.10\.0, but metaplastic builds against 2\.11\.0/);
  t.regex(wrong!.message, /Fix: point LIBTORCH at a libtorch 2\.11\.0/);
  const unknown = t.throws(() => checkLibtorch(fakeLibtorch(), 'LIBTORCH'));
  t.regex(unknown!.message, /cannot tell its version/);
  const notDir = t.throws(() => checkLibtorch(join(tmpdir(), 'no-such-libtorch'), 'LIBTORCH'));
  t.regex(notDir!.message, /is not a libtorch directory/);
});
