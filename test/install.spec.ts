// What `npm install metaplastic` gives a user: the packed package and this machine's platform package,
// installed into an empty project outside the repository, with no Rust toolchain or C compiler on PATH.
// libtorch comes through the user-facing mechanism (METAPLASTIC_CACHE, or LIBTORCH), never a download.
import test from 'ava';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { root } from './helpers.js';
import { demoConfigs } from '../src/presets.js';
import { cacheRoot, findLibtorch } from '../scripts/libtorch.mjs';

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const PLATFORMS: Record<string, string> = { 'linux-x64': 'linux-x64-gnu', 'linux-arm64': 'linux-arm64-gnu', 'darwin-arm64': 'darwin-arm64' };
const platform = PLATFORMS[`${process.platform}-${process.arch}`];
const TOOLS = ['cargo', 'rustc', 'rustup', 'cc', 'gcc', 'g++', 'c++', 'clang', 'clang++'];

const work = mkdtempSync(join(tmpdir(), 'mp-install-'));
test.after.always(() => rmSync(work, { recursive: true, force: true }));

/** npm's own CLI scripts, found through the `npm` on PATH (the consumer's PATH will not have it). */
function npmCli(): { npm: string; npx: string } {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, 'npm');
    if (!dir || !existsSync(candidate)) continue;
    const npm = realpathSync(candidate);
    return { npm, npx: join(dirname(npm), 'npx-cli.js') };
  }
  throw new Error('npm is not on PATH');
}

/** A PATH holding node and a shell (npx runs a package's command through `sh`), nothing else. */
function bareBin(): string {
  const bin = join(work, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  symlinkSync('/bin/sh', join(bin, 'sh'));
  return bin;
}

/** The environment of a user's shell: nothing of the repository's build, libtorch through the cache. */
function userEnv(bin: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|LIBTORCH|METAPLASTIC_|CARGO|RUSTUP)/i.test(k)) continue;
    env[k] = v;
  }
  env.PATH = bin;
  env.OMP_NUM_THREADS = '1';
  env.npm_config_cache = spawnSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).stdout.trim();
  // The cache that `npm test`'s setup filled; a user's own LIBTORCH when that is what setup used.
  const libtorch = process.env.LIBTORCH;
  const saved = process.env.LIBTORCH;
  delete process.env.LIBTORCH;
  const cached = findLibtorch();
  if (saved !== undefined) process.env.LIBTORCH = saved;
  if (cached) env.METAPLASTIC_CACHE = cacheRoot();
  else if (libtorch) env.LIBTORCH = libtorch;
  return env;
}

function pack(dir: string): string {
  const r = spawnSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npm pack in ${dir} failed:\n${r.stderr}`);
  return join(work, JSON.parse(r.stdout)[0].filename);
}

/**
 * metaplastic as the release publishes it: the files `npm pack` takes from the checkout, with the platform
 * packages as optional dependencies, which `napi prepublish` adds at release (the repository's manifest
 * cannot list them: `npm ci` would need them in the lock before they are published).
 */
function rootTarball(): string {
  const stage = join(work, 'stage', 'metaplastic');
  const dry = spawnSync('npm', ['pack', '--dry-run', '--json'], { cwd: root, encoding: 'utf8' });
  if (dry.status !== 0) throw new Error(`npm pack --dry-run failed:\n${dry.stderr}`);
  for (const { path } of JSON.parse(dry.stdout)[0].files as { path: string }[]) {
    mkdirSync(dirname(join(stage, path)), { recursive: true });
    copyFileSync(join(root, path), join(stage, path));
  }
  const platforms = readdirSync(join(root, 'npm')).map((d) => JSON.parse(readFileSync(join(root, 'npm', d, 'package.json'), 'utf8')).name as string);
  const manifest = { ...pkg, optionalDependencies: Object.fromEntries(platforms.map((name) => [name, pkg.version])) };
  writeFileSync(join(stage, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
  return pack(stage);
}

/** This machine's platform package, as the release assembles it: npm/<platform>/ plus the built addon. */
function platformTarball(): string {
  const stage = join(work, 'stage', platform);
  mkdirSync(stage, { recursive: true });
  for (const f of readdirSync(join(root, 'npm', platform))) copyFileSync(join(root, 'npm', platform, f), join(stage, f));
  const addon = `metaplastic.${platform}.node`;
  copyFileSync(join(root, 'native', addon), join(stage, addon));
  return pack(stage);
}

function show(r: SpawnSyncReturns<string>): string {
  return `exit ${r.status}\n${r.stdout?.slice(-2000)}\n${r.stderr?.slice(-4000)}`;
}

test('the packed package installs and runs in an empty project without Rust, a C compiler or the repository', (t) => {
  if (!platform) return t.pass(`no platform package for ${process.platform}-${process.arch}`);
  const { npm, npx } = npmCli();
  const bin = bareBin();
  const env = userEnv(bin);
  t.true(env.METAPLASTIC_CACHE !== undefined || env.LIBTORCH !== undefined, 'setup left a libtorch to point the consumer at');
  for (const tool of TOOLS) t.false(existsSync(join(bin, tool)), `${tool} is not reachable`);

  const tarballs = [rootTarball(), platformTarball()];
  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  const versions = [`typescript@${pkg.devDependencies.typescript}`, `@types/node@${pkg.devDependencies['@types/node']}`];
  const run = (cmd: string, args: string[]) => spawnSync(process.execPath, [cmd, ...args], { cwd: app, env, encoding: 'utf8', timeout: 8 * 60_000 });

  const install = run(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', ...tarballs, ...versions]);
  t.is(install.status, 0, show(install));
  t.true(existsSync(join(app, 'node_modules', `metaplastic-${platform}`, `metaplastic.${platform}.node`)));

  // The user-facing way to get libtorch (here: pointed at the cache setup filled, so nothing downloads).
  const setup = run(npx, ['metaplastic', 'setup', '--json']);
  t.is(setup.status, 0, show(setup));
  const where = JSON.parse(setup.stdout);
  t.is(realpathSync(where.addon), realpathSync(join(app, 'node_modules', `metaplastic-${platform}`, `metaplastic.${platform}.node`)));
  t.notRegex(setup.stderr, /fetched now|installing libtorch/);

  const info = run(npx, ['metaplastic', 'info', '--json']);
  t.is(info.status, 0, show(info));
  const runtime = JSON.parse(info.stdout);
  t.is(runtime.version, pkg.version);
  t.true(runtime.torchVersion.startsWith('2.11.0'), runtime.torchVersion);

  const config = join(app, 'tiny.json');
  writeFileSync(config, JSON.stringify(demoConfigs({ scale: 'tiny' }).flp));
  const train = run(npx, ['metaplastic', 'train', '--config', config, '--steps', '2', '--out', join(app, 'run'), '--json']);
  t.is(train.status, 0, show(train));
  t.is(readFileSync(join(app, 'run', 'metrics.jsonl'), 'utf8').trim().split('\n').length, 2);
  const evaluation = run(npx, ['metaplastic', 'eval', '--checkpoint', join(app, 'run'), '--runs', '2', '--seed', '1', '--json']);
  t.is(evaluation.status, 0, show(evaluation));
  const result = JSON.parse(evaluation.stdout).result;
  t.is(result.runs, 2);
  t.is(typeof result.continual.finalMse.mean, 'number');

  // TypeScript: a strict script that knows the package only through its installed declarations.
  writeFileSync(
    join(app, 'use.ts'),
    [
      `import { checkConfig, runtimeInfo, MetaplasticError, type RuntimeInfo, type ParamInfo } from 'metaplastic';`,
      `const info: RuntimeInfo = runtimeInfo();`,
      `const params: ParamInfo[] = checkConfig('flp-sine');`,
      `let code: string = 'none';`,
      `try { checkConfig('flp-sine', { learner: { device: 'no-such-device' } }); } catch (e) { if (e instanceof MetaplasticError) code = e.code; }`,
      `console.log(JSON.stringify({ torch: info.torchVersion, params: params.length, code }));`,
      '',
    ].join('\n'),
  );
  const tsc = run(join(app, 'node_modules', 'typescript', 'bin', 'tsc'), ['--strict', '--skipLibCheck', 'false', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--lib', 'es2022,esnext.disposable', '--types', 'node', 'use.ts']);
  t.is(tsc.status, 0, show(tsc));
  const used = run(join(app, 'use.js'), []);
  t.is(used.status, 0, show(used));
  const out = JSON.parse(used.stdout);
  t.true(out.params > 0);
  t.is(out.code, 'E_CONFIG');
});
