//! Generic image folders (root/<class>/<image>.{png,jpg}): RGB or grayscale, resized, same samplers.
mod tasks_fixtures;
use metaplastic_core::episode::EpisodeSampler;
use metaplastic_core::rng::seeded;
use metaplastic_core::tasks::{
    CacheDir, CacheStatus, Channels, EpisodeConfig, ImageFolderDataset, ImageFolderOptions, StreamConfig,
};
use metaplastic_core::Error;
use std::path::Path;
use tasks_fixtures::*;

/// Class `name` with `n` solid-colour images of colour (r, g, b + i); `jpg` writes JPEGs.
fn class(root: &Path, name: &str, n: usize, rgb: [u8; 3], jpg: bool) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_pixel(40, 30, image::Rgb([rgb[0], rgb[1], rgb[2].saturating_add(i as u8)]));
        let p = dir.join(format!("img{i:02}.{}", if jpg { "jpg" } else { "png" }));
        img.save(&p).unwrap();
    }
}

fn opts(root: &Path, channels: Channels, cache: CacheDir) -> ImageFolderOptions {
    ImageFolderOptions { root: root.to_path_buf(), size: 16, channels, cache, ..Default::default() }
}

#[test]
fn rgb_and_gray_folders_load_in_sorted_order() {
    let root = temp_dir("folder-rgb");
    class(&root, "b_red", 6, [200, 0, 0], false);
    class(&root, "a_green", 7, [0, 200, 0], true);
    std::fs::write(root.join("a_green").join("notes.txt"), "not an image").unwrap();
    let ds = ImageFolderDataset::load(&opts(&root, Channels::Rgb, CacheDir::Off)).unwrap();
    let names: Vec<_> = ds.store().classes().iter().map(|c| (c.name.clone(), c.count)).collect();
    assert_eq!(names, [("a_green".to_string(), 7), ("b_red".to_string(), 6)]);
    let x = ds.images(1).unwrap();
    assert_eq!(x.size(), [6, 3, 16, 16]);
    let v = vals(&x);
    let plane = 256;
    assert!((v[0] - 200.0 / 255.0).abs() < 1e-6 && v[plane] == 0.0 && v[2 * plane] == 0.0, "channels-first RGB");
    let g = vals(&ds.images(0).unwrap());
    assert!(g[plane] > 0.7 && g[0] < 0.05, "JPEG green decoded");
    let gray = ImageFolderDataset::load(&opts(&root, Channels::Gray, CacheDir::Off)).unwrap();
    assert_eq!(gray.images(0).unwrap().size(), [7, 1, 16, 16]);

    let mut sampler = ds.episode_sampler(EpisodeConfig { ways: 2, shots: 3, ..Default::default() }).unwrap();
    let ep = sampler.sample(&mut seeded(0)).unwrap();
    ep.validate(&[3, 16, 16], true, 2).unwrap();
    let s = ds
        .continual_stream(
            &mut seeded(0),
            &StreamConfig { classes: 2, train_per_class: 4, test_per_class: 2, ..Default::default() },
        )
        .unwrap();
    assert_eq!((s.train_x.size(), s.test_x.size()), (vec![8, 3, 16, 16], vec![4, 3, 16, 16]));
}

#[test]
fn folder_cache_round_trip() {
    let root = temp_dir("folder-cache");
    class(&root, "x", 4, [10, 20, 30], false);
    class(&root, "y", 4, [40, 50, 60], true);
    let cache = temp_dir("folder-cache-dir");
    let o = opts(&root, Channels::Rgb, CacheDir::At(cache));
    let first = ImageFolderDataset::load(&o).unwrap();
    let second = ImageFolderDataset::load(&o).unwrap();
    assert_eq!((first.cache_status.clone(), second.cache_status.clone()), (CacheStatus::Built, CacheStatus::Hit));
    assert_eq!(first.store().pixels(), second.store().pixels());
    let fresh = ImageFolderDataset::load(&opts(&root, Channels::Rgb, CacheDir::Off)).unwrap();
    assert_eq!(fresh.store().pixels(), second.store().pixels());
}

#[test]
fn folder_errors_name_the_path_or_parameter() {
    let missing = std::env::temp_dir().join("metaplastic-missing-folder");
    assert!(
        matches!(ImageFolderDataset::load(&opts(&missing, Channels::Rgb, CacheDir::Off)), Err(Error::Io { path, .. }) if path.contains("metaplastic-missing-folder"))
    );
    let root = temp_dir("folder-errors");
    let e = ImageFolderDataset::load(&opts(&root, Channels::Rgb, CacheDir::Off)).unwrap_err();
    assert!(e.to_string().contains("no class folders"), "{e}");
    class(&root, "ok", 3, [1, 2, 3], false);
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let e = ImageFolderDataset::load(&opts(&root, Channels::Rgb, CacheDir::Off)).unwrap_err();
    assert!(e.to_string().contains("empty") && e.to_string().contains("no .png/.jpg"), "{e}");
    std::fs::remove_dir(root.join("empty")).unwrap();
    std::fs::write(root.join("ok").join("broken.jpg"), b"\xff\xd8\xff not really").unwrap();
    let e = ImageFolderDataset::load(&opts(&root, Channels::Rgb, CacheDir::Off)).unwrap_err();
    assert!(matches!(e, Error::Data(_)) && e.to_string().contains("broken.jpg"), "{e}");
    std::fs::remove_file(root.join("ok").join("broken.jpg")).unwrap();
    class(&root, "short", 1, [9, 9, 9], false);
    let ds = ImageFolderDataset::load(&opts(&root, Channels::Rgb, CacheDir::Off)).unwrap();
    let e = ds.episode_sampler(EpisodeConfig { ways: 2, shots: 1, ..Default::default() }).unwrap_err();
    assert!(matches!(&e, Error::Config { field, message } if field == "shots" && message.contains("short")), "{e}");
}
