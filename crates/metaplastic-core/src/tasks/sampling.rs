//! Episode samplers and continual-learning streams over an `ImageStore` (Omniglot or an image folder).
use super::images::ImageStore;
use super::Order;
use crate::episode::{Episode, EpisodeSampler};
use crate::rng::Rng;
use crate::{Error, Result};
use rand::seq::{index, SliceRandom};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// How an episode's classes are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LabelMode {
    /// Distinct random labels per episode from [0, labelSpace) (a random permutation when labelSpace = ways).
    #[default]
    Permuted,
    /// The dataset's class id (needed by the remember set, whose classes keep stable labels).
    ClassId,
}

/// N-way k-shot meta-training episodes: one support image per step by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EpisodeConfig {
    /// Classes per episode (N).
    pub ways: usize,
    /// Support images per class (k).
    pub shots: usize,
    /// Continual: class after class; iid: the N·k images shuffled.
    pub order: Order,
    /// Images per inner step (N·k must be a multiple).
    pub batch_size: usize,
    /// Fresh query images per episode class; default `shots`.
    pub query_shots: Option<usize>,
    /// OML's remember set: this many images of random other classes added to the query (labels: classId).
    pub remember: usize,
    /// How the episode's classes are labelled.
    pub labels: LabelMode,
    /// Range of permuted labels; default `ways`.
    pub label_space: Option<usize>,
}

impl Default for EpisodeConfig {
    fn default() -> Self {
        Self {
            ways: 5,
            shots: 5,
            order: Order::Continual,
            batch_size: 1,
            query_shots: None,
            remember: 0,
            labels: LabelMode::Permuted,
            label_space: None,
        }
    }
}

fn shortest_class(store: &ImageStore) -> (usize, usize) {
    (0..store.num_classes()).map(|c| (store.class_len(c), c)).min().unwrap_or((0, 0))
}

fn too_few_images(store: &ImageStore, field: &str, need: usize) -> Result<()> {
    let (len, c) = shortest_class(store);
    if len < need {
        return Err(Error::config(
            field,
            format!("needs {need} images per class but class {c} ({}) has only {len}", store.classes()[c].name),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct ImageEpisodeSampler {
    store: Arc<ImageStore>,
    cfg: EpisodeConfig,
}

impl ImageEpisodeSampler {
    pub fn new(store: Arc<ImageStore>, cfg: EpisodeConfig) -> Result<Self> {
        for (field, v) in [("ways", cfg.ways), ("shots", cfg.shots), ("batchSize", cfg.batch_size)] {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        let n = store.num_classes();
        if cfg.ways > n {
            return Err(Error::config(
                "ways",
                format!("{} classes per episode requested but the set has only {n}", cfg.ways),
            ));
        }
        if !(cfg.ways * cfg.shots).is_multiple_of(cfg.batch_size) {
            return Err(Error::config(
                "batchSize",
                format!(
                    "ways × shots = {} is not a multiple of the batch size {}",
                    cfg.ways * cfg.shots,
                    cfg.batch_size
                ),
            ));
        }
        too_few_images(&store, "shots", cfg.shots + cfg.query_shots.unwrap_or(cfg.shots))?;
        if cfg.remember > 0 {
            if cfg.labels != LabelMode::ClassId {
                return Err(Error::config(
                    "remember",
                    "the remember set needs labels: \"classId\" (its classes keep stable labels)",
                ));
            }
            if cfg.ways == n {
                return Err(Error::config("remember", "no classes are left outside the episode to remember"));
            }
        }
        if let Some(space) = cfg.label_space {
            if space < cfg.ways {
                return Err(Error::config("labelSpace", format!("{space} labels cannot label {} classes", cfg.ways)));
            }
        }
        Ok(Self { store, cfg })
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    pub fn config(&self) -> &EpisodeConfig {
        &self.cfg
    }

    /// An episode and the dataset class ids behind its labels (same order as `episode.classes`).
    pub fn sample_with_ids(&mut self, rng: &mut Rng) -> Result<(Episode, Vec<usize>)> {
        let cfg = &self.cfg;
        let store = &self.store;
        let mut class_ids = index::sample(rng, store.num_classes(), cfg.ways).into_vec();
        class_ids.shuffle(rng);
        let labels: Vec<i64> = match cfg.labels {
            LabelMode::ClassId => class_ids.iter().map(|&c| c as i64).collect(),
            LabelMode::Permuted => {
                let mut l = index::sample(rng, cfg.label_space.unwrap_or(cfg.ways), cfg.ways).into_vec();
                l.shuffle(rng);
                l.into_iter().map(|v| v as i64).collect()
            }
        };
        let q = cfg.query_shots.unwrap_or(cfg.shots);
        let (mut support, mut query) = (Vec::new(), Vec::new());
        for (j, &c) in class_ids.iter().enumerate() {
            let mut d = index::sample(rng, store.class_len(c), cfg.shots + q).into_vec();
            d.shuffle(rng);
            support.extend(d[..cfg.shots].iter().map(|&i| ((c, i), labels[j])));
            query.extend(d[cfg.shots..].iter().map(|&i| ((c, i), labels[j])));
        }
        if cfg.order == Order::Iid {
            support.shuffle(rng);
        }
        for _ in 0..cfg.remember {
            let c = loop {
                let c = rng.random_range(0..store.num_classes());
                if !class_ids.contains(&c) {
                    break c;
                }
            };
            let i = rng.random_range(0..store.class_len(c));
            query.push(((c, i), c as i64));
        }
        let [ch, s, _] = store.image_shape();
        let t = (support.len() / cfg.batch_size) as i64;
        let b = cfg.batch_size as i64;
        let (sx, sy) = gather(store, &support)?;
        let (qx, qy) = gather(store, &query)?;
        let episode = Episode {
            support_x: sx.f_reshape([t, b, ch, s, s])?,
            support_y: sy.f_reshape([t, b])?,
            query_x: qx,
            query_y: qy,
            classes: labels,
        };
        Ok((episode, class_ids))
    }
}

fn gather(store: &ImageStore, items: &[((usize, usize), i64)]) -> Result<(Tensor, Tensor)> {
    let idx: Vec<(usize, usize)> = items.iter().map(|(i, _)| *i).collect();
    let y: Vec<i64> = items.iter().map(|(_, l)| *l).collect();
    Ok((store.gather(&idx)?, Tensor::f_from_slice(&y)?.f_to_kind(Kind::Int64)?))
}

impl EpisodeSampler for ImageEpisodeSampler {
    fn sample(&mut self, rng: &mut Rng) -> Result<Episode> {
        Ok(self.sample_with_ids(rng)?.0)
    }
}

/// The continual-learning evaluation stream (meta-test), or its validation variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Number of classes C, drawn at random unless `classIds` is given.
    pub classes: usize,
    /// The first `trainPerClass` images of each class form the training stream (Omniglot: drawings 1–15).
    pub train_per_class: usize,
    /// The next `testPerClass` images are held out for testing (Omniglot: drawings 16–20).
    pub test_per_class: usize,
    /// Validation split for choosing step sizes: train on the first trainPerClass − v images, test on the
    /// last v of the training images; the held-out test images are never used.
    pub validation: Option<usize>,
    /// Explicit classes (in stream order) instead of a random draw.
    pub class_ids: Option<Vec<usize>>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self { classes: 10, train_per_class: 15, test_per_class: 5, validation: None, class_ids: None }
    }
}

/// Labels are positions in the stream (0..C), i.e. the order in which the classes are learned.
#[derive(Debug)]
pub struct ContinualStream {
    pub class_ids: Vec<usize>,
    /// [C·train, ...image], class by class, one image per step.
    pub train_x: Tensor,
    /// [C·train] int64
    pub train_y: Tensor,
    /// [C·test, ...image], class by class.
    pub test_x: Tensor,
    pub test_y: Tensor,
}

/// Which images a continual stream shows, without the pixels: ((class, index within class), label).
#[derive(Debug, Clone)]
pub struct StreamItems {
    pub class_ids: Vec<usize>,
    pub train: Vec<((usize, usize), i64)>,
    pub test: Vec<((usize, usize), i64)>,
}

pub fn continual_stream(store: &ImageStore, rng: &mut Rng, cfg: &StreamConfig) -> Result<ContinualStream> {
    let items = stream_items(store, rng, cfg)?;
    let (train_x, train_y) = gather(store, &items.train)?;
    let (test_x, test_y) = gather(store, &items.test)?;
    Ok(ContinualStream { class_ids: items.class_ids, train_x, train_y, test_x, test_y })
}

/// Draws a continual stream's classes and images (same draws as `continual_stream`).
pub fn stream_items(store: &ImageStore, rng: &mut Rng, cfg: &StreamConfig) -> Result<StreamItems> {
    let n = store.num_classes();
    let class_ids = match &cfg.class_ids {
        Some(ids) => {
            if let Some(&bad) = ids.iter().find(|&&c| c >= n) {
                return Err(Error::config("classIds", format!("class {bad} does not exist (the set has {n} classes)")));
            }
            ids.clone()
        }
        None => {
            if cfg.classes == 0 || cfg.classes > n {
                return Err(Error::config("classes", format!("expected 1..={n} classes, got {}", cfg.classes)));
            }
            let mut ids = index::sample(rng, n, cfg.classes).into_vec();
            ids.shuffle(rng);
            ids
        }
    };
    if cfg.train_per_class == 0 || cfg.test_per_class == 0 {
        return Err(Error::config("trainPerClass", "train and test images per class must be at least 1"));
    }
    too_few_images(store, "trainPerClass", cfg.train_per_class + cfg.test_per_class)?;
    let (train, test) = match cfg.validation {
        None => (0..cfg.train_per_class, cfg.train_per_class..cfg.train_per_class + cfg.test_per_class),
        Some(v) if v >= 1 && v < cfg.train_per_class => {
            (0..cfg.train_per_class - v, cfg.train_per_class - v..cfg.train_per_class)
        }
        Some(v) => {
            return Err(Error::config(
                "validation",
                format!("held-out count must be in 1..{}, got {v}", cfg.train_per_class),
            ))
        }
    };
    let items = |r: &std::ops::Range<usize>| -> Vec<((usize, usize), i64)> {
        class_ids.iter().enumerate().flat_map(|(j, &c)| r.clone().map(move |i| ((c, i), j as i64))).collect()
    };
    let (train, test) = (items(&train), items(&test));
    Ok(StreamItems { class_ids, train, test })
}
