export type { EpisodeData } from '../episode.js';
export type { Order, StreamOrder } from './common.js';
export { SineTask, sineRunToEpisode, type SineConfig, type SineFn, type SineFunction, type SineRun } from './sine.js';
export {
  ImageDataset,
  EpisodeSampler,
  loadOmniglot,
  loadImageFolder,
  omniglotPaths,
  verifyOmniglotZip,
  type ResizeFilter,
  type CacheDir,
  type CacheOption,
  type CacheStatus,
  type OmniglotSplit,
  type OmniglotOptions,
  type ImageFolderOptions,
  type EpisodeOptions,
  type StreamOptions,
  type ContinualStreamData,
  type DatasetInfo,
  type ImageEpisode,
  type OmniglotPaths,
  type ZipSummary,
} from './images.js';
export { customTask, validateEpisode, taskRng, type CustomTask, type EpisodeSpec, type TaskRng } from './custom.js';
