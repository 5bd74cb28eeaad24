import { configError, MetaplasticError } from '../errors.js';
import type { NativeSeeded } from '../native.js';
import type { Order } from '../engine-types.js';

/** Order of an inner-loop stream: task after task (class after class), or shuffled. */
export type { Order } from '../engine-types.js';
/** @deprecated The engine's name for it: `Order`. */
export type StreamOrder = Order;

export function checkSeed(seed: number, field = 'seed'): number {
  if (!Number.isSafeInteger(seed) || seed < 0) throw configError(field, `expected a non-negative integer, got ${seed}`);
  return seed;
}

/** Holds a native object until `dispose()`; afterwards every use is an error, not a crash. */
export class NativeHandle<T> {
  #value: T | undefined;
  constructor(value: T, private readonly what: string) {
    this.#value = value;
  }
  get(): T {
    if (this.#value === undefined) throw new MetaplasticError('E_USAGE', `${this.what} was disposed`);
    return this.#value;
  }
  dispose(): void {
    this.#value = undefined;
  }
}

/** A native sampler with a seeded generator whose state can be saved and restored. */
export abstract class SeededSampler<T extends NativeSeeded> implements Disposable {
  protected readonly native: NativeHandle<T>;

  protected constructor(handle: T, what: string) {
    this.native = new NativeHandle(handle, what);
  }

  /** The generator's state, to resume the same stream later with `setRngState`. */
  rngState(): string {
    return this.native.get().rngState();
  }

  setRngState(state: string): void {
    this.native.get().setRngState(state);
  }

  dispose(): void {
    this.native.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
