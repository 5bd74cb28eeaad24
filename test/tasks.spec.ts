import test from 'ava';
import { SineTask, sineRunToEpisode, customTask, validateEpisode, taskRng, tensor, MetaplasticError, type EpisodeData } from '../src/index.js';

test('sine episodes follow the OML/FLP protocol', (t) => {
  const task = new SineTask({}, 3);
  const cfg = task.config;
  t.deepEqual([cfg.poolSize, cfg.functions, cfg.slots, cfg.batchesPerFunction, cfg.batchSize, cfg.queryPerFunction], [400, 10, 10, 40, 32, 32]);
  t.is(task.pool().length, 400);
  const run = task.sampleRun('continual');
  t.deepEqual(run.supportX.shape, [400, 32, 11]);
  t.deepEqual(run.supportY.shape, [400, 32, 1]);
  t.deepEqual(run.queryX.shape, [10, 32, 11]);
  t.is(run.poolIds!.length, 10);
  t.is(new Set(run.poolIds).size, 10);
  const pool = task.pool();
  for (const [slot, id] of run.poolIds!.entries()) t.deepEqual(run.functions[slot], pool[id]);
  const x = run.supportX.data;
  const y = run.supportY.data;
  for (let row = 0; row < 400 * 32; row += 97) {
    const step = Math.floor(row / 32);
    const slot = Math.floor(step / 40);
    const r = x.subarray(row * 11, row * 11 + 11);
    t.is(r[slot], 1);
    t.is(r.slice(0, 10).reduce((a, b) => a + b, 0), 1);
    t.true(r[10] >= -5 && r[10] <= 5);
    const f = run.functions[slot];
    t.true(Math.abs(y[row] - f.amplitude * Math.sin(r[10] + f.phase)) < 1e-4);
  }
  t.deepEqual(run.stepFunction, Array.from({ length: 400 }, (_, s) => Math.floor(s / 40)));
  const ep = task.sample('iid');
  t.deepEqual(ep.queryX.shape, [320, 11]);
  t.deepEqual(ep.queryY.shape, [320, 1]);
  validateEpisode(ep, { inputShape: [11], outputs: 1, classification: false });
});

test('sine evaluation uses fresh functions and i.i.d. order shuffles minibatches', (t) => {
  const task = new SineTask({}, 3);
  const run = task.evalRun('iid');
  t.is(run.poolIds, undefined);
  const pool = task.pool();
  for (const f of run.functions) {
    t.true(f.amplitude >= 0.1 && f.amplitude <= 5.1 && f.phase >= 0 && f.phase <= Math.PI);
    t.false(pool.some((p) => p.amplitude === f.amplitude && p.phase === f.phase));
  }
  const counts = new Array(10).fill(0);
  for (const s of run.stepFunction) counts[s]++;
  t.deepEqual(counts, new Array(10).fill(40));
  t.notDeepEqual(run.stepFunction, Array.from({ length: 400 }, (_, s) => Math.floor(s / 40)));
  t.deepEqual(sineRunToEpisode(run).queryX.shape, [320, 11]);
});

test('sine streams are determined by the seed and resumable from the generator state', (t) => {
  const a = new SineTask({ functions: 2, batchesPerFunction: 3, batchSize: 4 }, 9);
  const b = new SineTask({ functions: 2, batchesPerFunction: 3, batchSize: 4 }, 9);
  t.deepEqual(a.pool(), b.pool());
  t.deepEqual(a.sample().supportX.data, b.sample().supportX.data);
  const state = a.rngState();
  const next = a.sample();
  b.setRngState(state);
  t.deepEqual(b.sample().supportX.data, next.supportX.data);
  t.notDeepEqual(new SineTask({}, 10).pool(), new SineTask({}, 9).pool());
  t.deepEqual(a.sample().supportX.shape, [6, 4, 11]);
});

test('bad sine configurations name the field', (t) => {
  const field = (f: () => unknown) => {
    const e = t.throws(f, { instanceOf: MetaplasticError })!;
    t.is((e as MetaplasticError).code, 'E_CONFIG');
    return e.message;
  };
  t.regex(field(() => new SineTask({ functions: 11 })), /functions/);
  t.regex(field(() => new SineTask({ batchSize: 0 })), /batchSize/);
  t.regex(field(() => new SineTask({ amplitude: [3, 1] })), /amplitude/);
  t.regex(field(() => new SineTask({ nope: 1 } as any)), /nope/);
  t.regex(field(() => new SineTask({}, -1)), /seed/);
  t.regex(field(() => new SineTask().sample('random' as any)), /order/);
  const task = new SineTask();
  task.dispose();
  t.throws(() => task.pool(), { message: /disposed/ });
});

function toyEpisode(rng: ReturnType<typeof taskRng>, classes = 3): EpisodeData {
  const t = 6;
  const sx = Float32Array.from({ length: t * 2 }, () => rng.normal());
  const sy = Float32Array.from({ length: t }, () => rng.int(classes));
  return {
    supportX: tensor(sx, [t, 1, 2]),
    supportY: tensor(sy, [t, 1]),
    queryX: tensor([0, 1, 1, 0], [2, 2]),
    queryY: tensor([0, 1], [2]),
  };
}

test('customTask validates user episodes against the documented shapes', (t) => {
  const task = customTask((rng) => toyEpisode(rng), { inputShape: [2], outputs: 3, classification: true, seed: 4 });
  const ep = task.sample();
  t.deepEqual(ep.supportX.shape, [6, 1, 2]);
  t.deepEqual(task.sample(taskRng(1)).supportY.data, task.sample(taskRng(1)).supportY.data);
  const spec = { inputShape: [2], outputs: 3, classification: true };
  const bad = (mutate: (e: EpisodeData) => void, code: string, re: RegExp) => {
    const e = toyEpisode(taskRng(0));
    mutate(e);
    const err = t.throws(() => validateEpisode(e, spec), { instanceOf: MetaplasticError }) as MetaplasticError;
    t.is(err.code, code);
    t.regex(err.message, re);
  };
  bad((e) => (e.supportX = tensor(new Float32Array(18), [6, 1, 3])), 'E_SHAPE', /supportX .*\[T, B, 2\]/);
  bad((e) => (e.supportY = tensor(new Float32Array(6), [6])), 'E_SHAPE', /supportY .*\[6, 1\]/);
  bad((e) => (e.queryY = tensor([0, 1, 2], [3])), 'E_SHAPE', /queryY/);
  bad((e) => (e.queryY.data[1] = 3), 'E_DATA', /queryY has label 3/);
  bad((e) => (e.supportY.data[0] = 0.5), 'E_DATA', /supportY/);
  bad((e) => (e.queryX.data[0] = NaN), 'E_DATA', /queryX contains a non-finite/);
  bad((e) => (e.supportX = { data: new Float32Array(3), shape: [6, 1, 2] }), 'E_SHAPE', /does not match its 3 values/);
  const regression = customTask(() => ({ supportX: tensor([1], [1, 1, 1]), supportY: tensor([2], [1, 1, 1]), queryX: tensor([1], [1, 1]), queryY: tensor([2], [1, 1]) }), {
    inputShape: [1], outputs: 1, classification: false,
  });
  t.deepEqual(regression.sample().queryY.shape, [1, 1]);
  t.throws(() => customTask((rng) => toyEpisode(rng), { inputShape: [0], outputs: 3, classification: true }), { message: /inputShape/ });
});

test('taskRng is deterministic, resumable and in range', (t) => {
  const a = taskRng(42);
  const b = taskRng(42);
  const xs = Array.from({ length: 1000 }, () => a.next());
  t.deepEqual(xs, Array.from({ length: 1000 }, () => b.next()));
  t.true(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  t.true(Math.abs(mean - 0.5) < 0.05);
  const resumed = taskRng(0, a.state());
  t.is(resumed.next(), a.next());
  t.notDeepEqual(taskRng(1).next(), taskRng(2).next());
  t.deepEqual(taskRng(3).shuffle([1, 2, 3, 4, 5]).sort(), [1, 2, 3, 4, 5]);
  t.true(Array.from({ length: 100 }, () => a.int(7)).every((v) => Number.isInteger(v) && v >= 0 && v < 7));
});
