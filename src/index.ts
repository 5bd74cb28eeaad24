export { runtimeInfo, cudaLoadError, setThreads, manualSeed, type RuntimeInfo } from './runtime.js';
export { tensor, roundTrip, numel, type TensorData } from './tensor.js';
export { MetaplasticError, type ErrorCode } from './errors.js';
export * from './tasks/index.js';
