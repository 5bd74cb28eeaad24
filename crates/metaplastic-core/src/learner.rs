//! A learner: the network's meta-parameters, its inner rule, and the operations on episodes
//! (adapt over a stream, predict, query loss). Meta-training lives in meta.rs.
use crate::config::{LearnerConfig, OutputReset, PlasticInit, TaskKind};
use crate::inner::{FastWeights, InnerLoop, StepMode};
use crate::net::functional;
use crate::net::spec::NetSpec;
use crate::params::{Group, ParamStore};
use crate::rng::{normal_vec, Rng};
use crate::rules::local::LocalRule;
use crate::rules::sgd::SgdRule;
use crate::rules::{from_values, full, InnerRule};
use crate::{loss, Error, Result};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

pub struct Learner {
    pub cfg: LearnerConfig,
    pub spec: NetSpec,
    pub params: ParamStore,
    pub device: Device,
    pub kind: Kind,
    weights: Vec<usize>,
    biases: Vec<usize>,
    rule: Box<dyn InnerRule>,
    /// Per-episode randomness (re-initialised plastic weights).
    pub rng: Rng,
    /// Cancellation flag checked by the inner loop before each step (see `InnerLoop::cancel`).
    pub cancel: Option<Arc<AtomicBool>>,
    /// In data-parallel training: this rank's episodes are `first .. first + E` of a meta-batch of
    /// `total`, so per-episode draws are those a single process would make for the same episodes.
    pub episode_share: Option<(i64, i64)>,
}

/// A batch of E episodes on the learner's device. Shapes as in episode.rs with a leading E.
pub struct EpisodeBatch {
    pub support_x: Tensor,
    pub support_y: Tensor,
    pub query_x: Tensor,
    pub query_y: Tensor,
    pub classes: Vec<Vec<i64>>,
}

/// What running episodes without meta-gradients gives: query predictions [E, Q, out], loss and accuracy per episode.
pub struct EpisodeScores {
    pub predictions: Tensor,
    pub loss: Vec<f64>,
    pub accuracy: Option<Vec<f64>>,
}

/// Copies a tensor into fresh storage (never an alias of a parameter).
fn materialize(t: &Tensor) -> Result<Tensor> {
    let mut out = Tensor::f_empty(t.size(), (t.kind(), t.device()))?;
    tch::no_grad(|| out.f_copy_(t))?;
    Ok(out)
}

impl Learner {
    pub fn new(cfg: LearnerConfig) -> Result<Self> {
        cfg.validate()?;
        let spec = NetSpec::new(&cfg.input_shape, &cfg.layers, cfg.rln)?;
        let device = crate::runtime::parse_device(&cfg.device)?;
        let kind = cfg.dtype.kind();
        let mut rng = crate::rng::stream(cfg.seed, "init");
        let mut params = ParamStore::default();
        let on = (kind, device);

        let mut weights = Vec::new();
        let mut biases = Vec::new();
        let reinit = cfg.plastic_init == PlasticInit::Reinit;
        for (l, layer) in spec.layers.iter().enumerate() {
            let shape = layer.weight_shape();
            let n: i64 = shape.iter().product();
            let std = (2.0 / layer.fan_in() as f64).sqrt();
            // Re-initialised plastic weights are drawn per episode, so they are not meta-learned.
            let trainable = !(reinit && l >= spec.rln);
            weights.push(params.add(
                format!("forward.{l}.weight"),
                from_values(normal_vec(&mut rng, n as usize, std), &shape, on)?,
                Group::Forward,
                trainable,
            ));
            biases.push(params.add(
                format!("forward.{l}.bias"),
                full(0.0, &[layer.units()], on)?,
                Group::Forward,
                true,
            ));
        }

        let rule = crate::rules::build(&cfg, &spec, &mut params, &mut rng, on)?;
        let rng = crate::rng::stream(cfg.seed, "episodes");
        Ok(Self { cfg, spec, params, device, kind, weights, biases, rule, rng, cancel: None, episode_share: None })
    }

    /// Whether the inner rule is gradient descent (its meta-test step size is then chosen on validation).
    pub fn is_gradient_rule(&self) -> bool {
        !self.cfg.rule.is_local()
    }

    /// The local rule (Oja, Hebb), if this learner has one.
    pub fn local_rule(&self) -> Option<&LocalRule> {
        self.rule.as_local()
    }

    /// Bounds the local rule's rates at `bound` (None: unbounded) and returns the bound it replaces; the
    /// meta-test's rate bound, chosen on validation (eval.rs). An error for a learner without a local rule.
    pub fn set_rate_bound(&mut self, bound: Option<f64>) -> Result<Option<f64>> {
        let rule =
            self.rule.as_local_mut().ok_or_else(|| Error::config("rateBounds", "applies to local-rule learners"))?;
        Ok(std::mem::replace(&mut rule.max_rate, bound))
    }

    /// OML's SGD rule, if this learner has one.
    pub fn sgd_rule(&self) -> Option<&SgdRule> {
        self.rule.as_sgd()
    }

    pub fn is_classification(&self) -> bool {
        self.cfg.task == TaskKind::Classification
    }

    pub fn inner_loop(&self) -> InnerLoop<'_> {
        InnerLoop {
            cfg: &self.cfg,
            params: &self.params,
            rule: self.rule.as_ref(),
            step_scale: 1.0,
            cancel: self.cancel.as_deref(),
        }
    }

    fn front_params(&self) -> (Vec<Tensor>, Vec<Tensor>) {
        let w = self.weights.iter().map(|&i| self.params.at(i).shallow_clone()).collect();
        let b = self.biases.iter().map(|&i| self.params.at(i).shallow_clone()).collect();
        (w, b)
    }

    /// Features for the first plastic layer: x [..., ...input] → [..., F], running the frozen front.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.features_with(x, true)
    }

    /// Like `features`; without gradients the front runs in chunks of examples, so evaluating hundreds
    /// of classes at 84×84 does not hold every conv activation of every image at once.
    pub fn features_with(&self, x: &Tensor, differentiable: bool) -> Result<Tensor> {
        const CHUNK: i64 = 256;
        let in_dims = self.cfg.input_shape.len();
        let size = x.size();
        if size.len() < in_dims || size[size.len() - in_dims..] != self.cfg.input_shape[..] {
            return Err(Error::Shape(format!(
                "inputs have shape {size:?}, expected [..., {:?}]",
                self.cfg.input_shape
            )));
        }
        let mut flat_shape = vec![-1i64];
        flat_shape.extend_from_slice(&self.cfg.input_shape);
        let flat = x.f_reshape(&flat_shape)?;
        let (w, b) = self.front_params();
        let front = |part: &Tensor| functional::front(&self.spec, &w, &b, part);
        let n = flat.size()[0];
        let f = if differentiable || self.spec.rln == 0 {
            front(&flat)?
        } else if n <= CHUNK {
            tch::no_grad(|| front(&flat))?
        } else {
            let parts = tch::no_grad(|| {
                (0..n)
                    .step_by(CHUNK as usize)
                    .map(|s| front(&flat.f_narrow(0, s, CHUNK.min(n - s))?))
                    .collect::<Result<Vec<_>>>()
            })?;
            Tensor::f_cat(&parts, 0)?
        };
        let mut out_shape = size[..size.len() - in_dims].to_vec();
        out_shape.push(f.size()[1]);
        Ok(f.f_reshape(&out_shape)?)
    }

    /// Fast weights at the start of E episodes: the meta-learned initial weights, with output rows reset
    /// or plastic weights re-drawn as configured. `differentiable` keeps them in the meta-graph.
    pub fn start(&mut self, episodes: i64, classes: &[Vec<i64>], differentiable: bool) -> Result<FastWeights> {
        let mut w = Vec::new();
        let mut b = Vec::new();
        let last = self.spec.len() - 1;
        for l in self.spec.plastic() {
            let meta_w = self.params.at(self.weights[l]);
            let meta_b = self.params.at(self.biases[l]);
            let ws = meta_w.size();
            let mut wl = if self.cfg.plastic_init == PlasticInit::Reinit {
                let per = (ws[0] * ws[1]) as usize;
                let (first, total) = self.episode_share.unwrap_or((0, episodes));
                let std = (2.0 / ws[1] as f64).sqrt();
                let all = normal_vec(&mut self.rng, total as usize * per, std);
                let v = &all[first as usize * per..(first + episodes) as usize * per];
                Tensor::f_from_slice(v)?
                    .f_reshape([episodes, ws[0], ws[1]])?
                    .f_to_kind(self.kind)?
                    .f_to_device(self.device)?
            } else {
                meta_w.f_unsqueeze(0)?.f_expand([episodes, ws[0], ws[1]], false)?
            };
            let mut bl = meta_b.f_unsqueeze(0)?.f_expand([episodes, ws[0]], false)?;
            if l == last && self.cfg.output_reset != OutputReset::None {
                let keep = self.output_keep_mask(episodes, ws[0], classes)?;
                wl = wl.f_mul(&keep.f_unsqueeze(2)?)?;
                bl = bl.f_mul(&keep)?;
            }
            if !differentiable {
                wl = materialize(&wl.f_detach()?)?;
                bl = materialize(&bl.f_detach()?)?;
            }
            w.push(wl);
            b.push(bl);
        }
        Ok(FastWeights { w, b })
    }

    /// [E, out]: 0 on the output rows to reset, 1 elsewhere.
    fn output_keep_mask(&self, episodes: i64, outputs: i64, classes: &[Vec<i64>]) -> Result<Tensor> {
        let mut keep = vec![1f32; (episodes * outputs) as usize];
        for e in 0..episodes as usize {
            match self.cfg.output_reset {
                OutputReset::All => keep[e * outputs as usize..(e + 1) * outputs as usize].fill(0.0),
                OutputReset::EpisodeClasses => {
                    let cls = classes.get(e).ok_or_else(|| {
                        Error::Data(format!("outputReset 'episodeClasses' needs the class list of episode {e}"))
                    })?;
                    for &c in cls {
                        if c < 0 || c >= outputs {
                            return Err(Error::Data(format!("episode {e} names class {c}, outside [0, {outputs})")));
                        }
                        keep[e * outputs as usize + c as usize] = 0.0;
                    }
                }
                OutputReset::None => {}
            }
        }
        Ok(Tensor::f_from_slice(&keep)?
            .f_reshape([episodes, outputs])?
            .f_to_kind(self.kind)?
            .f_to_device(self.device)?)
    }

    /// Runs the inner loop over a support stream x [E, T, B, ...], y [E, T, B, ...].
    pub fn adapt(
        &self,
        fast: FastWeights,
        support_x: &Tensor,
        support_y: &Tensor,
        mode: impl Fn(usize) -> StepMode,
    ) -> Result<FastWeights> {
        let features = self.features(support_x)?;
        self.inner_loop().run(fast, &features, support_y, mode)
    }

    /// `adapt` without any meta-gradient (evaluation): the front runs without gradients, in chunks.
    pub fn adapt_frozen(&self, fast: FastWeights, support_x: &Tensor, support_y: &Tensor) -> Result<FastWeights> {
        let features = self.features_with(support_x, false)?;
        self.inner_loop().run(fast, &features, support_y, |_| StepMode::Constant)
    }

    /// Predictions with fast weights: x [E, Q, ...input] → [E, Q, out].
    pub fn predict(&self, fast: &FastWeights, x: &Tensor) -> Result<Tensor> {
        self.predict_with(fast, x, true)
    }

    /// `predict`, with the front run without gradients (in chunks) when `differentiable` is false.
    pub fn predict_with(&self, fast: &FastWeights, x: &Tensor, differentiable: bool) -> Result<Tensor> {
        let f = self.features_with(x, differentiable)?;
        Ok(functional::tail(&f, &fast.w, &fast.b)?.output().shallow_clone())
    }

    /// Mean task loss of each episode on (x, y): [E].
    pub fn loss(&self, fast: &FastWeights, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        loss::per_episode(&self.cfg, &self.predict(fast, x)?, y)
    }

    /// Moves and converts an episode batch to this learner's device and dtype (labels as int64).
    pub fn prepare(
        &self,
        support_x: &Tensor,
        support_y: &Tensor,
        query_x: &Tensor,
        query_y: &Tensor,
        classes: Vec<Vec<i64>>,
    ) -> Result<EpisodeBatch> {
        let y_kind = if self.is_classification() { Kind::Int64 } else { self.kind };
        Ok(EpisodeBatch {
            support_x: support_x.f_to_device(self.device)?.f_to_kind(self.kind)?,
            support_y: support_y.f_to_device(self.device)?.f_to_kind(y_kind)?,
            query_x: query_x.f_to_device(self.device)?.f_to_kind(self.kind)?,
            query_y: query_y.f_to_device(self.device)?.f_to_kind(y_kind)?,
            classes,
        })
    }

    /// Runs E episodes without meta-gradients: adapt on the support stream, predict and score the query set.
    pub fn run_episodes(&mut self, batch: &EpisodeBatch) -> Result<EpisodeScores> {
        tch::no_grad(|| {
            let e = batch.support_x.size()[0];
            let fast = self.start(e, &batch.classes, false)?;
            let fast = self.adapt_frozen(fast, &batch.support_x, &batch.support_y)?;
            let predictions = self.predict_with(&fast, &batch.query_x, false)?;
            let l = loss::per_episode(&self.cfg, &predictions, &batch.query_y)?;
            let loss = Vec::<f64>::try_from(&l.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?)?;
            let accuracy = if self.is_classification() {
                Some(Vec::<f64>::try_from(&loss::accuracy(&predictions, &batch.query_y)?.f_to_device(Device::Cpu)?)?)
            } else {
                None
            };
            Ok(EpisodeScores { predictions, loss, accuracy })
        })
    }

    /// Query loss [E] and accuracy [E] (classification) of E episodes, without meta-gradients.
    pub fn evaluate(&mut self, batch: &EpisodeBatch) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        let s = self.run_episodes(batch)?;
        Ok((s.loss, s.accuracy))
    }
}
