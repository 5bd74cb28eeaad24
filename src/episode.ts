/** One lifetime for a learner (defined by the binding, where the engine takes it). */
export type { EpisodeData } from './native.js';
