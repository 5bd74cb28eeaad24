//! Omniglot loading, caching, samplers and errors: synthetic sets in the official layout, then the real
//! data where users put it (`$METAPLASTIC_DATA` or the default data folder); skipped, with a note, when absent.
mod tasks_fixtures;
use metaplastic_core::rng::seeded;
use metaplastic_core::tasks::omniglot::verify_zip;
use metaplastic_core::tasks::{
    CacheDir, CacheStatus, EpisodeConfig, LabelMode, OmniglotDataset, OmniglotOptions, OmniglotSplit, Order,
    StreamConfig,
};
use metaplastic_core::Error;
use std::path::{Path, PathBuf};
use tasks_fixtures::*;

const BG: OmniglotSplit = OmniglotSplit::Background;

fn synthetic_opts(dir: &Path, cache: CacheDir) -> OmniglotOptions {
    // Size 105 = no resize, so each image's identity pixels survive exactly.
    OmniglotOptions { dir: Some(dir.to_path_buf()), size: 105, cache, ..Default::default() }
}

fn small_set(name: &str, classes: usize) -> PathBuf {
    let dir = temp_dir(name);
    write_zip(&dir, "images_background", &spec_grid(1, classes, 20), None);
    dir
}

fn err_of<T: std::fmt::Debug>(r: metaplastic_core::Result<T>) -> Error {
    r.expect_err("expected an error")
}

#[test]
fn classes_are_sorted_by_alphabet_then_character_and_zip_equals_folder() {
    let dir = temp_dir("sorted");
    let spec: Vec<(String, String, usize)> =
        [("Zeta", "character02"), ("Zeta", "character01"), ("Alpha", "character10"), ("Alpha", "character02")]
            .iter()
            .map(|(a, c)| (a.to_string(), c.to_string(), 20))
            .collect();
    write_zip(&dir, "images_background", &spec, None);
    let ds = OmniglotDataset::load(BG, &synthetic_opts(&dir, CacheDir::Off)).unwrap();
    let names: Vec<_> = (0..4).map(|c| ds.class_name(c).unwrap().to_string()).collect();
    assert_eq!(names, ["Alpha/character02", "Alpha/character10", "Zeta/character01", "Zeta/character02"]);
    // Markers were 10 + position in `spec`: class 0 is spec[3], etc. Drawings come in file order.
    let ids = identities(&ds.images(0).unwrap());
    assert_eq!(ids, (0..20).map(|d| (13, d as u8)).collect::<Vec<_>>());
    assert_eq!(identities(&ds.images(2).unwrap())[0], (11, 0));
    assert_eq!(ds.images(0).unwrap().size(), [20, 1, 105, 105]);

    let unzipped = temp_dir("sorted-folder");
    write_folder(&unzipped, "images_background", &spec);
    let from_folder = OmniglotDataset::load(BG, &synthetic_opts(&unzipped, CacheDir::Off)).unwrap();
    assert_eq!(from_folder.store().pixels(), ds.store().pixels());
    assert_eq!(from_folder.store().classes(), ds.store().classes());
}

#[test]
fn ink_is_one_by_default_and_polarity_is_an_option() {
    let dir = small_set("polarity", 2);
    let ink = OmniglotDataset::load(BG, &synthetic_opts(&dir, CacheDir::Off)).unwrap();
    let raw =
        OmniglotDataset::load(BG, &OmniglotOptions { invert: false, ..synthetic_opts(&dir, CacheDir::Off) }).unwrap();
    let (a, b) = (vals(&ink.images(0).unwrap()), vals(&raw.images(0).unwrap()));
    assert_eq!(a[105 * 50 + 41], 1.0, "a stroke pixel is 1");
    assert_eq!(a[105 * 100], 0.0, "the white background is 0");
    assert!(a.iter().zip(&b).all(|(x, y)| (x + y - 1.0).abs() < 1e-6));
}

#[test]
fn cached_load_is_identical_and_a_corrupt_cache_is_rebuilt() {
    let dir = small_set("cache", 3);
    let cache = temp_dir("cache-dir");
    let opts = synthetic_opts(&dir, CacheDir::At(cache.clone()));
    let fresh = OmniglotDataset::load(BG, &synthetic_opts(&dir, CacheDir::Off)).unwrap();
    let first = OmniglotDataset::load(BG, &opts).unwrap();
    assert_eq!(first.cache_status, CacheStatus::Built);
    let path = first.cache_path.clone().unwrap();
    assert!(path.starts_with(cache.join("omniglot")));
    let second = OmniglotDataset::load(BG, &opts).unwrap();
    assert_eq!(second.cache_status, CacheStatus::Hit);
    assert_eq!(second.store().pixels(), fresh.store().pixels());
    assert_eq!(second.store().classes(), fresh.store().classes());
    assert_eq!(vals(&second.images(2).unwrap()), vals(&fresh.images(2).unwrap()));
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

    let good = std::fs::read(&path).unwrap();
    let corruptions: Vec<(&str, Vec<u8>)> = vec![
        ("flipped payload byte", {
            let mut b = good.clone();
            let n = b.len();
            b[n - 7] ^= 0x5a;
            b
        }),
        ("flipped header byte", {
            let mut b = good.clone();
            b[30] ^= 0x01;
            b
        }),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("garbage", b"not a cache".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in corruptions {
        std::fs::write(&path, bytes).unwrap();
        let again = OmniglotDataset::load(BG, &opts).unwrap();
        assert!(matches!(again.cache_status, CacheStatus::Rebuilt { .. }), "{what}: {:?}", again.cache_status);
        assert_eq!(again.store().pixels(), fresh.store().pixels(), "{what}");
        assert_eq!(std::fs::read(&path).unwrap(), good, "{what}: the cache file is rewritten");
    }
    // Another size is another cache entry.
    let other = OmniglotDataset::load(BG, &OmniglotOptions { size: 28, ..opts.clone() }).unwrap();
    assert_eq!(other.cache_status, CacheStatus::Built);
    assert_eq!(other.images(0).unwrap().size(), [20, 1, 28, 28]);
    // A changed source is a different key: the old entry is not used.
    write_zip(&dir, "images_background", &spec_grid(1, 4, 20), None);
    let changed = OmniglotDataset::load(BG, &opts).unwrap();
    assert_eq!((changed.cache_status.clone(), changed.num_classes()), (CacheStatus::Built, 4));
}

#[test]
fn bad_data_gives_errors_that_name_the_file() {
    let missing = std::env::temp_dir().join("metaplastic-no-such-dir");
    match err_of(OmniglotDataset::load(BG, &synthetic_opts(&missing, CacheDir::Off))) {
        Error::Io { path, .. } => assert!(path.contains("metaplastic-no-such-dir")),
        e => panic!("{e}"),
    }
    let empty = temp_dir("empty");
    let e = err_of(OmniglotDataset::load(BG, &synthetic_opts(&empty, CacheDir::Off)));
    assert!(matches!(e, Error::Data(_)) && e.to_string().contains("images_background.zip"), "{e}");

    let corrupt = temp_dir("corrupt-zip");
    std::fs::write(corrupt.join("images_background.zip"), b"PK\x03\x04 definitely not a zip").unwrap();
    let e = err_of(OmniglotDataset::load(BG, &synthetic_opts(&corrupt, CacheDir::Off)));
    assert!(matches!(e, Error::Data(_)) && e.to_string().contains("images_background.zip"), "{e}");

    let truncated = temp_dir("truncated-zip");
    let full = std::fs::read(write_zip(&truncated, "images_background", &spec_grid(1, 2, 20), None)).unwrap();
    std::fs::write(truncated.join("images_background.zip"), &full[..full.len() - 100]).unwrap();
    let e = err_of(OmniglotDataset::load(BG, &synthetic_opts(&truncated, CacheDir::Off)));
    assert!(e.to_string().contains("images_background.zip"), "{e}");

    let bad_png = temp_dir("bad-png");
    write_zip(&bad_png, "images_background", &spec_grid(1, 2, 20), Some((23, b"\x89PNG\r\n\x1a\nbroken".to_vec())));
    let e = err_of(OmniglotDataset::load(BG, &synthetic_opts(&bad_png, CacheDir::Off)));
    assert!(matches!(e, Error::Data(_)) && e.to_string().contains("Alphabet_0/character02/0002_04.png"), "{e}");

    let short = temp_dir("short-class");
    let mut spec = spec_grid(1, 3, 20);
    spec[1].2 = 19;
    write_zip(&short, "images_background", &spec, None);
    let e = err_of(OmniglotDataset::load(BG, &synthetic_opts(&short, CacheDir::Off)));
    assert!(e.to_string().contains("Alphabet_0/character02 has 19 drawings"), "{e}");

    let dir = small_set("bad-size", 2);
    match err_of(OmniglotDataset::load(BG, &OmniglotOptions { size: 0, ..synthetic_opts(&dir, CacheDir::Off) })) {
        Error::Config { field, .. } => assert_eq!(field, "size"),
        e => panic!("{e}"),
    }
    // The evaluation split is looked for separately.
    let e = err_of(OmniglotDataset::load(OmniglotSplit::Evaluation, &synthetic_opts(&dir, CacheDir::Off)));
    assert!(e.to_string().contains("images_evaluation.zip"), "{e}");
}

fn config_field(e: Error) -> String {
    match e {
        Error::Config { field, .. } => field,
        e => panic!("expected a config error, got {e}"),
    }
}

#[test]
fn episodes_follow_the_protocol() {
    let dir = small_set("episodes", 8);
    let ds = OmniglotDataset::load(BG, &synthetic_opts(&dir, CacheDir::Off)).unwrap();
    let cfg = EpisodeConfig { ways: 3, shots: 4, ..Default::default() };
    let mut sampler = ds.episode_sampler(cfg.clone()).unwrap();
    let mut rng = seeded(1);
    let mut label_orders = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let (ep, class_ids) = sampler.sample_with_ids(&mut rng).unwrap();
        ep.validate(&[1, 105, 105], true, 3).unwrap();
        assert_eq!(ep.support_x.size(), [12, 1, 1, 105, 105]);
        assert_eq!(ep.query_x.size(), [12, 1, 105, 105]);
        let mut sorted = ep.classes.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2], "labels are a permutation of 0..ways");
        label_orders.insert(ep.classes.clone());
        let sy: Vec<i64> = Vec::try_from(&ep.support_y.view([-1])).unwrap();
        let qy: Vec<i64> = Vec::try_from(&ep.query_y).unwrap();
        let support = identities(&ep.support_x.view([-1, 1, 105, 105]));
        let query = identities(&ep.query_x);
        // Continual: class after class, k images each; labels follow `classes`.
        for (j, &label) in ep.classes.iter().enumerate() {
            for s in 0..4 {
                assert_eq!(sy[j * 4 + s], label);
                assert_eq!(support[j * 4 + s].0 as usize, 10 + class_ids[j]);
                assert_eq!(qy[j * 4 + s], label);
                assert_eq!(query[j * 4 + s].0 as usize, 10 + class_ids[j]);
            }
        }
        // Query images are fresh: no drawing of the support set.
        for q in &query {
            assert!(!support.contains(q));
        }
    }
    assert!(label_orders.len() > 1, "the label permutation changes between episodes");

    // Same seed, same episode.
    let a = ds.episode_sampler(cfg.clone()).unwrap().sample_with_ids(&mut seeded(5)).unwrap();
    let b = ds.episode_sampler(cfg.clone()).unwrap().sample_with_ids(&mut seeded(5)).unwrap();
    assert_eq!(vals(&a.0.support_x), vals(&b.0.support_x));
    assert_eq!((a.0.classes, a.1), (b.0.classes, b.1));
}

#[test]
fn iid_batches_remember_set_and_label_modes() {
    let dir = small_set("iid", 8);
    let ds = OmniglotDataset::load(BG, &synthetic_opts(&dir, CacheDir::Off)).unwrap();
    let mut sampler = ds
        .episode_sampler(EpisodeConfig {
            ways: 4,
            shots: 5,
            order: Order::Iid,
            batch_size: 2,
            query_shots: Some(3),
            ..Default::default()
        })
        .unwrap();
    let (ep, ids) = sampler.sample_with_ids(&mut seeded(2)).unwrap();
    assert_eq!(ep.support_x.size(), [10, 2, 1, 105, 105]);
    assert_eq!(ep.query_x.size(), [12, 1, 105, 105]);
    let sy: Vec<i64> = Vec::try_from(&ep.support_y.view([-1])).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    sy.iter().for_each(|&l| *counts.entry(l).or_insert(0) += 1);
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [5, 5, 5, 5]);
    let continual: Vec<i64> = ep.classes.iter().flat_map(|&l| [l; 5]).collect();
    assert_ne!(sy, continual, "i.i.d. order is shuffled");
    let support = identities(&ep.support_x.view([-1, 1, 105, 105]));
    for (k, &l) in sy.iter().enumerate() {
        let j = ep.classes.iter().position(|&c| c == l).unwrap();
        assert_eq!(support[k].0 as usize, 10 + ids[j], "each image keeps its class's label");
    }

    let mut remember = ds
        .episode_sampler(EpisodeConfig {
            ways: 2,
            shots: 2,
            remember: 6,
            labels: LabelMode::ClassId,
            ..Default::default()
        })
        .unwrap();
    let (ep, ids) = remember.sample_with_ids(&mut seeded(3)).unwrap();
    assert_eq!(ep.classes, ids.iter().map(|&c| c as i64).collect::<Vec<_>>());
    let qy: Vec<i64> = Vec::try_from(&ep.query_y).unwrap();
    assert_eq!(qy.len(), 4 + 6);
    let query = identities(&ep.query_x);
    for k in 4..10 {
        assert!(!ids.contains(&(qy[k] as usize)), "remember images come from other classes");
        assert_eq!(query[k].0 as i64, 10 + qy[k], "and carry their class id");
    }

    let mut spaced =
        ds.episode_sampler(EpisodeConfig { ways: 2, shots: 1, label_space: Some(1000), ..Default::default() }).unwrap();
    let ep = spaced.sample(&mut seeded(4)).unwrap();
    assert!(ep.classes.iter().all(|&l| (0..1000).contains(&l)) && ep.classes[0] != ep.classes[1]);
}
use metaplastic_core::episode::EpisodeSampler;

#[test]
fn impossible_episodes_name_the_parameter() {
    let dir = small_set("impossible", 4);
    let ds = OmniglotDataset::load(BG, &synthetic_opts(&dir, CacheDir::Off)).unwrap();
    let field = |cfg: EpisodeConfig| config_field(err_of(ds.episode_sampler(cfg)));
    assert_eq!(field(EpisodeConfig { ways: 5, ..Default::default() }), "ways");
    assert_eq!(field(EpisodeConfig { ways: 2, shots: 15, ..Default::default() }), "shots");
    assert_eq!(field(EpisodeConfig { ways: 2, shots: 10, query_shots: Some(11), ..Default::default() }), "shots");
    assert_eq!(field(EpisodeConfig { ways: 3, shots: 1, batch_size: 2, ..Default::default() }), "batchSize");
    assert_eq!(field(EpisodeConfig { ways: 0, ..Default::default() }), "ways");
    assert_eq!(field(EpisodeConfig { ways: 2, remember: 3, ..Default::default() }), "remember");
    assert_eq!(
        field(EpisodeConfig { ways: 4, remember: 3, labels: LabelMode::ClassId, ..Default::default() }),
        "remember"
    );
    assert_eq!(field(EpisodeConfig { ways: 3, label_space: Some(2), ..Default::default() }), "labelSpace");
    let mut rng = seeded(0);
    assert_eq!(config_field(err_of(ds.meta_test_stream(&mut rng, 5))), "classes");
    assert_eq!(config_field(err_of(ds.meta_test_stream(&mut rng, 0))), "classes");
    assert_eq!(config_field(err_of(ds.validation_stream(&mut rng, 2, 15))), "validation");
    assert_eq!(config_field(err_of(ds.images(4))), "class");
}

#[test]
fn meta_test_and_validation_streams() {
    let dir = small_set("stream", 6);
    let ds = OmniglotDataset::load(BG, &synthetic_opts(&dir, CacheDir::Off)).unwrap();
    let s = ds.meta_test_stream(&mut seeded(8), 4).unwrap();
    assert_eq!(s.train_x.size(), [60, 1, 105, 105]);
    assert_eq!(s.test_x.size(), [20, 1, 105, 105]);
    let (train, test) = (identities(&s.train_x), identities(&s.test_x));
    let (ty, vy): (Vec<i64>, Vec<i64>) = (Vec::try_from(&s.train_y).unwrap(), Vec::try_from(&s.test_y).unwrap());
    for (j, &c) in s.class_ids.iter().enumerate() {
        for d in 0..15 {
            assert_eq!(train[j * 15 + d], (10 + c as u8, d as u8), "drawings 1-15, in order, class by class");
            assert_eq!(ty[j * 15 + d], j as i64);
        }
        for d in 0..5 {
            assert_eq!(test[j * 5 + d], (10 + c as u8, 15 + d as u8), "drawings 16-20 held out");
            assert_eq!(vy[j * 5 + d], j as i64);
        }
    }
    let v = ds.validation_stream(&mut seeded(8), 4, 5).unwrap();
    assert_eq!(v.class_ids, s.class_ids);
    let (vt, vv) = (identities(&v.train_x), identities(&v.test_x));
    assert_eq!(vt.len(), 40);
    assert_eq!(vv.len(), 20);
    assert!(
        vt.iter().all(|&(_, d)| d < 10) && vv.iter().all(|&(_, d)| (10..15).contains(&d)),
        "validation never touches 16-20"
    );
    let other = ds.meta_test_stream(&mut seeded(9), 6).unwrap();
    let mut all = other.class_ids.clone();
    all.sort();
    assert_eq!(all, (0..6).collect::<Vec<_>>());
    let chosen = metaplastic_core::tasks::sampling::continual_stream(
        ds.store(),
        &mut seeded(0),
        &StreamConfig { class_ids: Some(vec![5, 0]), ..Default::default() },
    )
    .unwrap();
    assert_eq!(identities(&chosen.train_x)[0], (15, 0));
}

// ---- The real data set ----

/// The folder of the full official zips, found the way users point at it, or None (the test is then
/// skipped with a note on stderr: a fresh clone has no Omniglot).
fn real_dir(test: &str) -> Option<PathBuf> {
    let root = metaplastic_core::tasks::omniglot::data_root(None);
    let found = [root.clone(), root.join("omniglot")]
        .into_iter()
        .find(|d| d.join("images_background.zip").is_file() && d.join("images_evaluation.zip").is_file());
    if found.is_none() {
        eprintln!(
            "SKIPPED {test}: the full Omniglot set is not in {} (set METAPLASTIC_DATA to run it)",
            root.display()
        );
    }
    found
}

fn real(dir: &Path, split: OmniglotSplit, size: usize) -> OmniglotDataset {
    // The default cache: the full decode happens once per machine and size.
    OmniglotDataset::load(split, &OmniglotOptions { dir: Some(dir.to_path_buf()), size, ..Default::default() }).unwrap()
}

#[test]
fn real_splits_have_the_standard_classes() {
    let Some(d) = real_dir("real_splits_have_the_standard_classes") else { return };
    let bg = real(&d, OmniglotSplit::Background, 28);
    let ev = real(&d, OmniglotSplit::Evaluation, 28);
    assert_eq!((bg.num_classes(), ev.num_classes()), (964, 659));
    assert!(bg.store().classes().iter().chain(ev.store().classes()).all(|c| c.count == 20));
    assert_eq!(bg.class_name(0), Some("Alphabet_of_the_Magi/character01"));
    assert_eq!(ev.class_name(0), Some("Angelic/character01"));
    assert_eq!(ev.class_name(658), Some("ULOG/character26"));
    let x = bg.images(963).unwrap();
    assert_eq!(x.size(), [20, 1, 28, 28]);
    let v = vals(&x);
    assert!(v.iter().all(|&p| (0.0..=1.0).contains(&p)));
    let mean = v.iter().sum::<f32>() / v.len() as f32;
    assert!(mean > 0.02 && mean < 0.4, "ink = 1 on a 0 background (mean {mean})");
    // Official file names: drawing MM of character NNNN, in drawing order.
    let s = ev.meta_test_stream(&mut seeded(0), 659).unwrap();
    assert_eq!(s.train_x.size(), [659 * 15, 1, 28, 28]);
    assert_eq!(s.test_x.size(), [659 * 5, 1, 28, 28]);
    let mut ids = s.class_ids.clone();
    ids.sort();
    assert_eq!(ids, (0..659).collect::<Vec<_>>());
}

#[test]
fn real_cached_load_equals_a_fresh_decode_at_28_and_84() {
    let Some(d) = real_dir("real_cached_load_equals_a_fresh_decode_at_28_and_84") else { return };
    for size in [28, 84] {
        let cached = real(&d, OmniglotSplit::Evaluation, size);
        let again = real(&d, OmniglotSplit::Evaluation, size);
        assert_eq!(again.cache_status, CacheStatus::Hit);
        let fresh = OmniglotDataset::load(
            OmniglotSplit::Evaluation,
            &OmniglotOptions { dir: Some(d.clone()), size, cache: CacheDir::Off, ..Default::default() },
        )
        .unwrap();
        assert_eq!(fresh.cache_status, CacheStatus::Disabled);
        assert!(
            cached.store().pixels() == fresh.store().pixels(),
            "{size}px: cached pixels differ from a fresh decode"
        );
        assert_eq!(cached.store().classes(), fresh.store().classes());
        assert_eq!(vals(&cached.images(100).unwrap()), vals(&fresh.images(100).unwrap()));
        assert_eq!(cached.images(0).unwrap().size(), [20, 1, size as i64, size as i64]);
    }
}

#[test]
fn real_zips_verify_structurally() {
    let Some(d) = real_dir("real_zips_verify_structurally") else { return };
    let bg = verify_zip(&d.join("images_background.zip"), OmniglotSplit::Background).unwrap();
    assert_eq!((bg.alphabets, bg.classes, bg.images), (30, 964, 19280));
    let ev = verify_zip(&d.join("images_evaluation.zip"), OmniglotSplit::Evaluation).unwrap();
    assert_eq!((ev.alphabets, ev.classes, ev.images), (20, 659, 13180));
    let e = err_of(verify_zip(&d.join("images_evaluation.zip"), OmniglotSplit::Background));
    assert!(e.to_string().contains("659 characters found") && e.to_string().contains("964"), "{e}");
}
