import test from 'ava';
import { checkConfig, MetaplasticError, manualSeed, roundTrip, runtimeInfo, setThreads, tensor } from '../src/index.js';
import { native } from '../src/native.js';

test('runtimeInfo reports versions, device and threads', (t) => {
  const info = runtimeInfo();
  t.regex(info.version, /^\d+\.\d+\.\d+/);
  t.true(info.torchVersion.startsWith('2.11.0'), info.torchVersion);
  t.is(typeof info.cudaAvailable, 'boolean');
  t.is(typeof info.mpsAvailable, 'boolean');
  t.is(info.device, info.cudaAvailable ? 'cuda:0' : info.mpsAvailable ? 'mps' : 'cpu');
  t.true(info.cudaDeviceCount >= (info.cudaAvailable ? 1 : 0));
  t.true(Number.isInteger(info.threads) && info.threads >= 1);
});

test('setThreads changes the libtorch thread count', (t) => {
  const before = runtimeInfo().threads;
  setThreads(1);
  t.is(runtimeInfo().threads, 1);
  setThreads(before);
  t.is(runtimeInfo().threads, before);
  t.throws(() => setThreads(0), { instanceOf: MetaplasticError, message: /threads/ });
});

test('manualSeed accepts integers and rejects others', (t) => {
  t.notThrows(() => manualSeed(42));
  t.throws(() => manualSeed(1.5), { message: /seed/ });
});

test('data round-trips through the engine unchanged, both ways', (t) => {
  const values = new Float32Array([0, -1.5, 3.25, 1e-30, -1e30, Math.PI, 7, 8, 9, 10, 11, 12]);
  for (const shape of [[12], [3, 4], [2, 3, 2], [1, 1, 12]]) {
    const out = roundTrip(tensor(values, shape));
    t.deepEqual(out.shape, shape);
    t.true(out.data instanceof Float32Array);
    t.deepEqual(Array.from(out.data), Array.from(values));
  }
  const empty = roundTrip(tensor([], [0, 5]));
  t.deepEqual(empty.shape, [0, 5]);
  t.is(empty.data.length, 0);
});

test('an error raised in Rust surfaces as a JS error with its code', (t) => {
  // Bypass the TypeScript-side check so the engine itself rejects the shape.
  const err = t.throws(() => native.roundTrip({ data: new Float32Array(5), shape: [2, 3] }), { instanceOf: MetaplasticError });
  t.is(err.code, 'E_SHAPE');
  t.regex(err.message, /shape \[2, 3\] holds 6 values but 5 were given/);
});

test('a Rust panic surfaces as a JS error and the process survives', (t) => {
  const err = t.throws(() => native.panicForTesting('boom from test'), { instanceOf: MetaplasticError });
  t.is(err.code, 'E_PANIC');
  t.regex(err.message, /boom from test/);
  // The addon still works afterwards.
  t.deepEqual(Array.from(roundTrip(tensor([1, 2], [2])).data), [1, 2]);
});

test("device 'mps' is accepted where libtorch's MPS backend is usable and refused by name elsewhere", (t) => {
  const info = runtimeInfo();
  if (info.mpsAvailable) {
    t.true(checkConfig('flp-sine', { learner: { device: 'mps' } }).length > 0);
  } else {
    const e = t.throws(() => checkConfig('flp-sine', { learner: { device: 'mps' } }), { instanceOf: MetaplasticError });
    t.is(e!.code, 'E_CONFIG');
    t.regex(e!.message, /device.*'mps' requested but libtorch's MPS backend is not available/);
  }
  const unknown = t.throws(() => checkConfig('flp-sine', { learner: { device: 'metal' } }), { instanceOf: MetaplasticError });
  t.regex(unknown!.message, /expected auto, cpu, cuda, cuda:N or mps/);
});
