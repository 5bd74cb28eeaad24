//! Task samplers and datasets exposed to TypeScript: sine tasks, Omniglot and image-folder datasets,
//! episode samplers and continual streams. Tensors cross as `TensorData` (labels as whole-number floats).
use crate::errors::guard;
use crate::json::{JsInput, JsOutput};
use crate::runtime::{host_to_js, TensorData};
use crate::work::{off_thread, Work};
use metaplastic_core::episode::Episode;
use metaplastic_core::rng::{self, Rng};
use metaplastic_core::tasks::{
    self, omniglot, sampling, ContinualStream, DatasetInfo, EpisodeConfig, ImageEpisodeSampler, ImageFolderDataset,
    ImageFolderOptions, ImageStore, OmniglotDataset, OmniglotOptions, OmniglotSplit, Order, SineConfig, StreamConfig,
};
use metaplastic_core::tensor_io::HostTensor;
use metaplastic_core::{Error, Result};
use napi::bindgen_prelude::AsyncTask;
use napi_derive::napi;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tch::Tensor;

fn js(t: &Tensor) -> Result<TensorData> {
    Ok(host_to_js(HostTensor::from_tensor(t)?))
}

fn order_of(order: JsInput) -> Result<Order> {
    tasks::config_from_json(order.0).map_err(|e| e.within("order"))
}

/// Reads a configuration; a missing one means all defaults.
fn options<T: serde::de::DeserializeOwned>(v: Option<JsInput>) -> Result<T> {
    tasks::config_from_json(v.map_or_else(|| json!({}), |j| j.0))
}

fn seed_of(seed: Option<i64>) -> u64 {
    seed.unwrap_or(0) as u64
}

/// A sampler's generator state as JSON (store it to resume the same stream).
fn rng_state(rng: &Mutex<Rng>) -> Result<String> {
    serde_json::to_string(&*lock(rng)?).map_err(|e| Error::Internal(e.to_string()))
}

fn set_rng_state(rng: &Mutex<Rng>, state: &str) -> Result<()> {
    *lock(rng)? = serde_json::from_str(state).map_err(|e| Error::config("rngState", e.to_string()))?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| Error::Internal("sampler state poisoned by an earlier panic".into()))
}

/// An episode plus the dataset class ids behind its labels.
#[napi(object)]
pub struct ImageEpisode {
    pub support_x: TensorData,
    pub support_y: TensorData,
    pub query_x: TensorData,
    pub query_y: TensorData,
    /// Class labels used by this episode.
    pub classes: Vec<i64>,
    /// The dataset class id behind each of `classes`.
    pub class_ids: Vec<i64>,
}

fn episode_to_js(e: &Episode, ids: &[usize]) -> Result<ImageEpisode> {
    Ok(ImageEpisode {
        support_x: js(&e.support_x)?,
        support_y: js(&e.support_y)?,
        query_x: js(&e.query_x)?,
        query_y: js(&e.query_y)?,
        classes: e.classes.clone(),
        class_ids: ids.iter().map(|&i| i as i64).collect(),
    })
}

// ---- Sine ----

/// One lifetime: supportX [T, B, slots+1], supportY [T, B, 1], queryX [F, Q, slots+1], queryY [F, Q, 1].
// Only ever sent to JS: its functions are the engine's serialised values, which are not read back.
#[napi(object, object_from_js = false)]
pub struct SineRun {
    pub support_x: TensorData,
    pub support_y: TensorData,
    pub query_x: TensorData,
    pub query_y: TensorData,
    /// Slot (function index) of each step's minibatch.
    pub step_function: Vec<u32>,
    /// The function of each slot (the engine's `SineFn`, y = A·sin(x + φ)).
    #[napi(ts_type = "SineFn[]")]
    pub functions: JsOutput,
    /// Pool ids of the slots' functions (meta-training runs only).
    pub pool_ids: Option<Vec<u32>>,
}

fn sine_run_to_js(run: &tasks::SineEvalRun, ids: Option<Vec<usize>>) -> Result<SineRun> {
    Ok(SineRun {
        support_x: js(&run.support_x)?,
        support_y: js(&run.support_y)?,
        query_x: js(&run.query_x)?,
        query_y: js(&run.query_y)?,
        step_function: run.step_function.iter().map(|&s| s as u32).collect(),
        functions: JsOutput::of(&run.functions)?,
        pool_ids: ids.map(|v| v.into_iter().map(|i| i as u32).collect()),
    })
}

#[napi(js_name = "NativeSineTask")]
pub struct NativeSineTask {
    task: tasks::SineTask,
    rng: Mutex<Rng>,
}

/// A sine task; `seed` fixes the 400-function pool (its own stream) and the episode stream.
/// (A factory, not a constructor: native.ts wraps functions, and class constructors need `new`.)
#[napi(ts_args_type = "config?: SineConfig, seed?: number")]
pub fn create_sine_task(config: Option<JsInput>, seed: Option<i64>) -> napi::Result<NativeSineTask> {
    guard(|| {
        let cfg: SineConfig = options(config)?;
        let task = tasks::SineTask::new(cfg, seed_of(seed))?;
        Ok(NativeSineTask { task, rng: Mutex::new(rng::stream(seed_of(seed), "sine-episodes")) })
    })
}

#[napi]
impl NativeSineTask {
    /// The configuration with every default filled in.
    #[napi(ts_return_type = "Required<SineConfig>")]
    pub fn config(&self) -> napi::Result<Value> {
        guard(|| serde_json::to_value(self.task.config()).map_err(|e| Error::Internal(e.to_string())))
    }

    /// The fixed meta-training functions, by id.
    #[napi(ts_return_type = "SineFn[]")]
    pub fn pool(&self) -> napi::Result<JsOutput> {
        guard(|| JsOutput::of(&self.task.pool()))
    }

    /// A meta-training lifetime over the pool, with the slots' pool ids.
    #[napi(ts_args_type = "order: Order")]
    pub fn sample_train(&self, order: JsInput) -> napi::Result<SineRun> {
        guard(|| {
            let order = order_of(order)?;
            let (ids, run) = self.task.meta_train_sampler(order).sample_run(&mut *lock(&self.rng)?)?;
            sine_run_to_js(&run, Some(ids))
        })
    }

    /// An evaluation lifetime over fresh functions.
    #[napi(ts_args_type = "order: Order")]
    pub fn eval_run(&self, order: JsInput) -> napi::Result<SineRun> {
        guard(|| {
            let order = order_of(order)?;
            let run = self.task.eval_run(&mut *lock(&self.rng)?, order)?;
            sine_run_to_js(&run, None)
        })
    }

    /// The generator's state as JSON (store it to resume the same stream).
    #[napi]
    pub fn rng_state(&self) -> napi::Result<String> {
        guard(|| rng_state(&self.rng))
    }

    #[napi]
    pub fn set_rng_state(&self, state: String) -> napi::Result<()> {
        guard(|| set_rng_state(&self.rng, &state))
    }
}

// ---- Image datasets ----

#[napi(js_name = "NativeImageDataset")]
pub struct NativeImageDataset {
    store: Arc<ImageStore>,
    info: DatasetInfo,
}

/// trainX [C·train, ...image], one image per step, class by class; labels are stream positions 0..C−1.
#[napi(object)]
pub struct ContinualStreamData {
    pub class_ids: Vec<u32>,
    pub train_x: TensorData,
    pub train_y: TensorData,
    pub test_x: TensorData,
    pub test_y: TensorData,
}

fn stream_to_js(s: &ContinualStream) -> Result<ContinualStreamData> {
    Ok(ContinualStreamData {
        class_ids: s.class_ids.iter().map(|&c| c as u32).collect(),
        train_x: js(&s.train_x)?,
        train_y: js(&s.train_y)?,
        test_x: js(&s.test_x)?,
        test_y: js(&s.test_y)?,
    })
}

#[napi]
impl NativeImageDataset {
    #[napi(ts_return_type = "DatasetInfo")]
    pub fn info(&self) -> napi::Result<JsOutput> {
        guard(|| JsOutput::of(&self.info))
    }

    /// All images of a class, [n, C, S, S].
    #[napi]
    pub fn images(&self, class_id: u32) -> napi::Result<TensorData> {
        guard(|| js(&self.store.images(class_id as usize)?))
    }

    #[napi(ts_args_type = "config?: EpisodeConfig, seed?: number")]
    pub fn episode_sampler(&self, config: Option<JsInput>, seed: Option<i64>) -> napi::Result<NativeEpisodeSampler> {
        guard(|| {
            let cfg: EpisodeConfig = options(config)?;
            Ok(NativeEpisodeSampler {
                sampler: Mutex::new(ImageEpisodeSampler::new(self.store.clone(), cfg)?),
                rng: Mutex::new(rng::stream(seed_of(seed), "image-episodes")),
            })
        })
    }

    /// The continual-learning stream (meta-test or, with `validation`, its validation split).
    #[napi(ts_args_type = "config?: StreamConfig, seed?: number")]
    pub fn continual_stream(&self, config: Option<JsInput>, seed: Option<i64>) -> napi::Result<ContinualStreamData> {
        guard(|| {
            let cfg: StreamConfig = options(config)?;
            stream_to_js(&sampling::continual_stream(
                &self.store,
                &mut rng::stream(seed_of(seed), "continual-stream"),
                &cfg,
            )?)
        })
    }
}

#[napi(js_name = "NativeEpisodeSampler")]
pub struct NativeEpisodeSampler {
    sampler: Mutex<ImageEpisodeSampler>,
    rng: Mutex<Rng>,
}

#[napi]
impl NativeEpisodeSampler {
    #[napi]
    pub fn sample(&self) -> napi::Result<ImageEpisode> {
        guard(|| {
            let (ep, ids) = lock(&self.sampler)?.sample_with_ids(&mut *lock(&self.rng)?)?;
            episode_to_js(&ep, &ids)
        })
    }

    #[napi]
    pub fn rng_state(&self) -> napi::Result<String> {
        guard(|| rng_state(&self.rng))
    }

    #[napi]
    pub fn set_rng_state(&self, state: String) -> napi::Result<()> {
        guard(|| set_rng_state(&self.rng, &state))
    }
}

/// Loads one Omniglot split (decoding, or from the cache) off the JS thread.
#[napi(
    ts_args_type = "split: OmniglotSplit, options?: OmniglotOptions",
    ts_return_type = "Promise<NativeImageDataset>"
)]
pub fn load_omniglot(split: String, config: Option<JsInput>) -> AsyncTask<Work<NativeImageDataset>> {
    off_thread(move || {
        let split: OmniglotSplit = split.parse()?;
        let opts: OmniglotOptions = options(config)?;
        let ds = OmniglotDataset::load(split, &opts)?;
        let info = DatasetInfo::of(
            ds.store(),
            ds.source.clone(),
            ds.source_checksum.clone(),
            ds.cache_status.clone(),
            ds.cache_path.clone(),
        );
        let info =
            DatasetInfo { size: opts.size, filter: opts.filter, invert: opts.invert, split: Some(split), ..info };
        Ok(NativeImageDataset { info, store: ds.store().clone() })
    })
}

#[napi(ts_args_type = "options: ImageFolderOptions", ts_return_type = "Promise<NativeImageDataset>")]
pub fn load_image_folder(config: JsInput) -> AsyncTask<Work<NativeImageDataset>> {
    off_thread(move || {
        let opts: ImageFolderOptions = options(Some(config))?;
        if opts.root.as_os_str().is_empty() {
            return Err(Error::config("root", "the image folder's root directory is required"));
        }
        let ds = ImageFolderDataset::load(&opts)?;
        let info = DatasetInfo::of(
            ds.store(),
            ds.root.clone(),
            ds.source_checksum.clone(),
            ds.cache_status.clone(),
            ds.cache_path.clone(),
        );
        let info = DatasetInfo { size: opts.size, filter: opts.filter, invert: opts.invert, ..info };
        Ok(NativeImageDataset { info, store: ds.store().clone() })
    })
}

/// Structural check of a downloaded Omniglot archive (opens, PNG entries, 964×20 or 659×20).
#[napi(ts_args_type = "path: string, split: OmniglotSplit", ts_return_type = "Promise<ZipSummary>")]
pub fn verify_omniglot_zip(path: String, split: String) -> AsyncTask<Work<JsOutput>> {
    off_thread(move || {
        let split: OmniglotSplit = split.parse()?;
        JsOutput::of(&omniglot::verify_zip(std::path::Path::new(&path), split)?)
    })
}

/// Where the Omniglot loader looks, where a download goes, and the cache root.
#[napi(object)]
pub struct OmniglotPaths {
    /// Where the loader looks (and its omniglot/ subfolder).
    pub data_root: String,
    /// Where `metaplastic data omniglot --download` puts the zips.
    pub download_dir: String,
    pub cache_root: String,
}

/// Where the loader looks, where a download goes, and the cache root.
#[napi]
pub fn omniglot_paths(dir: Option<String>) -> OmniglotPaths {
    let d = dir.map(std::path::PathBuf::from);
    OmniglotPaths {
        data_root: omniglot::data_root(d.as_deref()).display().to_string(),
        download_dir: omniglot::download_dir(d.as_deref()).display().to_string(),
        cache_root: tasks::cache::default_root().display().to_string(),
    }
}
