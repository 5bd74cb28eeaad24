//! An experiment: a learner, a task to meta-train it on, and the meta-optimizer state, stepped one
//! meta-batch at a time. All randomness comes from seeded streams, so a run is reproducible and a
//! checkpoint (checkpoint.rs) resumes it exactly.
use crate::config::LearnerConfig;
use crate::distributed::{GroupSettings, ProcessGroup};
use crate::episode::{Episode, EpisodeSampler};
use crate::learner::{EpisodeBatch, Learner};
use crate::meta::{Adam, MetaStepReport};
use crate::meta::{EXPLODE_MIN, EXPLODE_WINDOW};
use crate::rng::Rng;
use crate::tasks::{
    EpisodeConfig, ImageFolderDataset, ImageFolderOptions, OmniglotDataset, OmniglotOptions, OmniglotSplit, Order,
    SineConfig, SineTask,
};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::Tensor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum TaskConfig {
    /// Incremental sine regression (docs/method.md §5.1).
    Sine {
        /// Sizes and ranges of the task.
        #[serde(default)]
        sine: SineConfig,
        /// Order of the meta-training lifetimes' streams.
        #[serde(default)]
        order: Order,
    },
    /// Omniglot: meta-train on the background set, evaluate on the evaluation set (docs/method.md §5.2).
    Omniglot {
        /// Where the data is and how images are prepared.
        #[serde(default)]
        data: OmniglotOptions,
        /// How meta-training episodes are drawn.
        #[serde(default)]
        episode: EpisodeConfig,
    },
    /// Episodes come from the caller (`Experiment::step_on`); there is nothing to sample or evaluate.
    Custom {},
    /// Any root/class/image folder (e.g. Mini-ImageNet); `test` is the evaluation folder (default: `data`).
    ImageFolder {
        data: ImageFolderOptions,
        #[serde(default)]
        test: Option<ImageFolderOptions>,
        #[serde(default)]
        episode: EpisodeConfig,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The run's name, as results and figures show it.
    #[serde(default = "default_name")]
    pub name: String,
    /// The learner to meta-train.
    pub learner: LearnerConfig,
    /// Where episodes come from, and the evaluation protocol.
    pub task: TaskConfig,
    /// Episodes per meta-step (the reference code uses 1).
    #[serde(default = "one")]
    pub meta_batch: usize,
    /// Seed of the task streams (the learner's initial weights use `learner.seed`).
    #[serde(default)]
    pub seed: u64,
}

fn default_name() -> String {
    "experiment".into()
}
fn one() -> usize {
    1
}

impl ExperimentConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_value(
            serde_json::from_str(text).map_err(|e| Error::config("config", format!("not valid JSON: {e}")))?,
        )
    }

    /// Reads and validates a configuration, naming the path of a bad field.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        let cfg: ExperimentConfig = crate::config::from_value(value)?;
        if cfg.meta_batch < 1 {
            return Err(Error::config("metaBatch", "must be >= 1"));
        }
        cfg.learner.validate().map_err(|e| e.within("learner"))?;
        crate::budget::check_experiment(&cfg)?;
        Ok(cfg)
    }
}

/// The task as loaded: the meta-training sampler's source and what evaluation needs.
pub enum LoadedTask {
    Custom,
    Sine(SineTask, Order),
    Images { train: crate::tasks::ImageEpisodeSampler, test: std::sync::Arc<crate::tasks::ImageStore> },
}

impl LoadedTask {
    pub fn load(cfg: &TaskConfig, seed: u64) -> Result<Self> {
        Ok(match cfg {
            TaskConfig::Custom {} => LoadedTask::Custom,
            TaskConfig::Sine { sine, order } => {
                LoadedTask::Sine(SineTask::new(sine.clone(), seed).map_err(|e| e.within("task.sine"))?, *order)
            }
            TaskConfig::Omniglot { data, episode } => {
                let train = OmniglotDataset::load(OmniglotSplit::Background, data)?;
                let sampler = train.episode_sampler(episode.clone()).map_err(|e| e.within("task.episode"))?;
                let test = OmniglotDataset::load(OmniglotSplit::Evaluation, data)?;
                LoadedTask::Images { train: sampler, test: test.store().clone() }
            }
            TaskConfig::ImageFolder { data, test, episode } => {
                let train = ImageFolderDataset::load(data)?;
                let sampler = train.episode_sampler(episode.clone()).map_err(|e| e.within("task.episode"))?;
                let test = match test {
                    Some(t) => ImageFolderDataset::load(t)?.store().clone(),
                    None => train.store().clone(),
                };
                LoadedTask::Images { train: sampler, test }
            }
        })
    }

    /// Checks that the learner fits the task's examples, targets and labels, naming the fields.
    pub fn check_learner(&self, learner: &LearnerConfig) -> Result<()> {
        let (shape, classification, need_outputs) = match self {
            LoadedTask::Custom => return Ok(()),
            LoadedTask::Sine(task, _) => (vec![task.config().input_size() as i64], false, 1),
            LoadedTask::Images { train, test } => {
                let c = train.config();
                let labels = match c.labels {
                    crate::tasks::LabelMode::ClassId => train.store().num_classes().max(test.num_classes()),
                    crate::tasks::LabelMode::Permuted => c.label_space.unwrap_or(c.ways),
                };
                (test.image_shape().to_vec(), true, labels as i64)
            }
        };
        if learner.input_shape != shape {
            return Err(Error::config(
                "learner.inputShape",
                format!("is {:?} but the task's examples have shape {shape:?}", learner.input_shape),
            ));
        }
        let is_cls = learner.task == crate::config::TaskKind::Classification;
        if is_cls != classification {
            return Err(Error::config(
                "learner.task",
                format!("the task is {}", if classification { "classification" } else { "regression" }),
            ));
        }
        let outputs = learner.outputs();
        if (classification && outputs < need_outputs) || (!classification && outputs != need_outputs) {
            return Err(Error::config(
                "learner.layers",
                format!(
                    "the output layer has {outputs} units but the task needs {}{need_outputs}",
                    if classification { "at least " } else { "" }
                ),
            ));
        }
        Ok(())
    }

    fn sample(&mut self, rng: &mut Rng) -> Result<Episode> {
        match self {
            LoadedTask::Custom => {
                Err(Error::config("task", "a custom task has no sampler: supply episodes with metaStep"))
            }
            LoadedTask::Sine(task, order) => task.meta_train_sampler(*order).sample(rng),
            LoadedTask::Images { train, .. } => train.sample(rng),
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// Meta-steps taken, this one included.
    pub step: u64,
    #[serde(flatten)]
    pub report: MetaStepReport,
    /// Skipped (non-finite) steps so far.
    pub skipped_total: u64,
    /// Exploded lifetimes (finite meta-loss above the threshold, skipped) so far.
    pub exploded_total: u64,
    /// Wall-clock time of this step.
    pub seconds: f64,
}

pub struct Experiment {
    pub cfg: ExperimentConfig,
    pub learner: Learner,
    pub adam: Adam,
    pub task: LoadedTask,
    /// The meta-training task stream.
    pub rng: Rng,
    /// Meta-steps taken (skipped ones included).
    pub step: u64,
    pub skipped: u64,
    /// Steps skipped as exploded lifetimes.
    pub exploded: u64,
    /// Skipped steps (non-finite or exploded) in a row, up to the last one.
    pub consecutive_skips: u32,
    /// Meta-losses of the last applied steps (at most `EXPLODE_WINDOW`), for the exploded-lifetime check.
    pub recent_losses: std::collections::VecDeque<f64>,
    /// Processes that meta-trained this state (1, or the size of the data-parallel group).
    pub world_size: u32,
    /// The data-parallel group this experiment trains in, once joined (`join`).
    pub group: Option<ProcessGroup>,
}

/// Stacks episodes into one batch on the learner's device.
pub fn stack(learner: &Learner, episodes: &[Episode]) -> Result<EpisodeBatch> {
    let st = |f: &dyn Fn(&Episode) -> &Tensor| -> Result<Tensor> {
        let parts: Vec<&Tensor> = episodes.iter().map(f).collect();
        let first = parts[0].size();
        if let Some(bad) = parts.iter().position(|t| t.size() != first) {
            return Err(Error::Shape(format!(
                "episode {bad} has shape {:?} but episode 0 has {first:?}; episodes of one batch must match",
                parts[bad].size()
            )));
        }
        Ok(Tensor::f_stack(&parts, 0)?)
    };
    for ep in episodes {
        ep.validate(&learner.cfg.input_shape, learner.is_classification(), learner.spec.outputs())?;
    }
    learner.prepare(
        &st(&|e| &e.support_x)?,
        &st(&|e| &e.support_y)?,
        &st(&|e| &e.query_x)?,
        &st(&|e| &e.query_y)?,
        episodes.iter().map(|e| e.classes.clone()).collect(),
    )
}

impl Experiment {
    pub fn new(cfg: ExperimentConfig) -> Result<Self> {
        let learner = Learner::new(cfg.learner.clone()).map_err(|e| e.within("learner"))?;
        let task = LoadedTask::load(&cfg.task, cfg.seed)?;
        task.check_learner(&cfg.learner)?;
        let rng = crate::rng::stream(cfg.seed, "meta-train");
        Ok(Self {
            cfg,
            learner,
            adam: Adam::default(),
            task,
            rng,
            step: 0,
            skipped: 0,
            exploded: 0,
            consecutive_skips: 0,
            recent_losses: Default::default(),
            world_size: 1,
            group: None,
        })
    }

    /// One meta-step on a fresh meta-batch of episodes from the task. In a data-parallel group every rank
    /// draws the whole meta-batch from the shared stream and trains on its own contiguous share, so the
    /// ranks' episodes together are exactly those of a single process with the same seed.
    pub fn train_step(&mut self) -> Result<StepRecord> {
        let mut episodes =
            (0..self.cfg.meta_batch).map(|_| self.task.sample(&mut self.rng)).collect::<Result<Vec<_>>>()?;
        let Some(group) = &self.group else {
            if self.world_size != 1 {
                return Err(self.world_size_mismatch(1));
            }
            return self.step_on(&episodes);
        };
        let share = episodes.len() / group.world() as usize;
        let first = share * group.rank() as usize;
        episodes.truncate(first + share);
        episodes.drain(..first);
        self.learner.episode_share = Some((first as i64, self.cfg.meta_batch as i64));
        let record = self.step_on(&episodes);
        self.learner.episode_share = None;
        record
    }

    fn world_size_mismatch(&self, now: u32) -> Error {
        Error::config(
            "worldSize",
            format!(
                "this run was meta-trained by {} process(es) up to meta-step {} but now runs with {now}; resume it with the same number of processes (--nproc {}), so that it continues exactly as it started",
                self.world_size, self.step, self.world_size
            ),
        )
    }

    /// Joins a data-parallel group (rendezvous with every rank) and checks that all ranks start from the
    /// same state: configuration, meta-step, parameters, optimizer moments and task streams.
    pub fn join(&mut self, settings: &GroupSettings) -> Result<()> {
        settings.validate()?;
        let world = settings.world_size;
        if !self.cfg.meta_batch.is_multiple_of(world as usize) {
            return Err(Error::config(
                "metaBatch",
                format!(
                    "{} episodes cannot be split evenly over {world} processes; use a multiple of {world}",
                    self.cfg.meta_batch
                ),
            ));
        }
        if self.step > 0 && self.world_size != world {
            return Err(self.world_size_mismatch(world));
        }
        self.group = None;
        let group = ProcessGroup::join(settings)?;
        let values = self.fingerprint()?;
        let mine = Tensor::f_from_slice(&values)?;
        let mut reference = Tensor::f_from_slice(&values)?;
        group.broadcast(&mut reference, 0)?;
        let differs = mine.f_ne_tensor(&reference)?.f_any()?.f_double_value(&[])? != 0.0;
        let mut flags = Tensor::f_zeros([world as i64], (tch::Kind::Double, tch::Device::Cpu))?;
        if differs {
            let _ = flags.f_narrow(0, settings.rank as i64, 1)?.f_fill_(1.0)?;
        }
        group.all_reduce_sum(&mut flags, self.step)?;
        let flags: Vec<f64> = Vec::<f64>::try_from(&flags)?;
        let bad: Vec<String> =
            flags.iter().enumerate().filter(|(_, &f)| f != 0.0).map(|(r, _)| r.to_string()).collect();
        if !bad.is_empty() {
            return Err(Error::Distributed(format!(
                "rank(s) {} start from another state than rank 0 (configuration, meta-step, parameters, optimizer or task streams differ); every rank must start from the same configuration and seed, or resume the same checkpoint (a --out folder that every rank reads)",
                bad.join(", ")
            )));
        }
        self.world_size = world;
        self.group = Some(group);
        Ok(())
    }

    /// A summary of the state that every rank of a group must share, as a float64 vector.
    fn fingerprint(&self) -> Result<Vec<f64>> {
        use sha2::{Digest, Sha256};
        let text = serde_json::to_string(&(&self.cfg, &self.rng, &self.learner.rng))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let digest = Sha256::digest(text.as_bytes());
        // 48 bits of the digest are exact in a float64.
        let hash = u64::from_le_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], 0, 0]) as f64;
        let mut values =
            vec![hash, self.step as f64, self.skipped as f64, self.exploded as f64, self.adam.steps as f64];
        tch::no_grad(|| -> Result<()> {
            for (i, p) in self.learner.params.iter().enumerate() {
                let moments = [
                    Some(&p.tensor),
                    self.adam.m.get(i).and_then(|m| m.as_ref()),
                    self.adam.v.get(i).and_then(|v| v.as_ref()),
                ];
                for t in moments.into_iter().flatten() {
                    let t = t.f_to_kind(tch::Kind::Double)?;
                    values.push(t.f_sum(None::<tch::Kind>)?.f_double_value(&[])?);
                    values.push(t.f_abs()?.f_sum(None::<tch::Kind>)?.f_double_value(&[])?);
                }
            }
            Ok(())
        })?;
        Ok(values)
    }

    /// One meta-step on the given episodes (from the task or from elsewhere).
    pub fn step_on(&mut self, episodes: &[Episode]) -> Result<StepRecord> {
        if episodes.is_empty() {
            return Err(Error::config("episodes", "at least one episode is required"));
        }
        let start = Instant::now();
        let batch = stack(&self.learner, episodes)?;
        if let Some(n) = self.learner.cfg.meta.reset_adam_every {
            if self.step > 0 && self.step.is_multiple_of(n) {
                self.adam = Adam::default(); // as the reference's relaunch every n steps
            }
        }
        let explode_above = self.explode_threshold();
        let group = self.group.as_ref().map(|g| (g, self.step + 1));
        let report = self.adam.step_guarded(&mut self.learner, &batch, explode_above, group)?;
        self.step += 1;
        if report.skipped || report.exploded {
            if report.exploded {
                self.exploded += 1;
            } else {
                self.skipped += 1;
            }
            self.consecutive_skips += 1;
            let limit = self.learner.cfg.meta.max_consecutive_skips;
            if self.consecutive_skips >= limit {
                return Err(Error::Data(format!(
                    "meta-training diverged: the last {limit} meta-steps (up to step {}) were all non-finite or exploded and skipped, so nothing can change; \
                     resume from an earlier checkpoint with smaller plasticity rates or meta learning rates (learner.plasticity.init, learner.meta.lr), \
                     or clipping (learner.meta.clipNorm)",
                    self.step
                )));
            }
        } else {
            self.consecutive_skips = 0;
            if self.recent_losses.len() == EXPLODE_WINDOW {
                self.recent_losses.pop_front();
            }
            self.recent_losses.push_back(report.meta_loss);
        }
        Ok(StepRecord {
            step: self.step,
            report,
            skipped_total: self.skipped,
            exploded_total: self.exploded,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// `meta.explodeFactor` × the median of the recent applied meta-losses (none until `EXPLODE_MIN` of them).
    pub fn explode_threshold(&self) -> Option<f64> {
        let factor = self.learner.cfg.meta.explode_factor?;
        if self.recent_losses.len() < EXPLODE_MIN {
            return None;
        }
        let mut v: Vec<f64> = self.recent_losses.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) };
        Some(factor * median)
    }

    /// Up to `n` meta-steps; stops early when `stop` is set: between steps, or inside one when the same
    /// flag is the learner's `cancel` (then the interrupted step changes nothing, so a resume repeats it).
    pub fn train(&mut self, n: u64, stop: &AtomicBool) -> Result<Vec<StepRecord>> {
        let mut out = Vec::new();
        for _ in 0..n {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let streams = (self.rng.clone(), self.learner.rng.clone());
            match self.train_step() {
                Ok(r) => out.push(r),
                Err(Error::Cancelled) => {
                    (self.rng, self.learner.rng) = streams;
                    break;
                }
                // The group lost a rank: this step changed nothing, so the state may still be saved.
                Err(e @ Error::Distributed(_)) => {
                    (self.rng, self.learner.rng) = streams;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
