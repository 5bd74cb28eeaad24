//! Benchmark tasks: incremental sine regression, Omniglot, generic image folders.
