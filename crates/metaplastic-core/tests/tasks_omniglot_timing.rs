//! Load timings of the full Omniglot set (not a test of speed: it only reports). Run with
//! `cargo test --release -p metaplastic-core --test tasks_omniglot_timing -- --ignored --nocapture`.
use metaplastic_core::tasks::{CacheDir, OmniglotDataset, OmniglotOptions, OmniglotSplit};
use std::time::Instant;

fn data_dir() -> std::path::PathBuf {
    // Where users put the data: $METAPLASTIC_DATA or the default data folder.
    metaplastic_core::tasks::omniglot::data_root(None)
}

#[test]
#[ignore]
fn omniglot_load_timings() {
    let cache = std::env::temp_dir().join(format!("metaplastic-timing-{}", std::process::id()));
    for size in [28usize, 84] {
        for split in [OmniglotSplit::Background, OmniglotSplit::Evaluation] {
            let opts = OmniglotOptions {
                dir: Some(data_dir()),
                size,
                cache: CacheDir::At(cache.clone()),
                ..Default::default()
            };
            let t0 = Instant::now();
            let first = OmniglotDataset::load(split, &opts).unwrap();
            let cold = t0.elapsed();
            let t1 = Instant::now();
            let second = OmniglotDataset::load(split, &opts).unwrap();
            let warm = t1.elapsed();
            assert_eq!(first.store().pixels(), second.store().pixels());
            println!(
                "{:?} {size}px: first load {:.2} s ({:?}), cached load {:.3} s ({:?}), {} classes",
                split,
                cold.as_secs_f64(),
                first.cache_status,
                warm.as_secs_f64(),
                second.cache_status,
                first.num_classes()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&cache);
}
