import test from 'ava';
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AddressInfo } from 'node:net';
import { root } from './helpers.js';
import { FULL_DATA_NOTE, fullOmniglot, omniglotFixture } from './omniglot-fixture.js';

// The download checks need the official archives (verification counts 964 and 659 characters): they run
// when the full set is found; the failure paths use small archives in the official layout.
const full = fullOmniglot();
const fixture = omniglotFixture();
const fullTest = full ? test : test.skip;

// A local server on 127.0.0.1 stands in for GitHub: the tests never touch the internet.
// /ok/ serves the full files, /swapped/ serves each (fixture) split's zip under the other's name,
// /corrupt/ serves garbage, anything else is 404.
let server: Server;
let base: string;
const requests: string[] = [];

test.before(async () => {
  server = createServer((req, res) => {
    requests.push(req.url ?? '');
    const [, dir, name] = (req.url ?? '').split('/');
    const real = join(full ?? fixture, name ?? '');
    if (dir === 'ok' && full && existsSync(real)) {
      res.writeHead(200, { 'content-type': 'application/zip' });
      createReadStream(real).pipe(res);
    } else if (dir === 'swapped' && name?.endsWith('.zip')) {
      const other = name.includes('background') ? 'images_evaluation.zip' : 'images_background.zip';
      createReadStream(join(fixture, other)).pipe(res);
    } else if (dir === 'corrupt') {
      res.end('PK\u0003\u0004 this is not really a zip');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

test.after.always(() => server?.close());

/** Runs the CLI asynchronously (the server lives in this process, so no spawnSync). */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import=tsx', join(root, 'src', 'cli', 'run.ts'), ...args], { cwd: root, env: { ...process.env, ...env }, timeout: 5 * 60_000 }, (err, stdout, stderr) => {
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

const fresh = () => mkdtempSync(join(tmpdir(), 'mp-data-'));

fullTest(`data omniglot --download fetches, verifies and places both zips (${FULL_DATA_NOTE})`, async (t) => {
  const dir = fresh();
  const r = await cli(['data', 'omniglot', '--download', '--dir', dir, '--base-url', `${base}/ok`]);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /images_background\.zip: .*30 alphabets, 964 characters, 19280 images/);
  t.regex(r.stdout, /images_evaluation\.zip: .*20 alphabets, 659 characters, 13180 images/);
  t.deepEqual(readdirSync(dir).sort(), ['images_background.zip', 'images_evaluation.zip'], 'no temporary files left');
  for (const f of ['images_background.zip', 'images_evaluation.zip']) {
    t.true(readFileSync(join(dir, f)).equals(readFileSync(join(full!, f))));
  }
  // A second run keeps the valid files and downloads nothing.
  const okRequests = () => requests.filter((u) => u.startsWith('/ok/')).length;
  const before = okRequests();
  const again = await cli(['data', 'omniglot', '--download', '--dir', dir, '--base-url', `${base}/ok`, '--json']);
  t.is(again.status, 0, again.stderr);
  t.deepEqual(JSON.parse(again.stdout).files.map((f: { status: string }) => f.status), ['present', 'present']);
  t.is(okRequests(), before);
  // And the status view finds them.
  const show = await cli(['data', 'omniglot', '--dir', dir, '--json']);
  t.is(JSON.parse(show.stdout).splits.background.path, join(dir, 'images_background.zip'));
});

fullTest(`a file:// base URL works too (METAPLASTIC_OMNIGLOT_URL) (${FULL_DATA_NOTE})`, async (t) => {
  const dir = fresh();
  const r = await cli(['data', 'omniglot', '--download', '--dir', dir], { METAPLASTIC_OMNIGLOT_URL: pathToFileURL(full!).href });
  t.is(r.status, 0, r.stderr);
  t.true(existsSync(join(dir, 'images_evaluation.zip')));
});

test('a download that fails verification places nothing', async (t) => {
  for (const [where, re] of [
    ['corrupt', /\[E_DATA\].*corrupt\/images_background\.zip is not a valid Omniglot background archive: .*not a readable zip/],
    ['swapped', /\[E_DATA\].*\d+ characters found, the official images_background split has 964/],
    ['missing', /\[E_IO\].*missing\/images_background\.zip: HTTP 404/],
  ] as const) {
    const dir = fresh();
    const r = await cli(['data', 'omniglot', '--download', '--dir', dir, '--base-url', `${base}/${where}`]);
    t.is(r.status, 1, where);
    t.regex(r.stderr, re);
    t.deepEqual(readdirSync(dir), [], `${where}: nothing placed, no temporary file left`);
  }
  const unreachable = await cli(['data', 'omniglot', '--download', '--dir', fresh(), '--base-url', 'http://127.0.0.1:1']);
  t.is(unreachable.status, 1);
  t.regex(unreachable.stderr, /\[E_IO\]: cannot download http:\/\/127\.0\.0\.1:1\/images_background\.zip/);
});

fullTest(`data omniglot --verify reports the full set (${FULL_DATA_NOTE})`, async (t) => {
  const r = await cli(['data', 'omniglot', '--dir', full!, '--verify']);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /background\s+.*images_background\.zip\s+\(verified: 964 characters, 19280 images\)/);
  t.regex(r.stdout, /evaluation\s+.*images_evaluation\.zip\s+\(verified: 659 characters, 13180 images\)/);
});

test('data omniglot reports what is found; --verify fails (exit 1) on missing or non-official data', async (t) => {
  const none = await cli(['data', 'omniglot', '--dir', fresh()]);
  t.is(none.status, 0, none.stderr);
  t.regex(none.stdout, /background\s+not found/);
  const noneVerified = await cli(['data', 'omniglot', '--dir', fresh(), '--verify']);
  t.is(noneVerified.status, 1);
  t.regex(noneVerified.stderr, /\[E_DATA\].*background.*not found/);
  const small = await cli(['data', 'omniglot', '--dir', fixture, '--verify']);
  t.is(small.status, 1);
  t.regex(small.stderr, /\[E_DATA\].*30 characters found, the official images_background split has 964/);
});
