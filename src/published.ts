/**
 * Published figures that metaplastic's results are drawn beside: references to compare with, never expected
 * values. The sources are described in docs/results/omniglot-at-scale.md and docs/results/sine-full-protocol-baseline.md.
 */
import type { PublishedPoint } from './plots.js';

function points(source: string, ...pairs: [number, number][]): PublishedPoint[] {
  return pairs.map(([classes, value]) => ({ source, classes, split: 'heldOut', value }));
}

/** Held-out accuracy after the long continual Omniglot stream (classes never seen in meta-training). */
export const OMNIGLOT_PUBLISHED: readonly PublishedPoint[] = [
  ...points('OML, public replication (20k meta-steps)', [10, 0.91], [50, 0.82], [100, 0.76], [200, 0.69], [600, 0.55]),
  ...points('OML paper (figure)', [10, 0.93], [50, 0.82], [100, 0.77], [200, 0.6]),
  ...points('ANML, public replications', [10, 0.89], [50, 0.885], [100, 0.85], [200, 0.8], [600, 0.655]),
];

/** Continual MSE on the paper's sine protocol: OML's own 9-layer network after full meta-training, and the i.i.d. oracle (read from OML's figure). */
export const SINE_PUBLISHED: readonly PublishedPoint[] = [
  { source: 'OML paper: OML (figure)', value: 0.35 },
  { source: 'OML paper: i.i.d. oracle (figure)', value: 0.07 },
];
