import { native, type TensorData } from './native.js';
import { MetaplasticError } from './errors.js';

/** Tensors cross the boundary as flat row-major Float32Array values plus a shape (defined by the binding). */
export type { TensorData } from './native.js';

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function tensor(data: ArrayLike<number>, shape: readonly number[]): TensorData {
  const arr = data instanceof Float32Array ? data : Float32Array.from(data);
  if (!shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new MetaplasticError('E_SHAPE', `shape must hold non-negative integers, got [${shape.join(', ')}]`);
  }
  if (numel(shape) !== arr.length) {
    throw new MetaplasticError('E_SHAPE', `shape [${shape.join(', ')}] holds ${numel(shape)} values but ${arr.length} were given`);
  }
  return { data: arr, shape: [...shape] };
}

/** Sends a tensor to the engine's default device and back; the result equals the input. */
export function roundTrip(t: TensorData): TensorData {
  return native.roundTrip({ data: t.data, shape: t.shape });
}
