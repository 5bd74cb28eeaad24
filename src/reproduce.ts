/**
 * Runs a study (src/studies.ts) end to end and resumably: each learner is meta-trained in its own run folder
 * up to each milestone and evaluated there (eval-<step>.json); then the figures and a table beside the
 * published figures are written. Running it again continues where it stopped: finished evaluations are
 * read back, a run resumes from its checkpoint.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { MetaplasticError } from './errors.js';
import type { ProgressEvent } from './experiment.js';
import { metaStepSpec, omniglotAccuracySpec, metaLossSpec, type MetaStepSeries } from './plots.js';
import { renderFigure } from './plot-render.js';
import { readEvalFile, writeFileAtomic, type EvalFile, type OmniglotEvalResult, type SineEvalResult } from './results.js';
import { Run, readRunMetrics } from './run.js';
import type { Study, StudyLearner } from './studies.js';

export interface ReproduceOptions {
  /** The study's folder: one run folder per learner, the figures and summary.md. */
  out: string;
  signal?: AbortSignal;
  onProgress?: (label: string, e: ProgressEvent) => void;
  log?: (line: string) => void;
  threads?: number;
  /** Train and evaluate nothing: the table and figures from the evaluations the folders already hold. */
  summarizeOnly?: boolean;
}

export interface LearnerOutcome {
  label: string;
  /** The evaluation at each milestone reached, in order. */
  evals: { step: number; file: EvalFile }[];
  skipped: number;
  exploded: number;
}

export interface StudyOutcome {
  study: string;
  learners: LearnerOutcome[];
  figures: string[];
  summary: string;
}

export const SUMMARY_FILE = 'summary.md';

export async function reproduce(study: Study, options: ReproduceOptions): Promise<StudyOutcome> {
  const log = options.log ?? (() => {});
  await mkdir(options.out, { recursive: true }).catch((e) => {
    throw new MetaplasticError('E_IO', `cannot create ${options.out}: ${(e as Error).message}`, { cause: e });
  });
  const learners: LearnerOutcome[] = [];
  for (const learner of study.learners) {
    const dir = join(options.out, learner.label);
    learners.push(options.summarizeOnly ? await evaluatedSoFar(learner, dir, study.milestones) : await trainAndEvaluate(learner, dir, study, options, log));
  }
  const figures = await studyFigures(study, learners, options.out);
  const summary = studySummary(study, learners);
  await writeFileAtomic(join(options.out, SUMMARY_FILE), summary);
  return { study: study.name, learners, figures, summary };
}

/** Where a learner's evaluation at a milestone is kept: written by training, read back by both paths. */
const evalPath = (dir: string, step: number) => join(dir, `eval-${step}.json`);

/** Meta-trains one learner up to each milestone in turn, evaluating it there (finished evaluations are read back). */
async function trainAndEvaluate(learner: StudyLearner, dir: string, study: Study, options: ReproduceOptions, log: (line: string) => void): Promise<LearnerOutcome> {
  const run = await Run.open(dir, { config: learner.config });
  try {
    const outcome: LearnerOutcome = { label: learner.label, evals: [], skipped: 0, exploded: 0 };
    for (const step of study.milestones) {
      const path = evalPath(dir, step);
      if (existsSync(path)) {
        outcome.evals.push({ step, file: await readEvalFile(path) });
        continue;
      }
      if (run.experiment.step > step) continue; // trained past it by an earlier, longer study: not evaluated there
      log(`${learner.label}: meta-training to step ${step} in ${dir}`);
      const onProgress = options.onProgress && ((e: ProgressEvent) => options.onProgress!(learner.label, e));
      await run.train({ steps: step, signal: options.signal, threads: options.threads, onProgress });
      log(`${learner.label}: evaluating at step ${step}`);
      const { file, seconds } = await run.evaluate(study.eval, { out: path, plots: false });
      log(`${learner.label}: evaluated in ${seconds.toFixed(0)} s`);
      outcome.evals.push({ step, file });
    }
    outcome.skipped = run.experiment.skipped;
    outcome.exploded = run.experiment.exploded;
    return outcome;
  } finally {
    run.close();
  }
}

/** What a learner's folder already holds: its evaluations at the milestones, its skipped and exploded steps. Opens no run. */
async function evaluatedSoFar(learner: StudyLearner, dir: string, milestones: readonly number[]): Promise<LearnerOutcome> {
  const evals = [];
  for (const step of milestones) {
    const path = evalPath(dir, step);
    if (existsSync(path)) evals.push({ step, file: await readEvalFile(path) });
  }
  const last = (await readRunMetrics(dir)).at(-1);
  return { label: learner.label, evals, skipped: last?.skippedTotal ?? 0, exploded: last?.explodedTotal ?? 0 };
}

/** The quantity each study follows across milestones: sine continual MSE, Omniglot held-out accuracy at the fewest classes. */
function headline(file: EvalFile) {
  const r = file.result;
  return r.protocol === 'sine' ? r.continual.finalMse : r.points[0].heldOut;
}

async function studyFigures(study: Study, learners: LearnerOutcome[], out: string): Promise<string[]> {
  const names = learners.map((l) => l.label);
  const figures = [];
  const series: MetaStepSeries[] = learners.map((l) => ({ name: l.label, points: l.evals.map((e) => ({ step: e.step, stat: headline(e.file) })) }));
  if (study.name === 'sine') {
    const spec = metaStepSpec(series, { title: study.title, quantity: 'continual MSE (all functions, after the stream)', logY: true, published: study.published, learners: names });
    figures.push(await renderFigure(spec, out, 'continual-mse-vs-meta-steps'));
  } else {
    const last = learners.filter((l) => l.evals.length > 0).map((l) => ({ name: l.label, result: l.evals.at(-1)!.file.result as OmniglotEvalResult }));
    if (last.length > 0) figures.push(await renderFigure(omniglotAccuracySpec(last, { published: study.published, learners: names }), out, 'accuracy-vs-classes'));
    const classes = study.eval.classes?.[0];
    const spec = metaStepSpec(series, { title: study.title, quantity: `held-out accuracy at ${classes} classes`, learners: names });
    figures.push(await renderFigure(spec, out, 'accuracy-vs-meta-steps'));
  }
  const losses = await Promise.all(learners.map(async (l) => ({ name: l.label, records: await readRunMetrics(join(out, l.label)) })));
  figures.push(await renderFigure(metaLossSpec(losses.filter((s) => s.records.length > 0), { smoothing: 0.9, learners: names }), out, 'meta-loss'));
  return figures.flatMap((f) => [f.svg, f.png]);
}

const fmt = (s: { mean: number; ci95: [number, number] }, digits: number) => `${s.mean.toFixed(digits)} ± ${((s.ci95[1] - s.ci95[0]) / 2).toFixed(digits)}`;

/** A markdown table per study: this library's figures (mean ± 95% CI half-width) beside the published ones. */
export function studySummary(study: Study, learners: LearnerOutcome[]): string {
  const lines = [`# ${study.title}`, ''];
  if (study.name === 'sine') {
    lines.push(`Continual MSE over all functions after the stream; mean ± 95% CI half-width over ${study.eval.runs} evaluation runs.`, '');
    lines.push(`| learner | ${study.milestones.map((m) => `${m} steps`).join(' | ')} | skipped / exploded |`, `|---|${study.milestones.map(() => '---:').join('|')}|---:|`);
    for (const l of learners) {
      const cells = study.milestones.map((m) => {
        const e = l.evals.find((x) => x.step === m);
        return e ? fmt((e.file.result as SineEvalResult).continual.finalMse, 3) : '–';
      });
      lines.push(`| ${l.label} | ${cells.join(' | ')} | ${l.skipped} / ${l.exploded} |`);
    }
  } else {
    const classes = study.eval.classes ?? [];
    lines.push(`Held-out accuracy after the stream at each class count, at the last milestone; mean ± 95% CI half-width over ${study.eval.runs} runs.`, '');
    lines.push(`| learner | step | ${classes.join(' | ')} | skipped / exploded |`, `|---|---:|${classes.map(() => '---:').join('|')}|---:|`);
    for (const l of learners) {
      const last = l.evals.at(-1);
      const cells = classes.map((c) => {
        const p = last && (last.file.result as OmniglotEvalResult).points.find((x) => x.classes === c);
        return p ? fmt(p.heldOut, 3) : '–';
      });
      lines.push(`| ${l.label} | ${last?.step ?? '–'} | ${cells.join(' | ')} | ${l.skipped} / ${l.exploded} |`);
    }
    const sources = [...new Set(study.published.map((p) => p.source))];
    for (const source of sources) {
      const cells = classes.map((c) => study.published.find((p) => p.source === source && p.classes === c)?.value.toFixed(2) ?? '–');
      lines.push(`| *${source}* | | ${cells.join(' | ')} | |`);
    }
  }
  if (study.name === 'sine') for (const p of study.published) lines.push('', `Published: ${p.source}: ${p.value}.`);
  return lines.join('\n') + '\n';
}
