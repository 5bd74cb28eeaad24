// Checks at the API's edge: whatever a caller passes (plain JS, wrong typed arrays, null), the error is a
// MetaplasticError that names the argument, before anything reaches the native binding.
import { configError, MetaplasticError } from './errors.js';
import type { EpisodeData } from './episode.js';
import type { TensorData } from './tensor.js';

const MAX_DIM = 2 ** 31 - 1;

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a plain Array';
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  return typeof v === 'object' ? `an object (${Object.prototype.toString.call(v).slice(8, -1)})` : `a ${typeof v}`;
}

/** A tensor argument: `{ data: Float32Array, shape: number[] }` whose shape holds exactly data.length values. */
export function checkTensor(t: unknown, what: string): TensorData {
  if (typeof t !== 'object' || t === null) throw configError(what, `expected { data: Float32Array, shape: number[] }, got ${kindOf(t)}`);
  const { data, shape } = t as { data?: unknown; shape?: unknown };
  if (!(data instanceof Float32Array)) {
    throw configError(`${what}.data`, `expected a Float32Array, got ${kindOf(data)} (convert with Float32Array.from, or build it with tensor(values, shape))`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new MetaplasticError('E_SHAPE', `${what}.shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  if (shape.some((d) => d > MAX_DIM)) {
    throw new MetaplasticError('E_SHAPE', `${what}.shape [${shape.join(', ')}] has a dimension above ${MAX_DIM}`);
  }
  const n = shape.reduce((a: number, b: number) => a * b, 1);
  if (n !== data.length) {
    const count = Number.isSafeInteger(n) ? String(n) : `more than ${Number.MAX_SAFE_INTEGER}`;
    throw new MetaplasticError('E_SHAPE', `${what}.shape [${shape.join(', ')}] holds ${count} values but data has ${data.length}`);
  }
  return t as TensorData;
}

/** A non-empty array of episodes, each with its four tensors. */
export function checkEpisodes(episodes: unknown, what = 'episodes'): EpisodeData[] {
  if (!Array.isArray(episodes)) throw configError(what, `expected an array of episodes, got ${kindOf(episodes)}`);
  if (episodes.length === 0) throw configError(what, 'at least one episode is required');
  episodes.forEach((e, i) => {
    if (typeof e !== 'object' || e === null || Array.isArray(e)) throw configError(`${what}[${i}]`, `expected an episode object, got ${kindOf(e)}`);
    for (const k of ['supportX', 'supportY', 'queryX', 'queryY'] as const) {
      if ((e as Record<string, unknown>)[k] === undefined) throw configError(`${what}[${i}].${k}`, 'is missing');
      checkTensor((e as Record<string, unknown>)[k], `${what}[${i}].${k}`);
    }
    const classes = (e as EpisodeData).classes;
    if (classes !== undefined && !(Array.isArray(classes) && classes.every((c) => Number.isInteger(c) && c >= 0))) {
      throw configError(`${what}[${i}].classes`, `expected an array of non-negative integers, got ${JSON.stringify(classes)}`);
    }
  });
  return episodes as EpisodeData[];
}

/** A positive integer option (threads, runs, …), or undefined. */
export function checkPositiveInt(v: unknown, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw configError(what, `expected a positive integer, got ${JSON.stringify(v)}`);
  return v as number;
}

/** Deeper than any configuration is: a deeper value is a mistake, and recursing into it would overflow the stack. */
export const MAX_CONFIG_DEPTH = 32;

/** Keys that would reach an object's prototype when assigned. */
export const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * A configuration (or overrides) is plain JSON data: objects, arrays, strings, finite numbers, booleans and
 * null, at most MAX_CONFIG_DEPTH levels deep, with no key that reaches a prototype. Anything else is named
 * with its path before it is merged, cloned or sent to the engine.
 */
export function checkConfigData(value: unknown, what: string, depth = 0): void {
  const here = what || 'config';
  if (depth > MAX_CONFIG_DEPTH) throw configError(here, `nested more than ${MAX_CONFIG_DEPTH} levels deep`);
  switch (typeof value) {
    case 'string':
    case 'boolean':
    case 'undefined':
      return;
    case 'number':
      if (!Number.isFinite(value)) throw configError(here, `${value} is not a finite number (a JSON number too large for a double, such as 1e400, reads as Infinity)`);
      return;
    case 'object':
      if (value === null) return;
      if (Array.isArray(value)) {
        const extra = Object.keys(value).find((k) => !/^\d+$/.test(k));
        if (extra !== undefined) throw configError(here, `is a list with a named property '${extra}'; JSON lists hold only elements`);
        for (let i = 0; i < value.length; i++) checkConfigData(value[i], `${here}[${i}]`, depth + 1);
        return;
      }
      if (Object.getPrototypeOf(value) !== Object.prototype && Object.getPrototypeOf(value) !== null) {
        throw configError(here, `expected plain data (a JSON object), got ${kindOf(value)}`);
      }
      for (const key of Object.keys(value)) {
        if (FORBIDDEN_KEYS.has(key)) throw configError(field(what, key), `'${key}' is not a configuration field`);
        checkConfigData((value as Record<string, unknown>)[key], field(what, key), depth + 1);
      }
      if (Object.getOwnPropertySymbols(value).length > 0) throw configError(here, 'has a Symbol key; configurations are plain JSON data');
      return;
    default:
      throw configError(here, `expected plain data (JSON), got a ${typeof value === 'bigint' ? 'BigInt' : typeof value === 'symbol' ? 'Symbol' : typeof value}`);
  }
}

const field = (path: string, key: string) => (path ? `${path}.${key}` : key);
