/**
 * The one import point of the native addon. Everything else imports `native` from here; every call goes
 * through a proxy that turns the addon's "[CODE] message" errors into MetaplasticError with `code`.
 */
import { createRequire } from 'node:module';
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { constants } from 'node:os';
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
import { ensureLibtorch, findLibtorch, libtorchLibraries, SetupError, TORCH_VERSION } from '../scripts/libtorch.mjs';

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

/** The napi-rs platform names of the prebuilt addons (npm/<name>/, package metaplastic-<name>). */
const PLATFORMS: Record<string, string> = {
  'linux-x64': 'linux-x64-gnu',
  'linux-arm64': 'linux-arm64-gnu',
  'darwin-arm64': 'darwin-arm64',
};

function platformName(): string {
  const name = PLATFORMS[`${process.platform}-${process.arch}`];
  const musl = process.platform === 'linux' && !(process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header?.glibcVersionRuntime;
  if (!name || musl) {
    throw new MetaplasticError('E_NATIVE_MISSING', `no prebuilt metaplastic addon for ${process.platform}-${process.arch}${musl ? ' (musl)' : ''}; supported: ${Object.values(PLATFORMS).join(', ')}. Build one from a clone of the repository with \`npm run setup\``);
  }
  return name;
}

/**
 * The addon to load: METAPLASTIC_ADDON, else one built in this checkout (`npm run setup` puts it in
 * native/), else the platform package installed with metaplastic as an optional dependency.
 */
function addonPath(): string {
  if (process.env.METAPLASTIC_ADDON) return process.env.METAPLASTIC_ADDON;
  const name = platformName();
  // src/native.ts and dist/native.js both sit one level below the package root.
  const local = join(dirname(fileURLToPath(import.meta.url)), '..', 'native', `metaplastic.${name}.node`);
  if (existsSync(local)) return local;
  try {
    return createRequire(import.meta.url).resolve(`metaplastic-${name}`);
  } catch {
    throw new MetaplasticError(
      'E_NATIVE_MISSING',
      `the native addon for ${name} is missing: neither ${local} nor the package metaplastic-${name} exists.\n` +
        `  Fix: reinstall metaplastic without --omit=optional / --no-optional (npm installs metaplastic-${name} with it), or in a clone of the repository run \`npm run setup\``,
    );
  }
}

function libtorchError(e: unknown): unknown {
  if (!(e instanceof SetupError)) return e;
  return new MetaplasticError(e.code === 'E_SETUP' ? 'E_LIBTORCH_MISSING' : e.code, e.message, { cause: e });
}

/** The libtorch to run on (LIBTORCH or the cache); fetched into the cache on first use. */
function libtorchDir(): string {
  try {
    const found = findLibtorch();
    if (found) return found.dir;
    process.stderr.write(
      `metaplastic: libtorch ${TORCH_VERSION} is not installed yet, so it is being fetched now (first use, once).\n` +
        `  To do this ahead of time run \`npx metaplastic setup\`; to use a libtorch you have, set LIBTORCH to it.\n`,
    );
    return ensureLibtorch({ log: (line) => process.stderr.write(line + '\n') });
  } catch (e) {
    throw libtorchError(e);
  }
}

/**
 * Opens libtorch's libraries with global symbol visibility so that the addon, which carries no path to
 * libtorch, finds them by name when it loads. process.dlopen reports that a plain library "did not
 * self-register" (it is no addon) but leaves it loaded.
 */
function openLibtorch(dir: string): void {
  const flags = constants.dlopen.RTLD_NOW | constants.dlopen.RTLD_GLOBAL;
  for (const name of libtorchLibraries()) {
    const path = join(dir, 'lib', name);
    try {
      process.dlopen({ exports: {} }, path, flags);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (/did not self-register/.test(message)) continue;
      throw new MetaplasticError('E_LIBTORCH_PARTIAL', `${path} did not load: ${message}\n  Fix: reinstall libtorch (\`npx metaplastic setup --force\`), or point LIBTORCH at a complete libtorch ${TORCH_VERSION}`);
    }
  }
  // The engine loads libtorch's optional CUDA library from the same folder.
  process.env.METAPLASTIC_LIBTORCH_LIB = join(dir, 'lib');
}

/** Where the addon and libtorch were loaded from (after the first native call). */
export interface NativeLocation {
  addon: string;
  libtorch: string;
}

let location: NativeLocation | undefined;

export function nativeLocation(): NativeLocation {
  binding();
  return location!;
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

/**
 * Checks that the addon file is a whole shared library before the loader maps it: a truncated library
 * kills the process with SIGBUS when the loader reads past its end, which no exception can catch. ELF: the
 * program and section header tables, and every segment, lie inside the file. Mach-O: the magic number.
 * Returns why the file cannot be the addon, or null.
 */
export function addonFileProblem(path: string): string | null {
  const size = statSync(path).size;
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(64);
    const got = readSync(fd, head, 0, 64, 0);
    const magic = head.readUInt32BE(0);
    if ([0xfeedfacf, 0xcffaedfe, 0xcafebabe].includes(magic)) return null; // Mach-O (64-bit, either order, universal)
    if (magic !== 0x7f454c46) return `it is not a shared library (it starts with bytes ${head.subarray(0, 4).toString('hex')})`;
    if (got < 64 || head[4] !== 2 || head[5] !== 1) return 'it is not a 64-bit little-endian ELF library (or its header is cut short)';
    const phoff = Number(head.readBigUInt64LE(0x20));
    const shoff = Number(head.readBigUInt64LE(0x28));
    const [phentsize, phnum, shentsize, shnum] = [head.readUInt16LE(0x36), head.readUInt16LE(0x38), head.readUInt16LE(0x3a), head.readUInt16LE(0x3c)];
    if (phoff + phnum * phentsize > size || shoff + shnum * shentsize > size) return `it is cut short (${size} bytes; its headers need more)`;
    const table = Buffer.alloc(phnum * phentsize);
    readSync(fd, table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) {
      const offset = Number(table.readBigUInt64LE(i * phentsize + 0x08));
      const fileSize = Number(table.readBigUInt64LE(i * phentsize + 0x20));
      if (offset + fileSize > size) return `it is cut short (${size} bytes; segment ${i} ends at byte ${offset + fileSize})`;
    }
    return null;
  } finally {
    closeSync(fd);
  }
}

function invalidAddon(addon: string, why: string): MetaplasticError {
  return new MetaplasticError('E_NATIVE_INVALID', `the native addon ${addon} cannot be loaded: ${why}.\n  Fix: rebuild it with \`npm run setup\` in a clone of the repository, or reinstall metaplastic`);
}

function load(): NativeBinding {
  const addon = addonPath();
  if (!existsSync(addon)) {
    throw new MetaplasticError('E_NATIVE_MISSING', `native addon not found at ${addon}; run \`npm run setup\` to build it`);
  }
  const problem = addonFileProblem(addon);
  if (problem) throw invalidAddon(addon, problem);
  const libtorch = libtorchDir();
  openLibtorch(libtorch);
  let raw;
  try {
    raw = createRequire(import.meta.url)(addon);
  } catch (e) {
    throw invalidAddon(addon, e instanceof Error ? e.message.split('\n')[0] : String(e));
  }
  location = { addon, libtorch };
  return new Proxy(raw, { get: (target, key) => wrap(target[key]) }) as NativeBinding;
}

let loaded: NativeBinding | undefined;

function binding(): NativeBinding {
  loaded ??= load();
  return loaded;
}

/**
 * The addon, loaded on first use (so that `metaplastic setup` and `--help` need no libtorch), with every
 * function's errors turned into MetaplasticError.
 */
export const native: NativeBinding = new Proxy({} as NativeBinding, { get: (_target, key) => (binding() as any)[key] });

/** Wraps the methods of a native class instance so that its errors carry codes too. */
export function wrapNativeObject<T extends object>(obj: T): T {
  return new Proxy(obj, { get: (target: any, key) => {
    const v = target[key];
    return typeof v === 'function' ? wrap(v.bind(target)) : v;
  } }) as T;
}
