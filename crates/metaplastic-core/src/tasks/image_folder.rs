//! A generic labelled image folder, `root/<class>/<image>.{png,jpg,jpeg}` (e.g. Mini-ImageNet or one's
//! own images): classes in sorted folder-name order (class id = index), images in file-name order,
//! decoded to grayscale or RGB and resized to size×size (aspect ratio not kept). Same samplers as Omniglot.
use super::cache::{self, CacheDir, CacheStatus};
use super::decode::{decode_all, ResizeFilter};
use super::images::{Channels, ClassEntry, ImageStore};
use super::sampling::{continual_stream, ContinualStream, EpisodeConfig, ImageEpisodeSampler, StreamConfig};
use crate::rng::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::Tensor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageFolderOptions {
    /// root/<class>/<image>.{png,jpg,jpeg}; classes in sorted folder order.
    pub root: PathBuf,
    /// Images are resized to size×size.
    #[serde(default = "default_size")]
    pub size: usize,
    /// Gray (1 channel) or RGB (3).
    #[serde(default = "rgb")]
    pub channels: Channels,
    /// Resampling filter.
    #[serde(default)]
    pub filter: ResizeFilter,
    /// Where the decoded images are cached.
    #[serde(default)]
    pub cache: CacheDir,
    /// Pixel v becomes 1 − v/255 (e.g. dark strokes on white paper as ink = 1).
    #[serde(default)]
    pub invert: bool,
}

fn default_size() -> usize {
    84
}

fn rgb() -> Channels {
    Channels::Rgb
}

impl Default for ImageFolderOptions {
    fn default() -> Self {
        Self {
            root: PathBuf::new(),
            size: default_size(),
            channels: rgb(),
            filter: ResizeFilter::default(),
            cache: CacheDir::default(),
            invert: false,
        }
    }
}

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image(p: &Path) -> bool {
    p.is_file()
        && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        && p.extension().is_some_and(|e| EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
}

fn list(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    if !root.is_dir() {
        return Err(Error::io(root, std::io::Error::new(std::io::ErrorKind::NotFound, "image folder does not exist")));
    }
    let read = |d: &Path| -> Result<Vec<PathBuf>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(d).map_err(|e| Error::io(d, e))? {
            v.push(e.map_err(|e| Error::io(d, e))?.path());
        }
        v.sort();
        Ok(v)
    };
    let mut classes = Vec::new();
    for dir in read(root)? {
        if !dir.is_dir() || dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        let images: Vec<PathBuf> = read(&dir)?.into_iter().filter(|p| is_image(p)).collect();
        if images.is_empty() {
            return Err(Error::Data(format!("{}: class folder holds no .png/.jpg images", dir.display())));
        }
        classes.push((dir.file_name().unwrap().to_string_lossy().to_string(), images));
    }
    if classes.is_empty() {
        return Err(Error::Data(format!(
            "{}: no class folders found (expected root/<class>/<image>.png)",
            root.display()
        )));
    }
    Ok(classes)
}

#[derive(Debug, Clone)]
pub struct ImageFolderDataset {
    store: Arc<ImageStore>,
    pub root: PathBuf,
    pub source_checksum: String,
    pub cache_status: CacheStatus,
    pub cache_path: Option<PathBuf>,
}

impl ImageFolderDataset {
    pub fn load(opts: &ImageFolderOptions) -> Result<Self> {
        if opts.size == 0 || opts.size > 1024 {
            return Err(Error::config("size", format!("image size must be in 1..=1024, got {}", opts.size)));
        }
        let classes = list(&opts.root)?;
        let files: Vec<PathBuf> = classes.iter().flat_map(|(_, f)| f.iter().cloned()).collect();
        let checksum = cache::fingerprint_files(&opts.root, &files)?;
        let ch = opts.channels.count();
        let key =
            format!("image-folder/v1/{}/{checksum}/{}px/c{ch}/{}", opts.root.display(), opts.size, opts.filter.name());
        let file =
            format!("{}-{}px-c{ch}-{}.bin", cache::hex(&sha(&key))[..12].to_owned(), opts.size, opts.filter.name());
        let build = || -> Result<(Vec<ClassEntry>, Vec<u8>)> {
            let pixels = decode_all(files.len(), opts.channels, opts.size as u32, opts.filter, |i| {
                let p = &files[i];
                Ok((std::borrow::Cow::Owned(std::fs::read(p).map_err(|e| Error::io(p, e))?), p.display().to_string()))
            })?;
            let mut start = 0;
            let entries = classes
                .iter()
                .map(|(name, f)| {
                    let e = ClassEntry { name: name.clone(), start, count: f.len() };
                    start += f.len();
                    e
                })
                .collect();
            Ok((entries, pixels))
        };
        let c = cache::cached_or_build(&opts.cache, "image-folder", &file, &key, opts.channels, opts.size, build)?;
        let store = ImageStore::new(c.classes, c.pixels, opts.channels, opts.size, opts.invert)?;
        Ok(Self {
            store: Arc::new(store),
            root: opts.root.clone(),
            source_checksum: checksum,
            cache_status: c.status,
            cache_path: c.path,
        })
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    pub fn images(&self, class: usize) -> Result<Tensor> {
        self.store.images(class)
    }

    pub fn episode_sampler(&self, cfg: EpisodeConfig) -> Result<ImageEpisodeSampler> {
        ImageEpisodeSampler::new(self.store.clone(), cfg)
    }

    pub fn continual_stream(&self, rng: &mut Rng, cfg: &StreamConfig) -> Result<ContinualStream> {
        continual_stream(&self.store, rng, cfg)
    }
}

fn sha(s: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).to_vec()
}
