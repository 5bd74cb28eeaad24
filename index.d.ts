// Public typings of the package: generated from src/ by `tsc` into dist/ and re-exported here.
export * from './dist/index.js';
