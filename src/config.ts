/**
 * Configuration types: generated from the engine's Rust definitions (src/engine-types.ts), which read,
 * fill in the defaults of, and validate every field, naming the offending one in their errors.
 */
export type {
  Activation,
  Backward,
  Dtype,
  ExperimentConfig,
  FeedbackConfig,
  FeedbackKind,
  Granularity,
  LayerSpec,
  LearnerConfig,
  LearningRates,
  MetaConfig,
  MetaGradient,
  NonFinitePolicy,
  OutputReset,
  PlasticInit,
  PlasticityConfig,
  RateParameterization,
  RuleConfig,
  Signal,
  StepSizes,
  StrengthConfig,
  TaskConfig,
  TaskKind,
  UpdateNormalization,
} from './engine-types.js';

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

/** The first leaf of `requested` that differs from `actual` ("learner.seed: 1 ≠ 0"), or null when it is a subset. */
export function firstDifference(requested: unknown, actual: unknown, path = ''): string | null {
  if (Array.isArray(requested)) {
    if (!Array.isArray(actual) || actual.length !== requested.length) return `${path}: ${JSON.stringify(requested)} ≠ ${JSON.stringify(actual)}`;
    for (let i = 0; i < requested.length; i++) {
      const d = firstDifference(requested[i], actual[i], `${path}[${i}]`);
      if (d) return d;
    }
    return null;
  }
  if (requested !== null && typeof requested === 'object') {
    if (actual === null || typeof actual !== 'object' || Array.isArray(actual)) return `${path || '(root)'}: ${JSON.stringify(requested)} ≠ ${JSON.stringify(actual)}`;
    for (const [k, v] of Object.entries(requested)) {
      if (v === undefined) continue;
      const d = firstDifference(v, (actual as Record<string, unknown>)[k], path ? `${path}.${k}` : k);
      if (d) return d;
    }
    return null;
  }
  return JSON.stringify(requested) === JSON.stringify(actual) ? null : `${path}: ${JSON.stringify(requested)} ≠ ${JSON.stringify(actual)}`;
}
