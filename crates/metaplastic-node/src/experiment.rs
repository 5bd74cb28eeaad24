//! Experiments and learners for TypeScript. One native class serves both: an experiment with a built-in
//! task (sine, Omniglot, image folder) trains itself; one with a `custom` task takes episodes from JS.
//! State sits behind a mutex; a call made while a task runs is refused with E_BUSY, never blocked.
use crate::errors::guard;
use crate::json::{JsInput, JsOutput};
use crate::runtime::{host_from_js, host_to_js, TensorData};
use crate::work::{off_thread, Work};
use metaplastic_core::analysis::{analyze, learned, AnalysisOptions};
use metaplastic_core::distributed::GroupSettings;
use metaplastic_core::episode::Episode;
use metaplastic_core::eval::{evaluate, EvalOptions};
use metaplastic_core::experiment::{stack, Experiment, ExperimentConfig};
use metaplastic_core::{checkpoint, Error, Result};
use napi::bindgen_prelude::AsyncTask;
use napi_derive::napi;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tch::Device;

/// One lifetime for a learner: the inner-loop stream and the query set that scores it.
/// supportX [T, B, ...input]; supportY [T, B, out] (regression) or [T, B] integer labels (classification);
/// queryX [Q, ...input]; queryY [Q, out] or [Q]. Labels travel as whole numbers in a Float32Array.
#[napi(object)]
pub struct EpisodeData {
    pub support_x: TensorData,
    pub support_y: TensorData,
    pub query_x: TensorData,
    pub query_y: TensorData,
    /// Class labels used by this episode (classification).
    pub classes: Option<Vec<i64>>,
}

fn to_episode(e: &EpisodeData, classification: bool, index: usize) -> Result<Episode> {
    let t = |x: &TensorData, what: &str| -> Result<tch::Tensor> {
        let h = host_from_js(x)?;
        h.check_finite(&format!("episode {index} {what}"))?;
        h.to_tensor(Device::Cpu)
    };
    let ep = Episode {
        support_x: t(&e.support_x, "supportX")?,
        support_y: t(&e.support_y, "supportY")?,
        query_x: t(&e.query_x, "queryX")?,
        query_y: t(&e.query_y, "queryY")?,
        classes: e.classes.clone().unwrap_or_default(),
    };
    if classification {
        for (name, y) in [("supportY", &ep.support_y), ("queryY", &ep.query_y)] {
            if y.numel() > 0 && y.f_sub(&y.f_round()?)?.f_abs()?.f_max()?.f_double_value(&[])? != 0.0 {
                return Err(Error::Data(format!("episode {index} {name} holds non-integer class labels")));
            }
        }
        ep.labels_to_int()
    } else {
        Ok(ep)
    }
}

fn to_episodes(episodes: &[EpisodeData], classification: bool) -> Result<Vec<Episode>> {
    episodes.iter().enumerate().map(|(i, e)| to_episode(e, classification, i)).collect()
}

struct Shared {
    state: Mutex<Experiment>,
    /// Also the learner's cancellation flag: a stop reaches the engine between inner steps.
    stop: Arc<AtomicBool>,
    /// Set on the JS thread when an operation is started, cleared when its work is done: calls made in
    /// between are refused at once (deterministically, not by racing for the lock).
    busy: AtomicBool,
}

#[napi(js_name = "NativeExperiment")]
pub struct NativeExperiment {
    shared: Arc<Shared>,
}

fn busy() -> Error {
    Error::Busy("the experiment is busy with another operation (training, evaluation or saving); await it first".into())
}

impl NativeExperiment {
    fn wrap(mut exp: Experiment) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        exp.learner.cancel = Some(stop.clone());
        Self { shared: Arc::new(Shared { state: Mutex::new(exp), stop, busy: AtomicBool::new(false) }) }
    }

    fn lock(&self) -> napi::Result<MutexGuard<'_, Experiment>> {
        if self.shared.busy.load(Ordering::Acquire) {
            return Err(crate::errors::to_napi(busy()));
        }
        lock_shared(&self.shared).map_err(crate::errors::to_napi)
    }
}

fn lock_shared(shared: &Shared) -> Result<MutexGuard<'_, Experiment>> {
    shared.state.lock().map_err(|_| {
        // A panic inside an earlier task poisoned the lock; the state may be half-updated.
        Error::Internal(
            "experiment state is unusable after an earlier native panic; reload it from a checkpoint".into(),
        )
    })
}

/// Runs `f` on the pool with the experiment locked; refuses at once if another operation is running.
fn with_state<T: Send + 'static + napi::bindgen_prelude::ToNapiValue + napi::bindgen_prelude::TypeName>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Experiment, &AtomicBool) -> Result<T> + Send + 'static,
) -> AsyncTask<Work<T>> {
    if shared.busy.swap(true, Ordering::AcqRel) {
        return off_thread(|| Err(busy()));
    }
    // A stop asked for an earlier operation must not cancel this one (the flag is the learner's too).
    shared.stop.store(false, Ordering::Relaxed);
    let shared = shared.clone();
    off_thread(move || {
        let result = lock_shared(&shared).and_then(|mut guard| f(&mut guard, &shared.stop));
        shared.busy.store(false, Ordering::Release);
        result
    })
}

fn js<T: serde::Serialize>(v: &T) -> Result<JsOutput> {
    JsOutput::of(v)
}

#[napi(ts_args_type = "config: ExperimentConfig", ts_return_type = "Promise<NativeExperiment>")]
pub fn create_experiment(config: JsInput) -> AsyncTask<Work<NativeExperiment>> {
    off_thread(move || Ok(NativeExperiment::wrap(Experiment::new(ExperimentConfig::from_value(config.0)?)?)))
}

#[napi(ts_return_type = "Promise<NativeExperiment>")]
pub fn load_experiment(dir: String) -> AsyncTask<Work<NativeExperiment>> {
    off_thread(move || Ok(NativeExperiment::wrap(checkpoint::load(&PathBuf::from(dir))?)))
}

/// Validates a configuration and builds its learner without loading any data; returns the parameter list
/// (so every preset can be checked cheaply).
#[napi(ts_args_type = "config: ExperimentConfig", ts_return_type = "ParamInfo[]")]
pub fn check_experiment_config(config: JsInput) -> napi::Result<JsOutput> {
    guard(|| {
        let cfg = ExperimentConfig::from_value(config.0)?;
        let learner = metaplastic_core::learner::Learner::new(cfg.learner).map_err(|e| e.within("learner"))?;
        js(&learner.params.infos())
    })
}

/// Reads a checkpoint's manifest without loading it.
#[napi(ts_return_type = "object")]
pub fn read_checkpoint_manifest(dir: String) -> napi::Result<JsOutput> {
    guard(|| js(&checkpoint::read_manifest(&PathBuf::from(dir))?))
}

/// The JSON Schema of the configurations, options, records and results (see core `schema`).
#[napi(ts_return_type = "object")]
pub fn engine_schema() -> JsOutput {
    JsOutput(metaplastic_core::schema::engine_schema())
}

#[napi]
impl NativeExperiment {
    /// The full configuration, defaults filled in.
    #[napi(ts_return_type = "ExperimentConfig")]
    pub fn config(&self) -> napi::Result<JsOutput> {
        let exp = self.lock()?;
        guard(|| js(&exp.cfg))
    }

    /// Meta-steps taken so far, how many were skipped as non-finite and how many as exploded lifetimes:
    /// [step, skipped, exploded].
    #[napi]
    pub fn progress(&self) -> napi::Result<(i64, i64, i64)> {
        let exp = self.lock()?;
        Ok((exp.step as i64, exp.skipped as i64, exp.exploded as i64))
    }

    /// Up to `steps` meta-steps off the JS thread; resolves to the step records.
    #[napi(ts_return_type = "Promise<StepRecord[]>")]
    pub fn train(&self, steps: u32) -> AsyncTask<Work<JsOutput>> {
        with_state(&self.shared, move |exp, stop| js(&exp.train(steps as u64, stop)?))
    }

    /// Joins a data-parallel process group (c10d/Gloo): waits for every rank, checks that all start from
    /// the same state; later `train` calls average each meta-gradient over the group.
    #[napi(ts_args_type = "settings: GroupSettings", ts_return_type = "Promise<void>")]
    pub fn join_group(&self, settings: JsInput) -> AsyncTask<Work<()>> {
        with_state(&self.shared, move |exp, _| {
            // Engine work of a process runs on one thread (work.rs): two ranks in one process would wait
            // for each other forever, so a process is one worker.
            static JOINED: AtomicBool = AtomicBool::new(false);
            if exp.group.is_none() && JOINED.load(Ordering::Acquire) {
                return Err(Error::config(
                    "distributed",
                    "this process already trains as a worker of a group; run each rank in its own process",
                ));
            }
            let settings: GroupSettings =
                metaplastic_core::config::from_value(settings.0).map_err(|e| e.within("distributed"))?;
            settings.validate().map_err(|e| e.within("distributed"))?;
            exp.join(&settings)?;
            JOINED.store(true, Ordering::Release);
            Ok(())
        })
    }

    /// Asks a running `train` to stop before its next inner step (the interrupted meta-step is dropped).
    #[napi]
    pub fn request_stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// Writes a checkpoint to `dir`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save(&self, dir: String) -> AsyncTask<Work<()>> {
        with_state(&self.shared, move |exp, _| checkpoint::save(exp, &PathBuf::from(dir)))
    }

    /// Runs the task's evaluation protocol; resolves to the options used (defaults filled in) and the raw
    /// per-run results.
    #[napi(ts_args_type = "options: EvalOptions", ts_return_type = "Promise<{ options: EvalOptions; raw: EvalRaw }>")]
    pub fn evaluate(&self, options: JsInput) -> AsyncTask<Work<JsOutput>> {
        with_state(&self.shared, move |exp, _| {
            let opts = EvalOptions::for_task(options.0, &exp.cfg.task).map_err(|e| e.within("options"))?;
            let raw = evaluate(exp, &opts)?;
            js(&serde_json::json!({ "options": opts, "raw": raw }))
        })
    }

    /// Analyses the learner's updates on held-out streams (docs/method.md §7).
    #[napi(ts_args_type = "options: AnalysisOptions", ts_return_type = "Promise<Analysis>")]
    pub fn analyze(&self, options: JsInput) -> AsyncTask<Work<JsOutput>> {
        with_state(&self.shared, move |exp, _| {
            let opts = AnalysisOptions::for_task(options.0, &exp.cfg.task).map_err(|e| e.within("options"))?;
            js(&analyze(exp, &opts)?)
        })
    }

    /// What was meta-learned per plastic layer (rates, feedback, strengths or step sizes): statistics.
    #[napi(ts_return_type = "LearnedStats[]")]
    pub fn learned_stats(&self) -> napi::Result<JsOutput> {
        let exp = self.lock()?;
        guard(|| js(&learned::learned_stats(&exp.learner)?))
    }

    /// The learned arrays by name.
    #[napi]
    pub fn learned_arrays(&self) -> napi::Result<Vec<NamedTensor>> {
        let exp = self.lock()?;
        guard(|| {
            Ok(learned::learned_host(&exp.learner)?
                .into_iter()
                .map(|(name, t)| NamedTensor { name, tensor: host_to_js(t) })
                .collect())
        })
    }

    /// Writes the learned arrays to a safetensors file.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn export_learned(&self, path: String) -> AsyncTask<Work<()>> {
        with_state(&self.shared, move |exp, _| learned::export_safetensors(&exp.learner, &PathBuf::from(path)))
    }

    /// One meta-step on episodes supplied from JS (any task); resolves to the step record.
    #[napi(ts_return_type = "Promise<StepRecord>")]
    pub fn meta_step(&self, episodes: Vec<EpisodeData>) -> AsyncTask<Work<JsOutput>> {
        with_state(&self.shared, move |exp, _| {
            let eps = to_episodes(&episodes, exp.learner.is_classification())?;
            js(&exp.step_on(&eps)?)
        })
    }

    /// Runs each episode's inner loop (no meta-gradient) and scores its query set.
    #[napi(ts_return_type = "Promise<EpisodeResult>")]
    pub fn run_episodes(&self, episodes: Vec<EpisodeData>) -> AsyncTask<Work<EpisodeResult>> {
        with_state(&self.shared, move |exp, _| {
            let eps = to_episodes(&episodes, exp.learner.is_classification())?;
            if eps.is_empty() {
                return Err(Error::config("episodes", "at least one episode is required"));
            }
            let batch = stack(&exp.learner, &eps)?;
            let scores = exp.learner.run_episodes(&batch)?;
            Ok(EpisodeResult {
                query_loss: scores.loss,
                query_accuracy: scores.accuracy,
                predictions: host_to_js(metaplastic_core::tensor_io::HostTensor::from_tensor(&scores.predictions)?),
            })
        })
    }

    /// The parameters: { name, shape, group, trainable } each.
    #[napi(ts_return_type = "ParamInfo[]")]
    pub fn params(&self) -> napi::Result<JsOutput> {
        let exp = self.lock()?;
        guard(|| js(&exp.learner.params.infos()))
    }

    #[napi]
    pub fn param(&self, name: String) -> napi::Result<TensorData> {
        let exp = self.lock()?;
        guard(|| Ok(host_to_js(exp.learner.params.read(&name)?)))
    }

    #[napi]
    pub fn set_param(&self, name: String, value: TensorData) -> napi::Result<()> {
        let mut exp = self.lock()?;
        guard(|| {
            let h = host_from_js(&value)?;
            h.check_finite(&name)?;
            let t = h.to_tensor(exp.learner.device)?.f_to_kind(exp.learner.kind)?;
            exp.learner.params.write(&name, &t)
        })
    }
}

/// A learned array and its name.
#[napi(object)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: TensorData,
}

/// The scores of episodes run without meta-gradients.
#[napi(object)]
pub struct EpisodeResult {
    pub query_loss: Vec<f64>,
    pub query_accuracy: Option<Vec<f64>>,
    /// Query predictions [E, Q, out].
    pub predictions: TensorData,
}
