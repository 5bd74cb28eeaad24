import test from 'ava';
import { cli } from './helpers.js';

test('info --json prints the runtime object', (t) => {
  const r = cli(['info', '--json']);
  t.is(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  for (const key of ['version', 'torchVersion', 'device', 'cudaAvailable', 'cudaDeviceCount', 'threads']) {
    t.true(key in info, key);
  }
});

test('info prints a readable summary', (t) => {
  const r = cli(['info']);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /libtorch\s+2\.11\.0/);
  t.regex(r.stdout, /device\s+(cpu|cuda:\d)/);
});

test('--help works for the CLI and for subcommands', (t) => {
  const top = cli(['--help']);
  t.is(top.status, 0);
  t.regex(top.stdout, /Usage: metaplastic/);
  t.regex(top.stdout, /info/);
  const sub = cli(['info', '--help']);
  t.is(sub.status, 0);
  t.regex(sub.stdout, /--json/);
});

test('unknown commands and flags fail with a clear message', (t) => {
  const cmd = cli(['frobnicate']);
  t.not(cmd.status, 0);
  t.regex(cmd.stderr, /unknown command 'frobnicate'/);
  const flag = cli(['info', '--nope']);
  t.not(flag.status, 0);
  t.regex(flag.stderr, /unknown option '--nope'/);
});
