// Property-based fuzzing (fast-check, fixed seeds, bounded case counts) of what a user can type: whole
// configurations, `--set` paths and values, command lines, and episodes. The properties: the process never
// dies (a native abort or crash would fail this file's worker), every failure is a MetaplasticError whose
// code is one of the documented codes, nothing reaches Object.prototype, and a refused input changes nothing
// on disk.
import test from 'ava';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkConfig, ERROR_CODES, Experiment, MetaplasticError, preset, tensor, type EpisodeData, type ExperimentConfig } from '../src/index.js';
import { applySet } from '../src/cli/args.js';
import { main } from '../src/cli/main.js';
import { demoConfigs } from '../src/presets.js';
import { snapshot } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'metaplastic-fuzz-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const SEED = 20261207;
const codes = new Set<string>(ERROR_CODES);

/** Runs `f`; a failure must be a MetaplasticError with a documented code (returned), anything else is rethrown. */
async function outcome(f: () => unknown): Promise<string> {
  try {
    await f();
    return 'ok';
  } catch (e) {
    if (e instanceof MetaplasticError && codes.has(e.code)) return e.code;
    throw new Error(`not a coded MetaplasticError: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, { cause: e });
  }
}

function prototypeClean(): boolean {
  return Object.keys(Object.prototype).length === 0 && ({} as Record<string, unknown>).polluted === undefined;
}

// Values a field may be given: the edges of every kind (sizes that overflow 32 and 64 bits, non-finite
// numbers, wrong types), never mid-size values that would merely allocate a lot.
const edgeValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(-1, 0, 1, 2, 3, 0.5, -0, 2 ** 31, 2 ** 32, 2 ** 53, 1e10, 1e300, Number.NaN, Infinity, -Infinity, Number.MAX_VALUE),
  fc.constantFrom('', 'oja', 'hebb', 'sgd', 'linear', 'conv', 'relu', 'cuda', 'cpu', 'x'.repeat(300), '../../etc', '__proto__'),
  fc.constantFrom(null, true, false, [], {}, [0], [1, 2, 3], { type: 'linear', units: 2 }, { type: 'conv' }),
  fc.constantFrom<unknown>(() => 1, Symbol('s'), 10n, new Date(0), new Map()),
);

const sineConfig = (): ExperimentConfig => demoConfigs({ scale: 'tiny' }).flp;

/** Leaf paths of a configuration, plus a few that do not exist. */
function paths(value: unknown, prefix: string[] = []): string[][] {
  if (value === null || typeof value !== 'object') return [prefix];
  const own = Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => paths(v, [...prefix, k]));
  return [...own, [...prefix, 'unknownField']];
}

const configPaths = paths(sineConfig());

test('configurations: any field set to any edge value is accepted or refused with a code', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom(...configPaths), edgeValue), { minLength: 1, maxLength: 3 }), async (edits) => {
      const config = sineConfig() as unknown as Record<string, unknown>;
      for (const [path, value] of edits) {
        let node = config;
        for (const key of path.slice(0, -1)) {
          if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
          node = node[key] as Record<string, unknown>;
        }
        node[path[path.length - 1]] = value;
      }
      await outcome(() => checkConfig(config as unknown as ExperimentConfig));
      return prototypeClean();
    }),
    { seed: SEED, numRuns: 1000 },
  );
  t.true(prototypeClean());
});

const segment = fc.oneof(fc.constantFrom('learner', 'task', 'sine', 'layers', 'meta', 'lr', 'rule', 'type', 'units', 'metaBatch', 'seed', '0', '1', '99', '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', ''), fc.string({ maxLength: 6 }));
const setValue = fc.oneof(fc.constantFrom('1', '-1', '1e400', 'NaN', 'null', '[]', '{}', '"x"', 'oja', '{"a":{"b":1}}', '2147483648', 'true', ''), fc.string({ maxLength: 8 }));

test('--set: any path and value is applied or refused with a code, and never reaches a prototype', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(segment, { minLength: 1, maxLength: 5 }), setValue, async (path, value) => {
      const config = sineConfig() as unknown as Record<string, unknown>;
      await outcome(async () => {
        applySet(config, `${path.join('.')}=${value}`);
        checkConfig(config as unknown as ExperimentConfig);
      });
      return prototypeClean();
    }),
    { seed: SEED, numRuns: 1000 },
  );
  t.true(prototypeClean());
});

test.serial('command lines: any flags exit with a documented code, no unexpected error, and a refused one changes nothing', async (t) => {
  const config = join(tmp, 'tiny.json');
  writeFileSync(config, JSON.stringify(demoConfigs({ scale: 'tiny' }).oml));
  const existing = join(tmp, 'existing');
  t.is(await main(['train', '--config', config, '--steps', '2', '--out', existing, '--threads', '1']), 0);
  const flag = fc.oneof(
    fc.constantFrom<string[]>([], ['--resume'], ['--json'], ['--seed', '3'], ['--seed', '-1'], ['--threads', '1'], ['--threads', '0'], ['--threads', '99999'], ['--checkpoint-every', '1'], ['--checkpoint-every', 'x']),
    fc.tuple(fc.constantFrom('--steps', '--threads', '--seed', '--checkpoint-every', '--dist-timeout', '--runs', '--classes', '--nope'), fc.constantFrom('0', '1', '2', '-3', '1e400', 'x', '', '4294967296')),
    fc.tuple(fc.constant('--set'), fc.tuple(fc.array(segment, { minLength: 1, maxLength: 3 }), setValue).map(([p, v]) => `${p.join('.')}=${v}`)),
  );
  const command = fc.tuple(fc.constantFrom('train', 'eval', 'presets', 'trian', 'compare'), fc.boolean(), fc.array(flag, { maxLength: 4 }));
  const allowed = new Set([0, 1, 2, 3]);
  const stderrWrite = process.stderr.write;
  const stdoutWrite = process.stdout.write;
  let fresh = 0;
  try {
    await fc.assert(
      fc.asyncProperty(command, async ([cmd, intoExisting, flags]) => {
        const out = intoExisting ? existing : join(tmp, `fresh-${fresh++}`);
        const before = snapshot(out);
        const args = cmd === 'train' ? ['train', '--config', config, '--steps', '3', '--out', out] : cmd === 'eval' ? ['eval', '--checkpoint', out, '--runs', '2'] : cmd === 'compare' ? ['compare', out] : [cmd];
        let printed = '';
        process.stderr.write = ((s: string) => {
          printed += s;
          return true;
        }) as typeof process.stderr.write;
        process.stdout.write = (() => true) as typeof process.stdout.write;
        let code: number;
        try {
          code = await main([...args, ...flags.flat()]);
        } finally {
          process.stderr.write = stderrWrite;
          process.stdout.write = stdoutWrite;
        }
        if (!allowed.has(code) || /unexpected error/.test(printed)) throw new Error(`exit ${code}: ${printed}`);
        // A refused command leaves the folder as it was (a fresh one is not even created).
        if (code !== 0 && JSON.stringify(snapshot(out)) !== JSON.stringify(before)) throw new Error(`exit ${code} changed ${out}: ${printed}`);
        return true;
      }),
      { seed: SEED, numRuns: 200 },
    );
  } finally {
    process.stderr.write = stderrWrite;
    process.stdout.write = stdoutWrite;
  }
  t.true(prototypeClean());
});

test('episodes: any shapes, kinds and values are run or refused with a code', async (t) => {
  const exp = await Experiment.forLearner({ inputShape: [2], layers: [{ type: 'linear', units: 4 }, { type: 'linear', units: 1 }], task: 'regression', rule: { type: 'hebb' }, plasticity: { init: 0.01 } });
  const dim = fc.constantFrom(0, 1, 2, 3, 2 ** 31, -1, 1.5);
  const shape = fc.array(dim, { minLength: 0, maxLength: 4 });
  const values = fc.constantFrom(0, 1, -1, Number.NaN, Infinity, 1e30);
  const tensorLike = fc.oneof(
    fc.tuple(shape, values).map(([s, v]) => {
      const n = s.every((d) => Number.isInteger(d) && d >= 0 && d < 64) ? s.reduce((a, b) => a * b, 1) : 3;
      return { data: new Float32Array(n).fill(v), shape: s };
    }),
    fc.constantFrom<unknown>(null, undefined, 3, 'x', [], { data: [1, 2], shape: [2] }, { data: new Float64Array(2), shape: [2] }, { data: new Float32Array(2) }),
  );
  const good = (): EpisodeData => ({ supportX: tensor(new Float32Array(8), [2, 2, 2]), supportY: tensor(new Float32Array(4), [2, 2, 1]), queryX: tensor(new Float32Array(6), [3, 2]), queryY: tensor(new Float32Array(3), [3, 1]) });
  const episode = fc.tuple(fc.constantFrom('supportX', 'supportY', 'queryX', 'queryY', 'classes'), fc.oneof(tensorLike, fc.constantFrom<unknown>([0, 1], [-1], ['a'], 7))).map(([k, v]) => ({ ...good(), [k]: v }));
  await fc.assert(
    fc.asyncProperty(fc.array(episode, { minLength: 0, maxLength: 2 }), fc.boolean(), async (episodes, train) => {
      await outcome(() => (train ? exp.metaStep(episodes as EpisodeData[]) : exp.runEpisodes(episodes as EpisodeData[])));
      return true;
    }),
    { seed: SEED, numRuns: 500 },
  );
  // The learner still works after everything it refused.
  t.is((await exp.runEpisodes([good()])).queryLoss.length, 1);
  t.throws(() => preset('flp-sine', { learner: { seed: Symbol('x') as never } }), { instanceOf: MetaplasticError });
});
