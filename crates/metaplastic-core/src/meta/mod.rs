//! The outer loop: meta-gradient of the query loss after the whole inner trajectory, Adam with one
//! learning rate per parameter group (0 freezes a group), optional clipping, and the non-finite policy.
pub(crate) mod config;

pub use config::{Backward, LearningRates, MetaConfig, MetaGradient, NonFinitePolicy, EXPLODE_MIN, EXPLODE_WINDOW};

use crate::distributed::ProcessGroup;
use crate::inner::step_mode;
use crate::learner::{EpisodeBatch, Learner};
use crate::params::Group;
use crate::{Error, Result};
use serde::Serialize;
use tch::{Kind, Tensor};

/// Adam's moments for each parameter (by store index), created on first use.
#[derive(Default)]
pub struct Adam {
    pub m: Vec<Option<Tensor>>,
    pub v: Vec<Option<Tensor>>,
    /// Number of applied (not skipped) steps: drives bias correction.
    pub steps: i64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetaStepReport {
    /// The query loss averaged over the meta-batch; null when it was not finite (the step was then skipped).
    #[schemars(with = "Option<f64>")]
    pub meta_loss: f64,
    /// Global gradient norm before clipping; null when not finite.
    #[schemars(with = "Option<f64>")]
    pub grad_norm: f64,
    /// Skipped because the meta-loss or a gradient was not finite.
    pub skipped: bool,
    /// Skipped because the finite meta-loss exceeded the exploded-lifetime threshold.
    pub exploded: bool,
    pub clipped: bool,
}

/// Whether the meta-gradient of this learner goes through the hand-derived reverse pass.
pub fn uses_adjoint(learner: &Learner) -> bool {
    match learner.cfg.meta.backward {
        Backward::Autograd => false,
        Backward::Auto | Backward::Adjoint => crate::adjoint::applies(learner),
    }
}

/// Query loss (mean over episodes) and the gradient of every trainable parameter (index, grad).
pub fn meta_gradient(learner: &mut Learner, batch: &EpisodeBatch) -> Result<(f64, Vec<(usize, Tensor)>)> {
    let steps = batch.support_x.size()[1] as usize;
    let gradient = learner.cfg.meta.gradient;
    if learner.cfg.meta.backward == Backward::Adjoint && !uses_adjoint(learner) {
        return Err(Error::config(
            "meta.backward",
            "'adjoint' does not cover this learner's rule options; use 'auto' or 'autograd'",
        ));
    }
    if uses_adjoint(learner) {
        let opts = crate::adjoint::AdjointOptions {
            interval: learner.cfg.meta.checkpoint_every,
            unstep: Some(learner.cfg.meta.run_backwards),
            ..Default::default()
        };
        return crate::adjoint::meta_gradient(learner, batch, opts, |t| step_mode(gradient, t, steps));
    }
    autograd_meta_gradient(learner, batch)
}

/// The meta-gradient by autograd through the unrolled lifetime (the reference for every fast path).
pub fn autograd_meta_gradient(learner: &mut Learner, batch: &EpisodeBatch) -> Result<(f64, Vec<(usize, Tensor)>)> {
    let e = batch.support_x.size()[0];
    let steps = batch.support_x.size()[1] as usize;
    let gradient = learner.cfg.meta.gradient;
    let fast = learner.start(e, &batch.classes, true)?;
    let fast = learner.adapt(fast, &batch.support_x, &batch.support_y, |t| step_mode(gradient, t, steps))?;
    let loss = learner.loss(&fast, &batch.query_x, &batch.query_y)?.f_mean(None::<Kind>)?;
    let trainable: Vec<usize> =
        learner.params.iter().enumerate().filter(|(_, p)| p.trainable).map(|(i, _)| i).collect();
    let inputs: Vec<Tensor> = trainable.iter().map(|&i| learner.params.at(i).shallow_clone()).collect();
    let grads = Tensor::f_run_backward(&[&loss], &inputs, false, false)?;
    let mut out = Vec::with_capacity(trainable.len());
    for (k, g) in grads.into_iter().enumerate() {
        let g = if g.defined() { g } else { inputs[k].f_zeros_like()? };
        out.push((trainable[k], g));
    }
    Ok((loss.f_double_value(&[])?, out))
}

fn group_lr(learner: &Learner, group: Group) -> f64 {
    let lr = &learner.cfg.meta.lr;
    match group {
        Group::Forward => lr.forward,
        Group::Feedback => lr.feedback,
        Group::Plasticity => lr.plasticity,
        Group::Strength => lr.strength,
    }
}

impl Adam {
    /// One meta-training step on a batch of episodes.
    pub fn step(&mut self, learner: &mut Learner, batch: &EpisodeBatch) -> Result<MetaStepReport> {
        self.step_guarded(learner, batch, None, None)
    }

    /// One meta-training step; a finite meta-loss above `explode_above` is an exploded lifetime: nothing is
    /// applied and the report says `exploded`. With a process group, the meta-loss and meta-gradient are
    /// the means over all ranks (each holding its share of the meta-batch) before any decision is made,
    /// so every rank skips, clips and updates alike; `step` names the collective.
    pub fn step_guarded(
        &mut self,
        learner: &mut Learner,
        batch: &EpisodeBatch,
        explode_above: Option<f64>,
        group: Option<(&ProcessGroup, u64)>,
    ) -> Result<MetaStepReport> {
        let (mut meta_loss, mut grads) = meta_gradient(learner, batch)?;
        if let Some((group, step)) = group {
            group.mean(&mut meta_loss, &mut grads, step)?;
        }
        let norm_sq = tch::no_grad(|| -> Result<f64> {
            let mut total = Tensor::f_zeros([], (Kind::Double, learner.device))?;
            for (_, g) in &grads {
                total = total.f_add(&g.f_to_kind(Kind::Double)?.f_square()?.f_sum(None::<Kind>)?)?;
            }
            Ok(total.f_double_value(&[])?)
        })?;
        // A NaN or Inf anywhere in a gradient makes its squared norm non-finite.
        let finite = meta_loss.is_finite() && norm_sq.is_finite();
        let grad_norm = norm_sq.sqrt();
        if !finite {
            return match learner.cfg.meta.non_finite {
                NonFinitePolicy::Skip => Ok(MetaStepReport { meta_loss, grad_norm, skipped: true, exploded: false, clipped: false }),
                NonFinitePolicy::Error => Err(Error::Data(format!("non-finite meta-loss ({meta_loss}) or meta-gradient (norm {grad_norm}); nonFinite policy is 'error'"))),
            };
        }
        if explode_above.is_some_and(|limit| meta_loss > limit) {
            return Ok(MetaStepReport { meta_loss, grad_norm, skipped: false, exploded: true, clipped: false });
        }
        let mut clipped = false;
        if let Some(max) = learner.cfg.meta.clip_norm {
            if grad_norm > max {
                let scale = max / (grad_norm + 1e-6);
                for (_, g) in grads.iter_mut() {
                    *g = g.f_mul_scalar(scale)?;
                }
                clipped = true;
            }
        }
        self.apply(learner, &grads)?;
        Ok(MetaStepReport { meta_loss, grad_norm, skipped: false, exploded: false, clipped })
    }

    fn apply(&mut self, learner: &mut Learner, grads: &[(usize, Tensor)]) -> Result<()> {
        let n = learner.params.len();
        self.m.resize_with(n, || None);
        self.v.resize_with(n, || None);
        self.steps += 1;
        let [b1, b2] = learner.cfg.meta.betas;
        let eps = learner.cfg.meta.eps;
        let t = self.steps as i32;
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        // Linear warm-up: the k-th applied step uses k/warmup of every learning rate, up to 1.
        let warmup = learner.cfg.meta.warmup;
        let ramp = if warmup > 0 { (self.steps as f64 / warmup as f64).min(1.0) } else { 1.0 };
        let infos: Vec<Group> = learner.params.iter().map(|p| p.group).collect();
        tch::no_grad(|| -> Result<()> {
            for (i, g) in grads {
                let lr = group_lr(learner, infos[*i]) * ramp;
                if lr == 0.0 {
                    continue; // a frozen group: no update, no moment state
                }
                let m = self.m[*i].get_or_insert_with(|| g.zeros_like());
                let v = self.v[*i].get_or_insert_with(|| g.zeros_like());
                let _ = m.f_mul_scalar_(b1)?.f_add_(&g.f_mul_scalar(1.0 - b1)?)?;
                let _ = v.f_mul_scalar_(b2)?.f_add_(&g.f_square()?.f_mul_scalar(1.0 - b2)?)?;
                let denom = v.f_sqrt()?.f_div_scalar(bc2.sqrt())?.f_add_scalar(eps)?;
                let mut p = learner.params.at(*i).shallow_clone();
                let _ = p.f_sub_(&m.f_div(&denom)?.f_mul_scalar(lr / bc1)?)?;
            }
            Ok(())
        })
    }
}
