/**
 * The paper's comparisons as studies that `reproduce` runs end to end: which learners (presets), how far
 * each is meta-trained, where it is evaluated on the way, with what protocol, and the published figures the
 * results are drawn beside. Published figures are references to compare with, never expected values.
 */
import { mergeConfig, type ExperimentConfig } from './config.js';
import type { EvalOptions } from './experiment.js';
import type { PublishedPoint } from './plots.js';
import { preset } from './presets.js';
import { OMNIGLOT_PUBLISHED, SINE_PUBLISHED } from './published.js';

export type StudyName = 'sine' | 'omniglot';

export interface StudyLearner {
  /** Folder and legend name, e.g. "flp-s0". */
  label: string;
  config: ExperimentConfig;
}

export interface Study {
  name: StudyName;
  title: string;
  learners: StudyLearner[];
  /** Meta-steps at which each learner is evaluated; the last is its meta-training budget. */
  milestones: number[];
  eval: EvalOptions;
  published: readonly PublishedPoint[];
}

export interface StudyOptions {
  /** Meta-steps per learner (the last milestone). */
  steps?: number;
  seeds?: number[];
  /** Evaluation runs at each milestone. */
  runs?: number;
  /** The full-size setting: the paper's 9-layer sine networks, or Omniglot at 84×84 (a GPU's work). */
  full?: boolean;
  /** Only these learners, e.g. ['flp'] to train one side on a small machine (default: both). */
  learners?: readonly LearnerFamily[];
  /** Evaluate every this many meta-steps (and at the budget) instead of the study's evenly spaced milestones. */
  every?: number;
}

export const LEARNER_FAMILIES = ['flp', 'oml'] as const;
export type LearnerFamily = (typeof LEARNER_FAMILIES)[number];

/** `count` milestones evenly spaced up to `steps` (300, 600, 900 for 900 and 3). */
export function milestones(steps: number, count: number): number[] {
  const out = new Set<number>();
  for (let i = 1; i <= count; i++) out.add(Math.max(1, Math.round((steps * i) / count)));
  return [...out];
}

/** Every `every` meta-steps up to `steps`, and `steps` itself (500, 1000, 1500, 1750 for 1750 and 500). */
export function everyMilestones(steps: number, every: number): number[] {
  const out: number[] = [];
  for (let m = every; m < steps; m += every) out.push(m);
  return [...out, steps];
}

function studyMilestones(options: StudyOptions, steps: number, count: number): number[] {
  return options.every === undefined ? milestones(steps, count) : everyMilestones(steps, options.every);
}

/** Each named preset once per seed, labelled by its family ("flp-s0"), keeping the families asked for. */
function perSeed(names: readonly string[], options: StudyOptions, defaultSeeds: number[]): StudyLearner[] {
  const families: readonly string[] = options.learners ?? LEARNER_FAMILIES;
  const kept = names.map((name) => ({ name, family: name.split('-')[0] })).filter(({ family }) => families.includes(family));
  return kept.flatMap(({ name, family }) =>
    (options.seeds ?? defaultSeeds).map((seed) => ({ label: `${family}-s${seed}`, config: mergeConfig(preset(name), { seed, learner: { seed } }) })),
  );
}

/**
 * Incremental sine regression on the paper's protocol (10 functions × 40 minibatches of 32, 400 inner
 * steps), continual MSE against meta-steps. By default the demo-size networks (hidden 64-64-64, meta-batch
 * 4; the `-demo-full` presets), which a 2-core machine trains in minutes per hundred steps; `full`: the paper's
 * networks.
 */
export function sineStudy(options: StudyOptions = {}): Study {
  const full = options.full ?? false;
  const steps = options.steps ?? (full ? 3000 : 900);
  const names = full ? ['flp-sine', 'oml-sine'] : ['flp-sine-demo-full', 'oml-sine-demo-full'];
  return {
    name: 'sine',
    title: `Incremental sine regression, the paper's protocol (${full ? 'paper-size networks' : 'demo-size networks'})`,
    learners: perSeed(names, options, [0, 1]),
    milestones: studyMilestones(options, steps, full ? 6 : 3),
    eval: { runs: options.runs ?? 20, seed: 0 },
    published: SINE_PUBLISHED,
  };
}

/** Candidate meta-test rate bounds for FLP on long streams; OML's step sizes have their own defaults. */
export const OMNIGLOT_RATE_BOUNDS = [2, 1, 0.5, 0.25, 0.1] as const;

/**
 * Continual Omniglot at the CPU budget (`flp-omniglot-long`, `oml-omniglot-long`: 28×28 input, a frozen
 * 4-conv front, plastic tail), held-out and training-stream accuracy at 10 to 600 classes; `full`: the
 * 84×84 presets.
 */
export function omniglotStudy(options: StudyOptions = {}): Study {
  const full = options.full ?? false;
  const names = full ? ['flp-omniglot', 'oml-omniglot'] : ['flp-omniglot-long', 'oml-omniglot-long'];
  // The CPU budget: 5,000 of FLP's 20-way steps take under two hours on one core; the 84×84 setting, the published 20,000.
  const steps = options.steps ?? (full ? 20_000 : 5_000);
  return {
    name: 'omniglot',
    title: `Continual Omniglot, ${full ? '84×84 (the reference setting)' : '28×28 at the CPU budget'}`,
    learners: perSeed(names, options, [0]),
    milestones: studyMilestones(options, steps, 4),
    // FLP's rate bound is chosen on validation, as OML's step size is (docs/results/omniglot-at-scale.md).
    eval: { runs: options.runs ?? 20, seed: 0, classes: [10, 50, 100, 200, 600], rateBounds: [...OMNIGLOT_RATE_BOUNDS] },
    published: OMNIGLOT_PUBLISHED,
  };
}

export function study(name: StudyName, options: StudyOptions = {}): Study {
  return name === 'sine' ? sineStudy(options) : omniglotStudy(options);
}
