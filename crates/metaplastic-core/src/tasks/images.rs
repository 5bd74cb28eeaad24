//! An in-memory labelled image set: every class's images as resized u8 pixels, channels-first.
//! Omniglot and image folders both load into this; the samplers in `sampling` work on it.
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Channels {
    #[default]
    Gray,
    Rgb,
}

impl Channels {
    pub fn count(self) -> usize {
        match self {
            Channels::Gray => 1,
            Channels::Rgb => 3,
        }
    }
}

/// One class: its name (e.g. `Alphabet/character01`) and its images' positions in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassEntry {
    pub name: String,
    pub start: usize,
    pub count: usize,
}

#[derive(Debug)]
pub struct ImageStore {
    classes: Vec<ClassEntry>,
    pixels: Vec<u8>,
    channels: Channels,
    size: usize,
    /// Pixel value v becomes 1 − v/255 instead of v/255.
    invert: bool,
}

impl ImageStore {
    pub fn new(
        classes: Vec<ClassEntry>,
        pixels: Vec<u8>,
        channels: Channels,
        size: usize,
        invert: bool,
    ) -> Result<Self> {
        let total: usize = classes.iter().map(|c| c.count).sum();
        let per = channels.count() * size * size;
        if pixels.len() != total * per {
            return Err(Error::Data(format!(
                "image store holds {} bytes, expected {total} images × {per}",
                pixels.len()
            )));
        }
        Ok(Self { classes, pixels, channels, size, invert })
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    pub fn classes(&self) -> &[ClassEntry] {
        &self.classes
    }

    pub fn class_len(&self, class: usize) -> usize {
        self.classes[class].count
    }

    pub fn num_images(&self) -> usize {
        self.classes.iter().map(|c| c.count).sum()
    }

    /// [C, S, S]
    pub fn image_shape(&self) -> [i64; 3] {
        [self.channels.count() as i64, self.size as i64, self.size as i64]
    }

    pub fn invert(&self) -> bool {
        self.invert
    }

    /// The raw resized bytes (what the cache stores).
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    fn check_class(&self, class: usize) -> Result<()> {
        if class >= self.classes.len() {
            return Err(Error::config(
                "class",
                format!("class {class} does not exist (the set has {} classes)", self.classes.len()),
            ));
        }
        Ok(())
    }

    /// All images of a class as f32 [n, C, S, S].
    pub fn images(&self, class: usize) -> Result<Tensor> {
        self.check_class(class)?;
        let idx: Vec<(usize, usize)> = (0..self.classes[class].count).map(|i| (class, i)).collect();
        self.gather(&idx)
    }

    /// The images (class, index within class) as f32 [k, C, S, S], in the order given.
    pub fn gather(&self, items: &[(usize, usize)]) -> Result<Tensor> {
        let per = self.channels.count() * self.size * self.size;
        let lut: Vec<f32> =
            (0..256).map(|v| if self.invert { 1.0 - v as f32 / 255.0 } else { v as f32 / 255.0 }).collect();
        let mut out = Vec::with_capacity(items.len() * per);
        for &(c, i) in items {
            self.check_class(c)?;
            let e = &self.classes[c];
            if i >= e.count {
                return Err(Error::config(
                    "drawing",
                    format!("class {c} ({}) has {} images, asked for index {i}", e.name, e.count),
                ));
            }
            let start = (e.start + i) * per;
            out.extend(self.pixels[start..start + per].iter().map(|&v| lut[v as usize]));
        }
        let [ch, s, _] = self.image_shape();
        Ok(Tensor::f_from_slice(&out)?.f_reshape([items.len() as i64, ch, s, s])?)
    }
}

/// What a loaded image dataset holds, where it was read from, and how its images were prepared.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetInfo {
    pub classes: usize,
    pub images: usize,
    /// [channels, size, size]
    pub image_shape: [i64; 3],
    /// Class names in class-id order (Omniglot: `Alphabet/characterNN`; folders: the folder names).
    pub class_names: Vec<String>,
    /// Images per class.
    pub class_sizes: Vec<usize>,
    /// The zip or folder the images were read from.
    pub source: std::path::PathBuf,
    /// sha256 of the zip, or a fingerprint of the folder's file listing.
    pub source_checksum: String,
    pub cache: super::CacheStatus,
    /// The cache file, when there is one.
    pub cache_path: Option<std::path::PathBuf>,
    pub size: usize,
    pub filter: super::ResizeFilter,
    pub invert: bool,
    /// Omniglot only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "super::OmniglotSplit")]
    pub split: Option<super::OmniglotSplit>,
}

impl DatasetInfo {
    /// The store's contents; the caller fills in where they came from.
    pub fn of(
        store: &ImageStore,
        source: std::path::PathBuf,
        source_checksum: String,
        cache: super::CacheStatus,
        cache_path: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            classes: store.num_classes(),
            images: store.num_images(),
            image_shape: store.image_shape(),
            class_names: store.classes().iter().map(|c| c.name.clone()).collect(),
            class_sizes: store.classes().iter().map(|c| c.count).collect(),
            source,
            source_checksum,
            cache,
            cache_path,
            size: 0,
            filter: super::ResizeFilter::default(),
            invert: false,
            split: None,
        }
    }
}
