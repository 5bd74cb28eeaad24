/**
 * Image datasets (Omniglot, generic image folders) and their samplers. Images are float32 in [0, 1],
 * shape [C, S, S]; Omniglot is 1 channel with ink = 1 and background = 0 unless `invert: false`.
 */
import {
  native,
  wrapNativeObject,
  type ContinualStreamData,
  type ImageEpisode,
  type NativeEpisodeSampler,
  type NativeImageDataset,
  type OmniglotPaths,
} from '../native.js';
import type { TensorData } from '../tensor.js';
import type { CacheDir, DatasetInfo, EpisodeConfig, ImageFolderOptions, OmniglotOptions, OmniglotSplit, StreamConfig, ZipSummary } from '../engine-types.js';
import { checkSeed, NativeHandle, SeededSampler } from './common.js';

export type {
  ResizeFilter,
  CacheDir,
  OmniglotOptions,
  ImageFolderOptions,
  CacheStatus,
  DatasetInfo,
  OmniglotSplit,
  ZipSummary,
} from '../engine-types.js';

/** Which classes and images make a continual stream (the engine's `StreamConfig`), and its seed. */
export type StreamOptions = StreamConfig & { seed?: number };

/** How episodes are drawn (the engine's `EpisodeConfig`), and the seed of the sampler's stream. */
export type EpisodeOptions = EpisodeConfig & { seed?: number };

/** @deprecated The engine's name for it: `CacheDir`. */
export type CacheOption = CacheDir;

/** A continual-learning stream, an episode with its dataset class ids, the data folders (defined by the binding). */
export type { ContinualStreamData, ImageEpisode, OmniglotPaths } from '../native.js';

/** The seed seeds the sampler's stream; the rest is the engine's configuration. */
function withoutSeed<T extends { seed?: number }>(o: T): Omit<T, 'seed'> {
  const { seed: _seed, ...rest } = o;
  return rest;
}

export class EpisodeSampler extends SeededSampler<NativeEpisodeSampler> implements Iterable<ImageEpisode> {
  /** @internal */
  constructor(nativeSampler: NativeEpisodeSampler) {
    super(wrapNativeObject(nativeSampler), 'EpisodeSampler');
  }

  sample(): ImageEpisode {
    return this.native.get().sample();
  }

  /** An endless stream of episodes. */
  *[Symbol.iterator](): Iterator<ImageEpisode> {
    for (;;) yield this.sample();
  }

}

export class ImageDataset {
  readonly #native: NativeHandle<NativeImageDataset>;
  readonly info: DatasetInfo;
  /** @internal */
  constructor(nativeDataset: NativeImageDataset) {
    const n = wrapNativeObject(nativeDataset);
    this.#native = new NativeHandle(n, 'ImageDataset');
    this.info = n.info();
  }

  get numClasses(): number {
    return this.info.classes;
  }

  /** All images of a class, [n, C, S, S] (Omniglot: the 20 drawings in order). */
  images(classId: number): TensorData {
    return this.#native.get().images(classId);
  }

  episodeSampler(options: EpisodeOptions = {}): EpisodeSampler {
    const seed = checkSeed(options.seed ?? 0);
    return new EpisodeSampler(this.#native.get().episodeSampler(withoutSeed(options), seed));
  }

  continualStream(options: StreamOptions = {}): ContinualStreamData {
    const seed = checkSeed(options.seed ?? 0);
    return this.#native.get().continualStream(withoutSeed(options), seed);
  }

  /** The meta-test stream over `classes` random classes: drawings 1–15 train, 16–20 held out. */
  metaTestStream(classes: number, seed = 0): ContinualStreamData {
    return this.continualStream({ classes, seed });
  }

  /** For choosing step sizes: trains on drawings 1..(15 − heldOut), tests on the rest of 1–15; 16–20 untouched. */
  validationStream(classes: number, heldOut = 5, seed = 0): ContinualStreamData {
    return this.continualStream({ classes, validation: heldOut, seed });
  }

  dispose(): void {
    this.#native.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Loads one Omniglot split, decoding the PNGs once and caching the result on disk. */
export async function loadOmniglot(split: OmniglotSplit, options: OmniglotOptions = {}): Promise<ImageDataset> {
  return new ImageDataset(await native.loadOmniglot(split, options));
}

export async function loadImageFolder(options: ImageFolderOptions): Promise<ImageDataset> {
  return new ImageDataset(await native.loadImageFolder(options));
}

export function omniglotPaths(dir?: string): OmniglotPaths {
  return native.omniglotPaths(dir ?? null);
}

/** Structural check of an Omniglot archive: it opens, holds PNGs, and has 964×20 (background) or 659×20 (evaluation) images. */
export async function verifyOmniglotZip(path: string, split: OmniglotSplit): Promise<ZipSummary> {
  return native.verifyOmniglotZip(path, split);
}
