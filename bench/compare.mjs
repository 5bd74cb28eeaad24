#!/usr/bin/env node
// Compares two results files of the harness (bench/run.mjs --json FILE), scenario by scenario:
//
//   node bench/compare.mjs BEFORE.json AFTER.json
//
// Times only compare on one machine in one mood; the engine/ref and of-matmul columns are measured
// against the same run's PyTorch reference and matmul rate, so they also compare across machines.
import { formatComparison, readReport } from './report.mjs';

function main(args) {
  if (args.length !== 2) {
    console.error('usage: node bench/compare.mjs BEFORE.json AFTER.json');
    return 2;
  }
  try {
    const [before, after] = args.map(readReport);
    console.log(formatComparison(before, after));
    return 0;
  } catch (e) {
    console.error(`compare: ${e.message}`);
    return 1;
  }
}

process.exitCode = main(process.argv.slice(2));
