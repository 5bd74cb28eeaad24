/**
 * Configuration types: plain data mirroring the engine's schema (crates/metaplastic-core/src/config.rs,
 * experiment.rs). The engine validates every field and names the offending one in its errors; omitted
 * optional fields take the documented defaults.
 */
import type { EpisodeOptions, ImageFolderOptions, OmniglotOptions } from './tasks/images.js';
import type { SineConfig } from './tasks/sine.js';

export type LayerSpec =
  | { type: 'linear'; units: number }
  | { type: 'conv'; channels: number; kernel: number; stride?: number; padding?: number };

export type RuleConfig =
  | { type: 'oja' }
  | { type: 'hebb' }
  | {
      type: 'sgd';
      /** Inner-loop step size (OML: 0.003 regression, 0.03 Omniglot). */
      lr: number;
      /** 'fixed' (default), or meta-learned 'perParameter' / 'perLayer' step sizes initialised to lr. */
      stepSizes?: 'fixed' | 'perParameter' | 'perLayer';
      /** Also adapt the plastic layers' biases (default true, as OML's reference code). */
      biases?: boolean;
    };

export interface FeedbackConfig {
  /** 'learned' (FLP, default), 'random' (fixed), 'none' (hidden layers use their own activity), 'derivative' (true gradient signal). */
  type?: 'learned' | 'random' | 'none' | 'derivative';
  /** e = y − ŷ ('error', regression default), y ('target', classification default), onehot − softmax ('crossEntropy'). */
  signal?: 'error' | 'target' | 'crossEntropy';
  /** Feedback layers from output space to each plastic layer (default 1). */
  layers?: number;
  activation?: 'relu' | 'linear';
  /** Blend ã = s·f + (1 − s)·a; s starts at `init` (0.5) and is meta-learned unless `learned: false`. */
  strength?: { init?: number; learned?: boolean };
  /** Stop meta-gradients through ŷ into the feedback signal (default false, as the reference code). */
  detachSignal?: boolean;
  /** Classification: clamp the output's post-synaptic activity to onehot(y) (default true). */
  clampOutput?: boolean;
  /** The output layer's feedback weights start at the identity (default false: Kaiming normal like the others). */
  outputIdentity?: boolean;
}

export interface PlasticityConfig {
  granularity?: 'synapse' | 'neuron' | 'layer' | 'global';
  /** Initial plasticity rate (reference: 0). */
  init?: number;
  /** Multiplier on hidden-layer updates (Omniglot setting: 100). */
  hiddenMultiplier?: number;
  /** Stored θ → rate P: 'linear' P = θ (reference, default) or 'log' P = exp(θ), θ starting at ln(init) (init > 0). */
  parameterization?: 'linear' | 'log';
  /** A meta-learned log-scale σ_l per plastic layer: P = exp(σ_l)·g(θ), σ_l starting at ln(init) and θ where
   * g(θ) = 1 (with 'linear', signed rates whose common scale moves multiplicatively). Default false. */
  layerScale?: boolean;
  /** Update normalisation: 'none' (summed over the minibatch, reference), 'batch' (÷ batch size) or
   * 'presynaptic' (÷ (1 + Σ_b ‖a_b‖²), normalised-LMS-like, per episode) or 'bounded' (row i ÷ (1 + Σ_b ã_bi²),
   * stable by construction for 0 < P < 1). */
  normalize?: 'none' | 'batch' | 'presynaptic' | 'bounded';
  /** Oja only: plain Hebbian term on the first inner step, Oja after (the reference's `--hebb`). */
  hebbFirstStep?: boolean;
}

export type MetaGradient = { type: 'secondOrder' } | { type: 'firstOrder' } | { type: 'truncated'; steps: number };

export interface MetaConfig {
  gradient?: MetaGradient;
  /**
   * How the meta-gradient is computed: 'auto' (default) uses the hand-derived reverse pass wherever it covers
   * the rule (Oja, Hebb, SGD), autograd elsewhere; 'autograd' is the reference it is tested against;
   * 'adjoint' is an error where the reverse pass does not apply.
   */
  backward?: 'auto' | 'autograd' | 'adjoint';
  /** Reverse pass: keep the fast weights every this many inner steps (default ⌈√T⌉; 1 keeps every step). */
  checkpointEvery?: number | null;
  /** Adam learning rate per group; 0 freezes a group. */
  lr?: { forward?: number; feedback?: number; plasticity?: number; strength?: number };
  betas?: [number, number];
  eps?: number;
  /** Clip the global meta-gradient norm. */
  clipNorm?: number | null;
  /** Non-finite loss or gradient: 'skip' the step and count it (default), or fail with 'error'. */
  nonFinite?: 'skip' | 'error';
  /** With 'skip': fail after this many skipped steps in a row (default 100); nothing changes while every step is skipped. */
  maxConsecutiveSkips?: number;
  /** A finite meta-loss above this multiple of the median of the last 100 applied steps' meta-losses is an
   * exploded lifetime: skipped and counted as `exploded` (default 1000; null turns the check off). */
  explodeFactor?: number | null;
  /** Re-create Adam (moments and bias correction) before every N-th meta-step, as the reference's
   * relaunch every 1,000 steps does (default null: never). */
  resetAdamEvery?: number | null;
  /** Linear warm-up of every learning rate over the first N applied steps of each Adam (default 0). */
  warmup?: number;
}

export interface LearnerConfig {
  /** Shape of one example: [11] for sine, [1, 28, 28] or [1, 84, 84] for Omniglot. */
  inputShape: number[];
  /** Layers in order; the last is the linear output layer. Conv layers come first. */
  layers: LayerSpec[];
  /** Front layers frozen in the inner loop (still meta-learned). Every conv layer must be in it. */
  rln?: number;
  task: 'regression' | 'classification';
  rule: RuleConfig;
  feedback?: FeedbackConfig;
  plasticity?: PlasticityConfig;
  /** 'metaLearned' (default) or 'reinit': plastic weights drawn afresh each episode. */
  plasticInit?: 'metaLearned' | 'reinit';
  /** Zero output rows before each episode: 'none' (default), 'episodeClasses' or 'all'. */
  outputReset?: 'none' | 'episodeClasses' | 'all';
  meta?: MetaConfig;
  dtype?: 'float32' | 'float64';
  /** 'auto' (default: CUDA when available), 'cpu', 'cuda', 'cuda:N'. */
  device?: string;
  /** Seed of the initial weights. */
  seed?: number;
}

export type TaskConfig =
  /** Episodes come from your code (`metaStep`, `runEpisodes`); nothing to sample or evaluate. */
  | { type: 'custom' }
  | { type: 'sine'; sine?: SineConfig; order?: 'continual' | 'iid' }
  | { type: 'omniglot'; data?: OmniglotOptions; episode?: Omit<EpisodeOptions, 'seed'> }
  | { type: 'imageFolder'; data: ImageFolderOptions; test?: ImageFolderOptions; episode?: Omit<EpisodeOptions, 'seed'> };

export interface ExperimentConfig {
  name?: string;
  learner: LearnerConfig;
  task: TaskConfig;
  /** Episodes per meta-step (default 1, as the reference code). */
  metaBatch?: number;
  /** Seed of the task streams. */
  seed?: number;
}

/** Deep-merges plain objects (arrays and other values are replaced), for field-by-field overrides. */
export function mergeConfig<T>(base: T, override: unknown): T {
  if (override === undefined) return structuredClone(base);
  if (!isPlainObject(base) || !isPlainObject(override)) return structuredClone(override as T);
  const out: Record<string, unknown> = structuredClone(base) as Record<string, unknown>;
  for (const [k, v] of Object.entries(override)) {
    out[k] = k in out ? mergeConfig(out[k], v) : structuredClone(v);
  }
  return out as T;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Overrides for a deep partial of a configuration. */
export type DeepPartial<T> = T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;
