// Seconds per evaluation run of the continual Omniglot meta-test at each class count (issue 24's
// "evaluation at 600 classes in reasonable time"). The cost does not depend on what the learner learned,
// so a fresh learner of the preset is timed; OML's includes its step-size sweep on the validation split.
//
//   METAPLASTIC_DATA=DIR OMP_NUM_THREADS=1 node bench/omniglot-eval-time.mjs [PRESET...] [--runs R]
//                                                                             [--classes 10,50,100,200,600]
//
// PRESETs default to flp-omniglot-long and oml-omniglot-long. Prints one JSON line per preset and class
// count, with the load average beside it (the figure is only meaningful on a quiet machine).
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { Experiment, preset, setThreads } from '../dist/index.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    runs: { type: 'string', default: '2' },
    classes: { type: 'string', default: '10,50,100,200,600' },
  },
});
const names = positionals.length > 0 ? positionals : ['flp-omniglot-long', 'oml-omniglot-long'];
const runs = Number(values.runs);
const classCounts = values.classes.split(',').map(Number);
if (!process.env.OMP_NUM_THREADS) setThreads(1);

for (const name of names) {
  const exp = await Experiment.create(preset(name));
  try {
    for (const classes of classCounts) {
      const load = loadavg()[0];
      const start = process.hrtime.bigint();
      const file = await exp.evaluate({ runs, classes: [classes], seed: 0 });
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const point = file.result.points[0];
      console.log(JSON.stringify({ preset: name, classes, runs, secondsPerRun: +(seconds / runs).toFixed(2), heldOut: +point.heldOut.mean.toFixed(3), load: +load.toFixed(2) }));
    }
  } finally {
    exp.dispose();
  }
}
