// How one meta-step of the CPU-budget Omniglot learners divides between the frozen conv front and the plastic
// tail (issue 24). The same episode shape is timed twice: through the whole learner (28×28 images), and through
// a learner that is only its tail, fed 2,048-feature inputs; the front's share is the difference. Synthetic
// episodes (the cost does not depend on the pixels), one engine thread.
//
//   OMP_NUM_THREADS=1 node bench/omniglot-step-split.mjs [PRESET...] [--ways W] [--shots K] [--steps N]
//
// PRESETs default to flp-omniglot-long and oml-omniglot-long; --ways defaults to each preset's own. Prints one
// JSON line per preset, with the load average beside it (meaningful only on a quiet machine).
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { Experiment, preset, setThreads, taskRng } from '../dist/index.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { ways: { type: 'string' }, shots: { type: 'string', default: '5' }, steps: { type: 'string', default: '5' } },
});
const names = positionals.length > 0 ? positionals : ['flp-omniglot-long', 'oml-omniglot-long'];
const steps = Number(values.steps);
setThreads(1);

const rng = taskRng(1);
/** Uniform noise in [0, 1), reproducible. */
const noise = (n) => Float32Array.from({ length: n }, () => rng.next());

/** A continual episode: `ways` classes × `shots` single-image steps, `shots` query items per class. */
function episode(input, ways, shots) {
  const per = input.reduce((a, b) => a * b, 1);
  const classes = Array.from({ length: ways }, (_, c) => c);
  const labels = Float32Array.from(classes.flatMap((c) => Array(shots).fill(c)));
  const n = ways * shots;
  return {
    supportX: { data: noise(n * per), shape: [n, 1, ...input] },
    supportY: { data: labels, shape: [n, 1] },
    queryX: { data: noise(n * per), shape: [n, ...input] },
    queryY: { data: labels.slice(), shape: [n] },
    classes,
  };
}

/** Seconds per meta-step, the median of `steps` after one untimed step, and the learner's parameter shapes. */
async function timeSteps(config, ep) {
  const exp = await Experiment.create(config);
  try {
    await exp.metaStep([ep]);
    const times = [];
    for (let i = 0; i < steps; i++) {
      const start = process.hrtime.bigint();
      await exp.metaStep([ep]);
      times.push(Number(process.hrtime.bigint() - start) / 1e9);
    }
    return { seconds: times.sort((a, b) => a - b)[Math.floor(times.length / 2)], params: exp.params() };
  } finally {
    exp.dispose();
  }
}

for (const name of names) {
  const full = preset(name);
  const ways = Number(values.ways ?? full.task.episode.ways);
  const shots = Number(values.shots);
  const convs = full.learner.layers.filter((l) => l.type === 'conv').length;
  const tailLayers = full.learner.layers.slice(convs);
  const load = loadavg()[0];
  const whole = await timeSteps({ ...full, task: { type: 'custom' } }, episode(full.learner.inputShape, ways, shots));
  // The tail's input is the front's output: the first tail layer's fan-in, as the engine built it.
  const features = whole.params.find((p) => p.name === `forward.${convs}.weight`).shape[1];
  const tailConfig = { ...full, task: { type: 'custom' }, learner: { ...full.learner, inputShape: [features], layers: tailLayers, rln: full.learner.rln - convs } };
  const tail = await timeSteps(tailConfig, episode([features], ways, shots));
  const row = { preset: name, ways, shots, secondsPerStep: +whole.seconds.toFixed(3), tailSeconds: +tail.seconds.toFixed(3), frontShare: +((whole.seconds - tail.seconds) / whole.seconds).toFixed(2), load: +load.toFixed(2) };
  console.log(JSON.stringify(row));
}
