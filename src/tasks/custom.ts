/**
 * One's own tasks from TypeScript: a seeded generator for the sampling function, and shape/label
 * validation of the episodes it returns, against the same documented shapes the engine uses.
 */
import { MetaplasticError, configError } from '../errors.js';
import type { EpisodeData } from '../episode.js';
import { numel, type TensorData } from '../tensor.js';
import { checkSeed } from './common.js';

/** A small seeded generator (sfc32, seeded through splitmix32) for task sampling in TypeScript. */
export interface TaskRng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  uniform(lo: number, hi: number): number;
  /** Standard normal (Box–Muller). */
  normal(): number;
  /** Shuffles in place and returns the array. */
  shuffle<T>(items: T[]): T[];
  /** The generator's state; `taskRng(0, state)` resumes it. */
  state(): number[];
}

export function taskRng(seed: number, state?: number[]): TaskRng {
  checkSeed(seed);
  let s: number[];
  if (state) {
    if (state.length !== 4 || !state.every((v) => Number.isInteger(v))) throw configError('state', 'expected four integers');
    s = state.map((v) => v >>> 0);
  } else {
    let x = (seed ^ Math.floor(seed / 2 ** 32)) >>> 0;
    const splitmix = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    s = [splitmix(), splitmix(), splitmix(), splitmix()];
  }
  // sfc32: four 32-bit words of state, period >= 2^32, fine for task sampling (not cryptography).
  const next = () => {
    let [a, b, c, d] = s;
    let t = (a + b) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    d = (d + 1) | 0;
    t = (t + d) | 0;
    c = (c + t) | 0;
    s = [a >>> 0, b >>> 0, c >>> 0, d >>> 0];
    return (t >>> 0) / 4294967296;
  };
  const rng: TaskRng = {
    next,
    int: (n) => {
      if (!Number.isInteger(n) || n <= 0) throw configError('n', `expected a positive integer, got ${n}`);
      return Math.floor(next() * n);
    },
    uniform: (lo, hi) => lo + (hi - lo) * next(),
    normal: () => {
      const u = 1 - next();
      return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
    },
    shuffle: (items) => {
      for (let i = items.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [items[i], items[j]] = [items[j], items[i]];
      }
      return items;
    },
    state: () => [...s],
  };
  return rng;
}

/** What a task's episodes must look like. */
export interface EpisodeSpec {
  /** Shape of one input, e.g. [11] for sine or [1, 28, 28] for Omniglot. */
  inputShape: number[];
  /** Output size (regression) or number of classes (classification). */
  outputs: number;
  /** Labels [T, B] / [Q] with whole numbers in [0, outputs) instead of targets [T, B, outputs]. */
  classification: boolean;
}

function same(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function checkTensor(name: string, t: TensorData | undefined, want: (shape: number[]) => string | null): void {
  if (!t || !(t.data instanceof Float32Array) || !Array.isArray(t.shape)) {
    throw new MetaplasticError('E_SHAPE', `episode ${name} must be { data: Float32Array, shape: number[] }`);
  }
  if (!t.shape.every((d) => Number.isInteger(d) && d >= 0) || numel(t.shape) !== t.data.length) {
    throw new MetaplasticError('E_SHAPE', `episode ${name}: shape [${t.shape.join(', ')}] does not match its ${t.data.length} values`);
  }
  const problem = want(t.shape);
  if (problem) throw new MetaplasticError('E_SHAPE', `episode ${name} has shape [${t.shape.join(', ')}], expected ${problem}`);
  const bad = t.data.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) throw new MetaplasticError('E_DATA', `episode ${name} contains a non-finite value (${t.data[bad]}) at flat index ${bad}`);
}

function checkLabels(name: string, t: TensorData, outputs: number): void {
  const bad = t.data.findIndex((v) => !Number.isInteger(v) || v < 0 || v >= outputs);
  if (bad >= 0) throw new MetaplasticError('E_DATA', `episode ${name} has label ${t.data[bad]} at flat index ${bad}, expected a whole number in [0, ${outputs})`);
}

/** Checks an episode against the documented shapes; returns it unchanged or throws E_SHAPE / E_DATA naming the tensor. */
export function validateEpisode(ep: EpisodeData, spec: EpisodeSpec): EpisodeData {
  const inp = spec.inputShape;
  const fmt = (dims: (string | number)[]) => `[${dims.join(', ')}]`;
  checkTensor('supportX', ep?.supportX, (s) =>
    s.length === 2 + inp.length && same(s.slice(2), inp) && s[0] > 0 && s[1] > 0 ? null : fmt(['T', 'B', ...inp]));
  const [t, b] = ep.supportX.shape;
  const out = spec.classification ? [t, b] : [t, b, spec.outputs];
  checkTensor('supportY', ep.supportY, (s) => (same(s, out) ? null : fmt(out)));
  checkTensor('queryX', ep.queryX, (s) => (s.length === 1 + inp.length && same(s.slice(1), inp) ? null : fmt(['Q', ...inp])));
  const q = ep.queryX.shape[0];
  const qout = spec.classification ? [q] : [q, spec.outputs];
  checkTensor('queryY', ep.queryY, (s) => (same(s, qout) ? null : fmt(qout)));
  if (spec.classification) {
    checkLabels('supportY', ep.supportY, spec.outputs);
    checkLabels('queryY', ep.queryY, spec.outputs);
  }
  return ep;
}

export interface CustomTask {
  readonly spec: EpisodeSpec;
  /** Draws an episode with the task's own generator (or the one given), validated. */
  sample(rng?: TaskRng): EpisodeData;
  readonly rng: TaskRng;
}

/** Wraps a user's sampling function as a task whose episodes are checked against `spec`. */
export function customTask(sample: (rng: TaskRng) => EpisodeData, spec: EpisodeSpec & { seed?: number }): CustomTask {
  if (typeof sample !== 'function') throw configError('sample', 'expected a function (rng) => EpisodeData');
  if (!Array.isArray(spec?.inputShape) || !spec.inputShape.every((d) => Number.isInteger(d) && d > 0)) {
    throw configError('inputShape', 'expected an array of positive integers');
  }
  if (!Number.isInteger(spec.outputs) || spec.outputs <= 0) throw configError('outputs', `expected a positive integer, got ${spec.outputs}`);
  const { seed, ...shape } = spec;
  const own = taskRng(seed ?? 0);
  return {
    spec: shape,
    rng: own,
    sample: (rng?: TaskRng) => validateEpisode(sample(rng ?? own), shape),
  };
}
