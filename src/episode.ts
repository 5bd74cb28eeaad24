import type { TensorData } from './tensor.js';

/**
 * One lifetime for a learner: the inner-loop stream and the query set that scores it.
 * supportX [T, B, ...input]; supportY [T, B, out] (regression) or [T, B] integer labels (classification);
 * queryX [Q, ...input]; queryY [Q, out] or [Q]. Labels travel as whole numbers in a Float32Array.
 */
export interface EpisodeData {
  supportX: TensorData;
  supportY: TensorData;
  queryX: TensorData;
  queryY: TensorData;
  /** Class labels used by this episode (classification). */
  classes?: number[];
}
