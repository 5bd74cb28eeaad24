/**
 * Image datasets (Omniglot, generic image folders) and their samplers. Images are float32 in [0, 1],
 * shape [C, S, S]; Omniglot is 1 channel with ink = 1 and background = 0 unless `invert: false`.
 */
import { native, wrapNativeObject } from '../native.js';
import { configError } from '../errors.js';
import type { EpisodeData } from '../episode.js';
import type { TensorData } from '../tensor.js';
import { checkSeed, defined, NativeHandle, SeededSampler, type StreamOrder } from './common.js';

/** Resampling filter; `triangle` (default) is antialiased bilinear, like PIL's BILINEAR. */
export type ResizeFilter = 'nearest' | 'triangle' | 'catmullRom' | 'gaussian' | 'lanczos3';
/** true (default): `${METAPLASTIC_CACHE:-${XDG_CACHE_HOME:-~/.cache}/metaplastic}`; false: no cache; a string: that directory. */
export type CacheOption = boolean | string;
export type OmniglotSplit = 'background' | 'evaluation';

export interface OmniglotOptions {
  /** Data directory holding images_{background,evaluation}.zip (or the unzipped folders), directly or in omniglot/. Default: $METAPLASTIC_DATA. */
  dir?: string;
  /** Images are resized to size × size (default 28; the FLP code uses 84). */
  size?: number;
  filter?: ResizeFilter;
  cache?: CacheOption;
  /** Ink = 1 on a 0 background (default true); false keeps the PNGs' polarity. */
  invert?: boolean;
}

export interface ImageFolderOptions {
  /** root/<class>/<image>.{png,jpg,jpeg}; classes in sorted folder order. */
  root: string;
  size?: number;
  channels?: 'gray' | 'rgb';
  filter?: ResizeFilter;
  cache?: CacheOption;
  invert?: boolean;
}

export interface EpisodeOptions {
  /** Classes per episode (N, default 5). */
  ways?: number;
  /** Support images per class (k, default 5), one per inner step unless batchSize says otherwise. */
  shots?: number;
  order?: StreamOrder;
  batchSize?: number;
  /** Fresh query images per episode class (default: shots). */
  queryShots?: number;
  /** OML's remember set: images of other classes added to the query (needs labels: 'classId'). */
  remember?: number;
  /** 'permuted' (default): a random label permutation per episode; 'classId': the dataset's class ids. */
  labels?: 'permuted' | 'classId';
  /** Permuted labels are distinct values in [0, labelSpace) (default: ways). */
  labelSpace?: number;
  seed?: number;
}

export interface StreamOptions {
  /** Number of classes (random unless classIds is given). */
  classes?: number;
  /** Training images per class (Omniglot: drawings 1–15). */
  trainPerClass?: number;
  /** Held-out images per class (Omniglot: drawings 16–20). */
  testPerClass?: number;
  /** Validation split: train on the first trainPerClass − v images, test on the last v of them. */
  validation?: number;
  classIds?: number[];
  seed?: number;
}

/** trainX [C·train, ...image], one image per step, class by class; labels are stream positions 0..C−1. */
export interface ContinualStreamData {
  classIds: number[];
  trainX: TensorData;
  trainY: TensorData;
  testX: TensorData;
  testY: TensorData;
}

export type CacheStatus =
  | { status: 'disabled' | 'hit' | 'built' }
  | { status: 'rebuilt' | 'unwritable'; reason: string };

export interface DatasetInfo {
  classes: number;
  images: number;
  imageShape: number[];
  classNames: string[];
  classSizes: number[];
  source: string;
  sourceChecksum: string;
  cache: CacheStatus;
  cachePath: string | null;
  size: number;
  filter: ResizeFilter;
  invert: boolean;
  split?: OmniglotSplit;
}

/** An episode plus the dataset class ids behind its labels. */
export interface ImageEpisode extends EpisodeData {
  classIds: number[];
}

function cacheOption(cache: CacheOption | undefined): unknown {
  if (cache === undefined || cache === true) return 'default';
  if (cache === false) return 'off';
  if (typeof cache === 'string' && cache.length > 0) return { at: cache };
  throw configError('cache', 'expected true, false or a directory');
}

function withoutSeed<T extends { seed?: number }>(o: T): Omit<T, 'seed'> {
  const { seed: _seed, ...rest } = o;
  return defined(rest);
}

export class EpisodeSampler extends SeededSampler implements Iterable<ImageEpisode> {
  /** @internal */
  constructor(nativeSampler: any) {
    super(wrapNativeObject(nativeSampler), 'EpisodeSampler');
  }

  sample(): ImageEpisode {
    const e = this.native.get().sample();
    return { supportX: e.supportX, supportY: e.supportY, queryX: e.queryX, queryY: e.queryY, classes: e.classes, classIds: e.sourceIds };
  }

  /** An endless stream of episodes. */
  *[Symbol.iterator](): Iterator<ImageEpisode> {
    for (;;) yield this.sample();
  }

}

export class ImageDataset {
  readonly #native: NativeHandle<any>;
  readonly info: DatasetInfo;
  /** @internal */
  constructor(nativeDataset: any) {
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
  const opts = defined({ ...options, cache: cacheOption(options.cache) });
  return new ImageDataset(await native.loadOmniglot(split, opts));
}

export async function loadImageFolder(options: ImageFolderOptions): Promise<ImageDataset> {
  if (!options || typeof options.root !== 'string' || options.root === '') throw configError('root', 'the image folder root directory is required');
  const opts = defined({ ...options, cache: cacheOption(options.cache) });
  return new ImageDataset(await native.loadImageFolder(opts));
}

export interface OmniglotPaths {
  /** Where the loader looks (and its omniglot/ subfolder). */
  dataRoot: string;
  /** Where `metaplastic data omniglot --download` puts the zips. */
  downloadDir: string;
  cacheRoot: string;
}

export function omniglotPaths(dir?: string): OmniglotPaths {
  return native.omniglotPaths(dir ?? null);
}

export interface ZipSummary {
  alphabets: number;
  classes: number;
  images: number;
}

/** Structural check of an Omniglot archive: it opens, holds PNGs, and has 964×20 (background) or 659×20 (evaluation) images. */
export async function verifyOmniglotZip(path: string, split: OmniglotSplit): Promise<ZipSummary> {
  return native.verifyOmniglotZip(path, split);
}
