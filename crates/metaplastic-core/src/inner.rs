//! The differentiable inner loop (one lifetime): the same driver for every rule.
//!
//! How each step enters the meta-gradient is its `StepMode`:
//! - `Full`: everything stays in the graph (second-order; the default for every step);
//! - `FirstOrder`: the update is computed from detached fast weights and activations, so dW_{t+1}/dW_t = I,
//!   while the rule's own meta-parameters (P, B, s, step sizes) still receive gradient through it;
//! - `Constant`: the update is a constant (no meta-gradient at all); used for truncation and evaluation.
use crate::config::LearnerConfig;
use crate::meta::config::MetaGradient;
use crate::net::functional::{tail, TailActivations};
use crate::params::ParamStore;
use crate::rules::{InnerRule, StepInputs, Update};
use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use tch::Tensor;

/// Per-episode fast weights of the plastic layers: w[k] [E, out, in], b[k] [E, out].
pub struct FastWeights {
    pub w: Vec<Tensor>,
    pub b: Vec<Tensor>,
}

impl FastWeights {
    pub fn detached(&self, requires_grad: bool) -> Result<FastWeights> {
        let d = |t: &Tensor| -> Result<Tensor> { Ok(t.f_detach()?.set_requires_grad(requires_grad)) };
        Ok(FastWeights {
            w: self.w.iter().map(d).collect::<Result<_>>()?,
            b: self.b.iter().map(d).collect::<Result<_>>()?,
        })
    }

    pub fn episodes(&self) -> i64 {
        self.w[0].size()[0]
    }

    fn apply(self, u: Update) -> Result<FastWeights> {
        let mut w = Vec::with_capacity(self.w.len());
        let mut b = Vec::with_capacity(self.b.len());
        for (k, (wk, bk)) in self.w.into_iter().zip(self.b).enumerate() {
            w.push(match &u.w_rate[k] {
                Some(rate) => add_scaled(wk, rate, &u.w[k])?,
                None => add(wk, &u.w[k])?,
            });
            b.push(match &u.b[k] {
                Some(db) => add(bk, db)?,
                None => bk,
            });
        }
        Ok(FastWeights { w, b })
    }
}

/// Out of place when the weights are part of a graph; in place otherwise (evaluation).
fn add(mut t: Tensor, d: &Tensor) -> Result<Tensor> {
    if t.requires_grad() || d.requires_grad() {
        Ok(t.f_add(d)?)
    } else {
        let _ = t.f_add_(d)?;
        Ok(t)
    }
}

/// t + rate ⊙ d, fused; in place when nothing is tracked.
fn add_scaled(mut t: Tensor, rate: &Tensor, d: &Tensor) -> Result<Tensor> {
    if t.requires_grad() || d.requires_grad() || rate.requires_grad() {
        Ok(t.f_addcmul(rate, d)?)
    } else {
        let _ = t.f_addcmul_(rate, d)?;
        Ok(t)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepMode {
    Full,
    FirstOrder,
    Constant,
}

/// The mode of step t of T under a meta-gradient setting.
pub fn step_mode(gradient: MetaGradient, t: usize, steps: usize) -> StepMode {
    match gradient {
        MetaGradient::SecondOrder => StepMode::Full,
        MetaGradient::FirstOrder => StepMode::FirstOrder,
        MetaGradient::Truncated { steps: k } => {
            if t + k >= steps {
                StepMode::Full
            } else {
                StepMode::Constant
            }
        }
    }
}

pub struct InnerLoop<'a> {
    pub cfg: &'a LearnerConfig,
    pub params: &'a ParamStore,
    pub rule: &'a dyn InnerRule,
    /// Multiplier on a gradient rule's step sizes (1 except during meta-test step-size selection).
    pub step_scale: f64,
    /// Set from outside (Ctrl-C, AbortSignal): `run` stops before its next step with `Error::Cancelled`.
    pub cancel: Option<&'a AtomicBool>,
}

impl InnerLoop<'_> {
    fn update(
        &self,
        acts: &TailActivations,
        fast: &FastWeights,
        y: &Tensor,
        create_graph: bool,
        t: usize,
    ) -> Result<Update> {
        let inputs = StepInputs {
            cfg: self.cfg,
            acts,
            w: &fast.w,
            b: &fast.b,
            y,
            create_graph,
            step_scale: self.step_scale,
            step: t,
        };
        self.rule.update(self.params, &inputs)
    }

    /// Inner step t of a lifetime on a minibatch: features [E, B, F] (input of the first plastic layer), y [E, B, ...].
    pub fn step(
        &self,
        fast: FastWeights,
        features: &Tensor,
        y: &Tensor,
        mode: StepMode,
        t: usize,
    ) -> Result<FastWeights> {
        let needs_grad = self.rule.needs_weight_grad();
        match mode {
            StepMode::Full => {
                let acts = tail(features, &fast.w, &fast.b)?;
                let u = self.update(&acts, &fast, y, true, t)?;
                fast.apply(u)
            }
            StepMode::FirstOrder => {
                let inner = fast.detached(needs_grad)?;
                let acts = tail(&features.f_detach()?, &inner.w, &inner.b)?;
                let u = self.update(&acts, &inner, y, false, t)?;
                fast.apply(u)
            }
            StepMode::Constant => {
                let inner = fast.detached(needs_grad)?;
                let u = if needs_grad {
                    tch::with_grad(|| -> Result<Update> {
                        let acts = tail(&features.f_detach()?, &inner.w, &inner.b)?;
                        self.update(&acts, &inner, y, false, t)
                    })?
                } else {
                    // Evaluation (nothing tracked): the rule's own step outside any graph, where it has one.
                    let untracked =
                        !fast.w.iter().chain(&fast.b).any(Tensor::requires_grad) && !features.requires_grad();
                    let next = tch::no_grad(|| -> Result<std::result::Result<Vec<Tensor>, Update>> {
                        let acts = tail(features, &inner.w, &inner.b)?;
                        if untracked {
                            let inputs = StepInputs {
                                cfg: self.cfg,
                                acts: &acts,
                                w: &inner.w,
                                b: &inner.b,
                                y,
                                create_graph: false,
                                step_scale: self.step_scale,
                                step: t,
                            };
                            if let Some(w) = self.rule.step_without_graph(self.params, &inputs)? {
                                return Ok(Ok(w));
                            }
                        }
                        Ok(Err(self.update(&acts, &inner, y, false, t)?))
                    })?;
                    match next {
                        Ok(w) => return Ok(FastWeights { w, b: fast.b }),
                        Err(u) => u,
                    }
                };
                let detach = |v: &[Option<Tensor>]| -> Result<Vec<Option<Tensor>>> {
                    Ok(v.iter()
                        .map(|t| t.as_ref().map(|t| t.f_detach()).transpose())
                        .collect::<std::result::Result<_, _>>()?)
                };
                let u = Update {
                    w: u.w.iter().map(|t| t.f_detach()).collect::<std::result::Result<_, _>>()?,
                    w_rate: detach(&u.w_rate)?,
                    b: detach(&u.b)?,
                };
                fast.apply(u)
            }
        }
    }

    /// Runs the whole stream: features [E, T, B, F], ys [E, T, B, ...]; `mode(t)` decides each step.
    pub fn run(
        &self,
        mut fast: FastWeights,
        features: &Tensor,
        ys: &Tensor,
        mode: impl Fn(usize) -> StepMode,
    ) -> Result<FastWeights> {
        let steps = features.size()[1] as usize;
        for t in 0..steps {
            if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Error::Cancelled);
            }
            let ft = features.f_select(1, t as i64)?;
            let yt = ys.f_select(1, t as i64)?;
            fast = self.step(fast, &ft, &yt, mode(t), t)?;
        }
        Ok(fast)
    }
}
