/** Incremental sine regression (OML/FLP protocol): a fixed 400-function pool and fresh evaluation functions. */
import { native, wrapNativeObject, type NativeSineTask, type SineRun } from '../native.js';
import type { EpisodeData } from '../episode.js';
import type { Order, SineConfig, SineFn } from '../engine-types.js';
import { checkSeed, SeededSampler } from './common.js';

/** Sizes and ranges of the sine task (generated from the engine's definition; defaults are the paper's). */
export type { SineConfig } from '../engine-types.js';
/** y = A·sin(x + φ). */
export type { SineFn } from '../engine-types.js';
/** @deprecated The engine's name for it: `SineFn`. */
export type SineFunction = SineFn;
/** One lifetime of the sine task (defined by the binding). */
export type { SineRun } from '../native.js';

/** Flattens a run's per-function query sets into an episode (query [F·Q, ...]). */
export function sineRunToEpisode(run: SineRun): EpisodeData {
  const [f, q, w] = run.queryX.shape;
  return {
    supportX: run.supportX,
    supportY: run.supportY,
    queryX: { data: run.queryX.data, shape: [f * q, w] },
    queryY: { data: run.queryY.data, shape: [f * q, 1] },
  };
}

export class SineTask extends SeededSampler<NativeSineTask> {
  /** `seed` fixes the function pool and the stream of episodes. */
  constructor(config: SineConfig = {}, seed = 0) {
    super(wrapNativeObject(native.createSineTask(config, checkSeed(seed))), 'SineTask');
  }

  /** The configuration with every default filled in. */
  get config(): Required<SineConfig> {
    return this.native.get().config();
  }

  /** The fixed meta-training functions, by id. */
  pool(): SineFn[] {
    return this.native.get().pool();
  }

  /** A meta-training episode over distinct pool functions. */
  sample(order: Order = 'continual'): EpisodeData {
    return sineRunToEpisode(this.sampleRun(order));
  }

  /** Like `sample`, keeping per-function query sets, step slots and pool ids. */
  sampleRun(order: Order = 'continual'): SineRun {
    return this.native.get().sampleTrain(order);
  }

  /** An evaluation lifetime over fresh functions (never from the pool). */
  evalRun(order: Order = 'continual'): SineRun {
    return this.native.get().evalRun(order);
  }

}
