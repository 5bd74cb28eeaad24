/**
 * The one import point of the native addon. Everything else imports `native` from here; every call goes
 * through a proxy that turns the addon's "[CODE] message" errors into MetaplasticError with `code`.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromNative, MetaplasticError } from './errors.js';
import type {
  Analysis,
  AnalysisOptions,
  DatasetInfo,
  EpisodeConfig,
  EvalOptions,
  EvalRaw,
  ExperimentConfig,
  GroupSettings,
  ImageFolderOptions,
  LearnedStats,
  OmniglotOptions,
  ParamInfo,
  RuntimeInfo,
  SineConfig,
  SineFn,
  StepRecord,
  StreamConfig,
  ZipSummary,
} from './engine-types.js';

export interface NativeTensor {
  data: Float32Array;
  shape: number[];
}

/** An episode as the engine takes it (labels as whole numbers in Float32Array). */
export interface NativeEpisode {
  supportX: NativeTensor;
  supportY: NativeTensor;
  queryX: NativeTensor;
  queryY: NativeTensor;
  classes?: number[];
}

/** The engine's experiment object: configurations, options, records and results are plain objects of the generated types. */
export interface NativeExperiment {
  config(): ExperimentConfig;
  /** [step, skipped, exploded] */
  progress(): [number, number, number];
  train(steps: number): Promise<StepRecord[]>;
  joinGroup(settings: GroupSettings): Promise<void>;
  requestStop(): void;
  save(dir: string): Promise<void>;
  evaluate(options: EvalOptions): Promise<{ options: EvalOptions; raw: EvalRaw }>;
  analyze(options: AnalysisOptions): Promise<Analysis>;
  learnedStats(): LearnedStats[];
  learnedArrays(): { name: string; tensor: NativeTensor }[];
  exportLearned(path: string): Promise<void>;
  metaStep(episodes: NativeEpisode[]): Promise<StepRecord>;
  runEpisodes(episodes: NativeEpisode[]): Promise<{ queryLoss: number[]; queryAccuracy?: number[]; predictions: NativeTensor }>;
  params(): ParamInfo[];
  param(name: string): NativeTensor;
  setParam(name: string, value: NativeTensor): void;
}

/** A sampler whose generator state can be saved (JSON) and restored. */
export interface NativeSeeded {
  rngState(): string;
  setRngState(state: string): void;
}

/** One lifetime of the sine task (see SineRun in src/tasks/sine.ts). */
export interface NativeSineRun {
  supportX: NativeTensor;
  supportY: NativeTensor;
  queryX: NativeTensor;
  queryY: NativeTensor;
  stepFunction: number[];
  functions: SineFn[];
  poolIds?: number[];
}

export interface NativeSineTask extends NativeSeeded {
  config(): Required<SineConfig>;
  pool(): SineFn[];
  sampleTrain(order: string): NativeSineRun;
  evalRun(order: string): NativeSineRun;
}

export interface NativeEpisodeSampler extends NativeSeeded {
  sample(): NativeEpisode & { classes: number[]; sourceIds: number[] };
}

export interface NativeStream {
  classIds: number[];
  trainX: NativeTensor;
  trainY: NativeTensor;
  testX: NativeTensor;
  testY: NativeTensor;
}

export interface NativeImageDataset {
  info(): DatasetInfo;
  images(classId: number): NativeTensor;
  episodeSampler(config: EpisodeConfig, seed: number): NativeEpisodeSampler;
  continualStream(config: StreamConfig, seed: number): NativeStream;
}

/** The raw binding's surface. */
export interface NativeBinding {
  runtimeInfo(): RuntimeInfo;
  cudaLoadError(): string | null;
  setThreads(n: number): void;
  manualSeed(seed: number): void;
  roundTrip(t: NativeTensor): NativeTensor;
  panicForTesting(message: string): void;
  /** The JSON Schema the TypeScript types in engine-types.ts are generated from. */
  engineSchema(): object;
  // Experiments (src/experiment.ts): native objects are wrapped there with wrapNativeObject.
  createExperiment(config: ExperimentConfig): Promise<NativeExperiment>;
  loadExperiment(dir: string): Promise<NativeExperiment>;
  checkExperimentConfig(config: ExperimentConfig): ParamInfo[];
  readCheckpointManifest(dir: string): object;
  // Tasks (src/tasks): native objects are wrapped there with wrapNativeObject.
  createSineTask(config: SineConfig, seed: number): NativeSineTask;
  loadOmniglot(split: string, options: OmniglotOptions): Promise<NativeImageDataset>;
  loadImageFolder(options: ImageFolderOptions): Promise<NativeImageDataset>;
  verifyOmniglotZip(path: string, split: string): Promise<ZipSummary>;
  omniglotPaths(dir: string | null): { dataRoot: string; downloadDir: string; cacheRoot: string };
}

function addonPath(): string {
  if (process.env.METAPLASTIC_ADDON) return process.env.METAPLASTIC_ADDON;
  // src/native.ts and dist/native.js both sit one level below the package root.
  return join(dirname(fileURLToPath(import.meta.url)), '..', 'native', 'metaplastic.node');
}

function wrap(value: any): any {
  if (typeof value === 'function') {
    const wrapped = function (this: unknown, ...args: unknown[]) {
      try {
        const out = value.apply(this, args);
        return out instanceof Promise ? out.catch((e) => Promise.reject(fromNative(e))) : out;
      } catch (e) {
        throw fromNative(e);
      }
    };
    return wrapped;
  }
  return value;
}

function load(): NativeBinding {
  const path = addonPath();
  if (!existsSync(path)) {
    throw new MetaplasticError('E_NATIVE_MISSING', `native addon not found at ${path}; run \`npm run setup\` to build it`);
  }
  const raw = createRequire(import.meta.url)(path);
  return new Proxy(raw, { get: (target, key) => wrap(target[key]) }) as NativeBinding;
}

export const native: NativeBinding = load();

/** Wraps the methods of a native class instance so that its errors carry codes too. */
export function wrapNativeObject<T extends object>(obj: T): T {
  return new Proxy(obj, { get: (target: any, key) => {
    const v = target[key];
    return typeof v === 'function' ? wrap(v.bind(target)) : v;
  } }) as T;
}
