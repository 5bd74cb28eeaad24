import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { demoConfigs, preset, FULL_PROTOCOL_LR, PAPER_SIZE_LR } from '../src/presets.js';
import { reproduce, SUMMARY_FILE } from '../src/reproduce.js';
import { everyMilestones, milestones, omniglotStudy, sineStudy, type Study } from '../src/studies.js';
import { setThreads } from '../src/runtime.js';
import { MetaplasticError } from '../src/errors.js';

setThreads(1);

const tiny = (): Study => {
  const { flp, oml } = demoConfigs({ scale: 'tiny' });
  return {
    ...sineStudy(),
    learners: [
      { label: 'flp-s0', config: flp },
      { label: 'oml-s0', config: oml },
    ],
    milestones: [2, 4],
    eval: { runs: 3, seed: 0 },
  };
};

test('milestones are evenly spaced up to the budget', (t) => {
  t.deepEqual(milestones(900, 3), [300, 600, 900]);
  t.deepEqual(milestones(2, 4), [1, 2]);
  t.deepEqual(sineStudy().milestones, [300, 600, 900]);
  t.deepEqual(sineStudy({ full: true, steps: 600 }).milestones, [100, 200, 300, 400, 500, 600]);
  t.deepEqual(sineStudy({ seeds: [3] }).learners.map((l) => [l.label, l.config.seed, l.config.learner.seed]), [['flp-s3', 3, 3], ['oml-s3', 3, 3]]);
  t.deepEqual(omniglotStudy().learners.map((l) => l.config.name), ['flp-omniglot-long', 'oml-omniglot-long']);
  t.deepEqual(omniglotStudy().eval.rateBounds, [2, 1, 0.5, 0.25, 0.1], "FLP's rate bound is chosen on validation");
  t.deepEqual(omniglotStudy().milestones, [1250, 2500, 3750, 5000]);
  t.is(omniglotStudy({ full: true }).milestones.at(-1), 20_000);
});

test('a study can keep one side and evaluate at a fixed spacing', (t) => {
  t.deepEqual(everyMilestones(1750, 500), [500, 1000, 1500, 1750]);
  t.deepEqual(everyMilestones(1000, 500), [500, 1000]);
  t.deepEqual(everyMilestones(300, 500), [300]);
  const flpOnly = sineStudy({ full: true, steps: 2000, every: 500, learners: ['flp'], seeds: [0] });
  t.deepEqual(flpOnly.milestones, [500, 1000, 1500, 2000]);
  t.deepEqual(flpOnly.learners.map((l) => [l.label, l.config.name]), [['flp-s0', 'flp-sine']]);
  t.deepEqual(omniglotStudy({ learners: ['oml'] }).learners.map((l) => l.label), ['oml-s0']);
  t.deepEqual(sineStudy({ learners: ['oml', 'flp'] }).learners.map((l) => l.label), ['flp-s0', 'flp-s1', 'oml-s0', 'oml-s1'], "the study's order, whatever the order asked");
});

test("the paper-size FLP is the recipe's learner at the paper-size meta learning rates", (t) => {
  const paper = preset('flp-sine');
  t.deepEqual(paper.learner.meta?.lr, { ...preset('flp-sine-oja').learner.meta?.lr, ...PAPER_SIZE_LR });
  t.is(paper.learner.layers.length, 9);
  t.is(paper.metaBatch, 1);
});

test("the sine study's learners are the demo's on the paper's 400-step lifetimes, at the long-lifetime meta rates", (t) => {
  const study = sineStudy();
  t.deepEqual(study.learners.map((l) => l.config.name), ['flp-sine-demo-full', 'flp-sine-demo-full', 'oml-sine-demo-full', 'oml-sine-demo-full']);
  for (const [kind, demo] of [['flp', 'flp-sine-demo'], ['oml', 'oml-sine-demo']] as const) {
    const full = preset(`${kind}-sine-demo-full`);
    const base = preset(demo);
    t.is(full.task.sine?.batchesPerFunction, 40);
    t.is(base.task.sine?.batchesPerFunction, 5);
    t.deepEqual(full.learner.layers, base.learner.layers);
    t.is(full.metaBatch, base.metaBatch);
    t.deepEqual(full.learner.meta?.lr, { ...base.learner.meta?.lr, ...FULL_PROTOCOL_LR[kind] });
    // Everything but the lifetime's length and the meta learning rates is the demo's learner.
    const strip = (c: typeof full) => ({ ...c, name: '', task: { ...c.task, sine: { ...c.task.sine, batchesPerFunction: 0 } }, learner: { ...c.learner, meta: { ...c.learner.meta, lr: undefined } } });
    t.deepEqual(strip(full), strip(base));
  }
  t.deepEqual(sineStudy({ full: true }).learners.map((l) => l.config.name), ['flp-sine', 'flp-sine', 'oml-sine', 'oml-sine']);
});

test('a study runs end to end: each learner evaluated at each milestone, figures and the table written; run again, it continues', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'mp-reproduce-'));
  const lines: string[] = [];
  const first = await reproduce(tiny(), { out, log: (l) => lines.push(l) });
  t.deepEqual(first.learners.map((l) => [l.label, l.evals.map((e) => [e.step, e.file.checkpointStep])]), [['flp-s0', [[2, 2], [4, 4]]], ['oml-s0', [[2, 2], [4, 4]]]]);
  for (const f of first.figures) t.true(statSync(f).size > 0, f);
  t.true(first.figures.some((f) => f.endsWith('continual-mse-vs-meta-steps.svg')));
  const summary = readFileSync(join(out, SUMMARY_FILE), 'utf8');
  t.regex(summary, /\| flp-s0 \| \d\.\d{3} ± \d\.\d{3} \| \d\.\d{3} ± \d\.\d{3} \| 0 \/ 0 \|/);
  t.regex(summary, /Published: OML paper/);
  t.true(existsSync(join(out, 'oml-s0', 'eval-4.json')));

  // Again: nothing is trained or evaluated twice, the results are the same.
  const again: string[] = [];
  const second = await reproduce(tiny(), { out, log: (l) => again.push(l) });
  t.deepEqual(again, []);
  t.deepEqual(second.learners, first.learners);
  // A longer budget continues each run from its checkpoint.
  const longer = await reproduce({ ...tiny(), milestones: [2, 4, 6] }, { out, log: () => {} });
  t.deepEqual(longer.learners[0].evals.map((e) => e.step), [2, 4, 6]);
  // Summarizing trains nothing: a milestone never evaluated stays a gap, and a missing learner has no points.
  const missing = { label: 'flp-s9', config: tiny().learners[0].config };
  const summarized = await reproduce({ ...tiny(), learners: [...tiny().learners, missing], milestones: [2, 6, 8] }, { out, summarizeOnly: true });
  t.deepEqual(summarized.learners.map((l) => [l.label, l.evals.map((e) => e.step)]), [['flp-s0', [2, 6]], ['oml-s0', [2, 6]], ['flp-s9', []]]);
  t.deepEqual(summarized.learners[0].evals, longer.learners[0].evals.filter((e) => e.step !== 4));
  t.regex(summarized.summary, /\| flp-s0 \| \d\.\d{3} ± \d\.\d{3} \| \d\.\d{3} ± \d\.\d{3} \| – \| 0 \/ 0 \|/);
  t.false(existsSync(join(out, 'flp-s9')), 'no run folder is created');
  t.is(JSON.parse(readFileSync(join(out, 'flp-s0', 'checkpoint.json'), 'utf8')).step, 6, 'the run is not trained to 8');
});

test('a stopped study keeps what it finished and says so', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'mp-reproduce-stop-'));
  const controller = new AbortController();
  const err = await t.throwsAsync(
    reproduce({ ...tiny(), milestones: [2, 100_000] }, { out, signal: controller.signal, onProgress: (_, e) => e.step >= 3 && controller.abort() }),
    { instanceOf: MetaplasticError },
  );
  t.is(err.code, 'E_CANCELLED');
  t.true(existsSync(join(out, 'flp-s0', 'eval-2.json')));
  t.true(existsSync(join(out, 'flp-s0', 'checkpoint.json')));
});
