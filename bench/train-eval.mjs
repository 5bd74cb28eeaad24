// The benchmarks' one workflow on the library's Run: meta-train a configuration into a run folder (or
// continue the run there), print a progress line at each checkpoint, then evaluate without figures.
import { Run } from '../dist/index.js';

/**
 * @param {{ config?: object, out: string, steps: number, resume?: boolean, checkpointEvery?: number, eval: object }} job
 * @returns {Promise<{ train: import('../dist/index.js').TrainResult, eval: import('../dist/index.js').RunEvalResult, metrics: object[] }>}
 */
export async function trainAndEvaluate(job) {
  const run = await Run.open(job.out, { config: job.config, resume: job.resume ? true : 'auto' });
  try {
    const every = job.checkpointEvery ?? 250;
    const onProgress = (e) => {
      if (e.step % every === 0 || e.step === e.totalSteps) console.error(`${run.name}: step ${e.step}/${e.totalSteps} meta-loss ${e.metaLoss?.toPrecision(4) ?? 'nan'} (${e.stepsPerSec.toFixed(2)} steps/s)`);
    };
    const train = await run.train({ steps: job.steps, checkpointEvery: every, onProgress });
    const evaluation = await run.evaluate({ seed: 0, ...job.eval }, { plots: false });
    return { train, eval: evaluation, metrics: await run.metrics() };
  } finally {
    run.close();
  }
}
