//! Omniglot (Lake et al. 2015) in its official layout: `images_background.zip` / `images_evaluation.zip`
//! (or the same folders unzipped), `<split>/<Alphabet>/<characterNN>/<id>_<drawing>.png`.
//!
//! Classes are the characters in sorted (alphabet, character) order; class id = index in that order
//! (964 background, 659 evaluation). A class's 20 drawings are in file-name order (drawings 1–20).
//! Pixels: the PNGs are ink 0 on white 1; by default (`invert: true`) ink = 1 and background = 0.
use super::cache::{self, CacheDir, CacheStatus};
use super::decode::{decode_all, ResizeFilter};
use super::images::{Channels, ClassEntry, ImageStore};
use super::sampling::{continual_stream, ContinualStream, EpisodeConfig, ImageEpisodeSampler, StreamConfig};
use crate::rng::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::Tensor;

pub const DRAWINGS: usize = 20;
/// Drawings 1–15 form the meta-test training stream, 16–20 are held out.
pub const TRAIN_DRAWINGS: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OmniglotSplit {
    Background,
    Evaluation,
}

impl OmniglotSplit {
    pub fn folder(self) -> &'static str {
        match self {
            OmniglotSplit::Background => "images_background",
            OmniglotSplit::Evaluation => "images_evaluation",
        }
    }

    pub fn zip_name(self) -> String {
        format!("{}.zip", self.folder())
    }

    /// Characters in the official split.
    pub fn expected_classes(self) -> usize {
        match self {
            OmniglotSplit::Background => 964,
            OmniglotSplit::Evaluation => 659,
        }
    }
}

impl std::str::FromStr for OmniglotSplit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "background" => Ok(OmniglotSplit::Background),
            "evaluation" => Ok(OmniglotSplit::Evaluation),
            other => Err(Error::config("split", format!("expected \"background\" or \"evaluation\", got {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OmniglotOptions {
    /// Data directory; else `$METAPLASTIC_DATA`, else `${XDG_DATA_HOME:-~/.local/share}/metaplastic`.
    /// The files are looked for in it and in its `omniglot/` subfolder.
    pub dir: Option<PathBuf>,
    /// Images are resized to size×size.
    pub size: usize,
    /// Resampling filter.
    pub filter: ResizeFilter,
    /// Where the decoded images are cached.
    pub cache: CacheDir,
    /// Ink = 1, background = 0 (true, default) or the raw PNG polarity (false).
    pub invert: bool,
}

impl Default for OmniglotOptions {
    fn default() -> Self {
        Self { dir: None, size: 28, filter: ResizeFilter::default(), cache: CacheDir::default(), invert: true }
    }
}

/// Where Omniglot data is looked for when no directory is given.
pub fn data_root(dir: Option<&Path>) -> PathBuf {
    if let Some(d) = dir {
        return d.to_path_buf();
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = env("METAPLASTIC_DATA") {
        return p;
    }
    let base =
        env("XDG_DATA_HOME").unwrap_or_else(|| env("HOME").unwrap_or_else(|| PathBuf::from(".")).join(".local/share"));
    base.join("metaplastic")
}

/// Where `metaplastic data omniglot --download` puts the zips: DIR if given, else `<data root>/omniglot`.
pub fn download_dir(dir: Option<&Path>) -> PathBuf {
    match dir {
        Some(d) => d.to_path_buf(),
        None => data_root(None).join("omniglot"),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Zip(PathBuf),
    Folder(PathBuf),
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::Zip(p) | Source::Folder(p) => p,
        }
    }
}

/// Finds a split's zip (preferred) or unzipped folder in `root` or `root/omniglot`.
pub fn locate(root: &Path, split: OmniglotSplit) -> Result<Source> {
    if !root.is_dir() {
        return Err(Error::io(
            root,
            std::io::Error::new(std::io::ErrorKind::NotFound, "Omniglot data directory does not exist"),
        ));
    }
    let mut looked = Vec::new();
    for base in [root.to_path_buf(), root.join("omniglot")] {
        let zip = base.join(split.zip_name());
        if zip.is_file() {
            return Ok(Source::Zip(zip));
        }
        let folder = base.join(split.folder());
        if folder.is_dir() {
            return Ok(Source::Folder(folder));
        }
        looked.push(zip.display().to_string());
        looked.push(folder.display().to_string());
    }
    Err(Error::Data(format!(
        "Omniglot {} split not found: looked for {}; run `metaplastic data omniglot --download` or set METAPLASTIC_DATA",
        split.folder(),
        looked.join(", ")
    )))
}

/// A character folder's images, grouped from a listing of (alphabet, character, file) triples.
struct Listing {
    /// (class name, file keys in drawing order)
    classes: Vec<(String, Vec<String>)>,
}

fn group(
    source: &Path,
    entries: impl Iterator<Item = (String, String, String)>,
    drawings: Option<usize>,
) -> Result<Listing> {
    let mut map: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (alphabet, character, file) in entries {
        map.entry((alphabet, character)).or_default().push(file);
    }
    if map.is_empty() {
        return Err(Error::Data(format!(
            "{}: no character images found (expected <Alphabet>/<characterNN>/*.png)",
            source.display()
        )));
    }
    let mut classes = Vec::with_capacity(map.len());
    for ((alphabet, character), mut files) in map {
        files.sort();
        if let Some(n) = drawings {
            if files.len() != n {
                return Err(Error::Data(format!(
                    "{}: {alphabet}/{character} has {} drawings, expected {n}",
                    source.display(),
                    files.len()
                )));
            }
        }
        classes.push((format!("{alphabet}/{character}"), files));
    }
    Ok(Listing { classes })
}

fn is_png(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".png")
}

/// The last three path components of an image entry, skipping macOS metadata and hidden files.
fn split_entry(name: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() < 3 || parts.iter().any(|p| p.starts_with("__MACOSX") || p.starts_with('.')) || !is_png(name) {
        return None;
    }
    let n = parts.len();
    Some((parts[n - 3].to_string(), parts[n - 2].to_string(), parts[n - 1].to_string()))
}

fn open_zip<'a>(path: &Path, bytes: &'a [u8]) -> Result<zip::ZipArchive<std::io::Cursor<&'a [u8]>>> {
    zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| Error::Data(format!("{}: not a readable zip archive: {e}", path.display())))
}

/// Reads every image entry of a zip: the class listing and each file's bytes (keyed by full path).
fn read_zip(path: &Path, drawings: Option<usize>) -> Result<(Listing, BTreeMap<String, Vec<u8>>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut archive = open_zip(path, &bytes)?;
    let mut files = BTreeMap::new();
    let mut entries = Vec::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).map_err(|e| Error::Data(format!("{}: entry {i}: {e}", path.display())))?;
        if f.is_dir() {
            continue;
        }
        let name = f
            .name()
            .map_err(|e| Error::Data(format!("{}: entry {i} has an unreadable name: {e}", path.display())))?
            .to_string();
        let Some((a, c, file)) = split_entry(&name) else { continue };
        let mut data = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut data)
            .map_err(|e| Error::Data(format!("{}: cannot read entry {name}: {e}", path.display())))?;
        let key = format!("{a}/{c}/{file}");
        entries.push((a, c, key.clone()));
        files.insert(key, data);
    }
    let listing = group(path, entries.into_iter(), drawings)?;
    Ok((listing, files))
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        let hidden = p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if p.is_dir() && !hidden {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Lists an unzipped split folder: (class listing with file paths, the files in class order).
fn read_folder(root: &Path) -> Result<(Listing, Vec<PathBuf>)> {
    let mut entries = Vec::new();
    let mut paths = Vec::new();
    for alphabet in sorted_dirs(root)? {
        for character in sorted_dirs(&alphabet)? {
            for e in std::fs::read_dir(&character).map_err(|e| Error::io(&character, e))? {
                let p = e.map_err(|e| Error::io(&character, e))?.path();
                let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                if p.is_file() && is_png(&name) && !name.starts_with('.') {
                    let a = alphabet.file_name().unwrap().to_string_lossy().to_string();
                    let c = character.file_name().unwrap().to_string_lossy().to_string();
                    entries.push((a, c, p.to_string_lossy().to_string()));
                    paths.push(p);
                }
            }
        }
    }
    let listing = group(root, entries.into_iter(), Some(DRAWINGS))?;
    paths.sort();
    Ok((listing, paths))
}

/// Counts found in a zip by `verify_zip`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZipSummary {
    pub alphabets: usize,
    pub classes: usize,
    pub images: usize,
}

/// Checks a downloaded archive structurally: it opens as a zip, every image is a PNG, and it holds the
/// official split's characters × 20 drawings (964 × 20 or 659 × 20).
pub fn verify_zip(path: &Path, split: OmniglotSplit) -> Result<ZipSummary> {
    let (listing, files) = read_zip(path, Some(DRAWINGS))?;
    if let Some((name, _)) = files.iter().find(|(_, b)| !b.starts_with(b"\x89PNG\r\n\x1a\n")) {
        return Err(Error::Data(format!("{}: entry {name} is not a PNG file", path.display())));
    }
    let classes = listing.classes.len();
    if classes != split.expected_classes() {
        return Err(Error::Data(format!(
            "{}: {classes} characters found, the official {} split has {}",
            path.display(),
            split.folder(),
            split.expected_classes()
        )));
    }
    let alphabets = listing
        .classes
        .iter()
        .map(|(n, _)| n.split('/').next().unwrap_or(""))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    Ok(ZipSummary { alphabets, classes, images: files.len() })
}

/// One split of Omniglot, decoded and resized, ready for sampling.
#[derive(Debug, Clone)]
pub struct OmniglotDataset {
    pub split: OmniglotSplit,
    store: Arc<ImageStore>,
    pub source: PathBuf,
    /// sha256 of the zip, or a fingerprint of the folder's file listing.
    pub source_checksum: String,
    pub cache_status: CacheStatus,
    pub cache_path: Option<PathBuf>,
}

impl OmniglotDataset {
    pub fn load(split: OmniglotSplit, opts: &OmniglotOptions) -> Result<Self> {
        if opts.size == 0 || opts.size > 1024 {
            return Err(Error::config("size", format!("image size must be in 1..=1024, got {}", opts.size)));
        }
        let source = locate(&data_root(opts.dir.as_deref()), split)?;
        let size = opts.size as u32;
        let checksum = match &source {
            Source::Zip(p) => format!("zip-{}", cache::sha256_file(p)?),
            Source::Folder(p) => format!("dir-{}", cache::fingerprint_files(p, &read_folder(p)?.1)?),
        };
        let key = format!("omniglot/v1/{}/{checksum}/{}px/{}", split.folder(), opts.size, opts.filter.name());
        let file = format!("{}-{}px-{}-{}.bin", split.folder(), opts.size, opts.filter.name(), &checksum[..20]);
        let build = || -> Result<(Vec<ClassEntry>, Vec<u8>)> {
            match &source {
                Source::Zip(p) => {
                    let (listing, files) = read_zip(p, Some(DRAWINGS))?;
                    let order: Vec<&String> = listing.classes.iter().flat_map(|(_, f)| f.iter()).collect();
                    let pixels = decode_all(order.len(), Channels::Gray, size, opts.filter, |i| {
                        Ok((
                            std::borrow::Cow::Borrowed(files[order[i]].as_slice()),
                            format!("{}:{}", p.display(), order[i]),
                        ))
                    })?;
                    Ok((entries(&listing), pixels))
                }
                Source::Folder(p) => {
                    let (listing, _) = read_folder(p)?;
                    let order: Vec<&String> = listing.classes.iter().flat_map(|(_, f)| f.iter()).collect();
                    let pixels = decode_all(order.len(), Channels::Gray, size, opts.filter, |i| {
                        let path = Path::new(order[i]);
                        Ok((
                            std::borrow::Cow::Owned(std::fs::read(path).map_err(|e| Error::io(path, e))?),
                            order[i].clone(),
                        ))
                    })?;
                    Ok((entries(&listing), pixels))
                }
            }
        };
        let c = cache::cached_or_build(&opts.cache, "omniglot", &file, &key, Channels::Gray, opts.size, build)?;
        let store = ImageStore::new(c.classes, c.pixels, Channels::Gray, opts.size, opts.invert)?;
        Ok(Self {
            split,
            store: Arc::new(store),
            source: source.path().to_path_buf(),
            source_checksum: checksum,
            cache_status: c.status,
            cache_path: c.path,
        })
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    pub fn num_classes(&self) -> usize {
        self.store.num_classes()
    }

    pub fn class_name(&self, class: usize) -> Option<&str> {
        self.store.classes().get(class).map(|c| c.name.as_str())
    }

    /// A class's 20 drawings, f32 [20, 1, S, S].
    pub fn images(&self, class: usize) -> Result<Tensor> {
        self.store.images(class)
    }

    pub fn episode_sampler(&self, cfg: EpisodeConfig) -> Result<ImageEpisodeSampler> {
        ImageEpisodeSampler::new(self.store.clone(), cfg)
    }

    /// Meta-test stream over `classes` random classes: drawings 1–15 train, 16–20 test.
    pub fn meta_test_stream(&self, rng: &mut Rng, classes: usize) -> Result<ContinualStream> {
        continual_stream(&self.store, rng, &StreamConfig { classes, ..StreamConfig::default() })
    }

    /// Step-size selection split: trains on drawings 1..(15 − held_out), tests on the rest of 1–15;
    /// drawings 16–20 are never touched.
    pub fn validation_stream(&self, rng: &mut Rng, classes: usize, held_out: usize) -> Result<ContinualStream> {
        continual_stream(
            &self.store,
            rng,
            &StreamConfig { classes, validation: Some(held_out), ..StreamConfig::default() },
        )
    }
}

fn entries(listing: &Listing) -> Vec<ClassEntry> {
    let mut start = 0;
    listing
        .classes
        .iter()
        .map(|(name, files)| {
            let e = ClassEntry { name: name.clone(), start, count: files.len() };
            start += files.len();
            e
        })
        .collect()
}
