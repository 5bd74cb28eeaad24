//! The meta-gradient of a lifetime by a hand-derived reverse pass (the adjoint method), for the local
//! rules (local.rs) and OML's SGD (sgd.rs).
//!
//! The forward runs without a graph and keeps the fast weights every `k` steps. The reverse pass walks
//! the lifetime backwards one segment at a time: it recomputes the segment's forward from its
//! checkpoint, then propagates the adjoints G_t = ∂L/∂W_t, g_t = ∂L/∂b_t through each step by the
//! rule's closed forms, accumulating the gradients of the rule's own meta-parameters. Memory is
//! O(T/k + k) weight copies instead of autograd's O(T) graph. Everything the inner loop does not own
//! (the frozen front, the initial weights' construction, the query loss, any parameterization of the
//! rule's meta-parameters) goes through autograd once, via the surrogate scalar Σ <tensor, its adjoint>,
//! whose gradient is exactly what the unrolled graph would give those tensors' inputs.
mod local;
mod sgd;

use crate::inner::StepMode;
use crate::learner::{EpisodeBatch, Learner};
use crate::params::ParamStore;
use crate::{Error, Result};
use tch::{Kind, Tensor};

/// How the reverse pass runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdjointOptions {
    /// Checkpoint interval (default `default_interval(T)`).
    pub interval: Option<usize>,
    /// Fused CPU loops for the local rules' weight-sized work (default: where they apply, kernels.rs).
    pub fused: Option<bool>,
}

/// Checkpoint interval used when none is configured: about √T (memory and recomputation balanced).
pub fn default_interval(steps: usize) -> usize {
    ((steps as f64).sqrt().ceil() as usize).max(1)
}

/// One rule's inner step, run forward without a graph and differentiated by hand.
trait StepAdjoint {
    type Tape;
    /// Step t on features x [E, B, F] and targets y: the next weights and biases, and what the
    /// reverse pass needs of the step.
    fn forward(&self, t: usize, w: &[Tensor], b: &[Tensor], x: &Tensor, y: &Tensor) -> Result<(Vec<Tensor>, Vec<Tensor>, Self::Tape)>;
    /// From the adjoints after step t to those before it; ∂L/∂x_t when the step is differentiated fully.
    #[allow(clippy::too_many_arguments)]
    fn backward(&mut self, t: usize, w: &[Tensor], b: &[Tensor], tape: Self::Tape, gw: Vec<Tensor>, gb: Vec<Tensor>, mode: StepMode) -> Result<(Vec<Tensor>, Vec<Tensor>, Option<Tensor>)>;
    /// Adds to the weights' adjoints whatever the rule still owes them, once the reverse pass is done.
    fn flush(&mut self, _gw: &mut [Tensor]) -> Result<()> {
        Ok(())
    }
    /// Σ <meta-parameter expression, its accumulated gradient> over the rule's own meta-parameters.
    fn surrogate(&self, params: &ParamStore) -> Result<Option<Tensor>>;
}

pub(crate) fn accumulate(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(acc) => acc.f_add(&g)?,
        None => g,
    });
    Ok(())
}

/// x where pre > 0, else 0 (one operation, as autograd does it).
pub(crate) fn relu_backward(x: &Tensor, pre: &Tensor) -> Result<Tensor> {
    Ok(pre.f_threshold_backward(x, 0.0)?)
}

/// Vector-Jacobian product of softmax: p ⊙ (d − Σ d ⊙ p).
pub(crate) fn softmax_backward(d: &Tensor, p: &Tensor) -> Result<Tensor> {
    let dot = d.f_mul(p)?.f_sum_dim_intlist([-1i64].as_slice(), true, None::<Kind>)?;
    Ok(p.f_mul(&d.f_sub(&dot)?)?)
}

pub(crate) fn dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.f_mul(b)?.f_sum(Some(Kind::Double))?)
}

fn detach_all(v: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(v.iter().map(|t| t.f_detach()?.f_contiguous()).collect::<std::result::Result<_, _>>()?)
}

/// Whether the reverse pass covers this learner's rule.
pub fn applies(learner: &Learner) -> bool {
    learner.local_rule().map_or_else(|| learner.sgd_rule().is_some(), local::supports)
}

/// The meta-gradient by the reverse pass: (mean query loss, gradient of every trainable parameter by
/// store index). Equal to `meta::autograd_meta_gradient` up to rounding.
pub fn meta_gradient(learner: &mut Learner, batch: &EpisodeBatch, opts: AdjointOptions, mode: impl Fn(usize) -> StepMode) -> Result<(f64, Vec<(usize, Tensor)>)> {
    if learner.local_rule().is_some() {
        let fused = opts.fused.unwrap_or_else(|| crate::kernels::applies(learner.kind, learner.device));
        if fused && !crate::kernels::applies(learner.kind, learner.device) {
            return Err(Error::Internal(format!("the fused kernels run on the CPU in float32/float64, not {:?} on {:?}", learner.kind, learner.device)));
        }
        let rule = local::LocalAdjoint::new(learner, fused)?;
        run(learner, batch, opts, mode, rule)
    } else if learner.sgd_rule().is_some() {
        let rule = sgd::SgdAdjoint::new(learner)?;
        run(learner, batch, opts, mode, rule)
    } else {
        Err(Error::Internal("the reverse pass does not cover this rule".into()))
    }
}

fn run<R: StepAdjoint>(learner: &mut Learner, batch: &EpisodeBatch, opts: AdjointOptions, mode: impl Fn(usize) -> StepMode, mut rule: R) -> Result<(f64, Vec<(usize, Tensor)>)> {
    let e = batch.support_x.size()[0];
    let steps = batch.support_x.size()[1] as usize;
    let k = opts.interval.unwrap_or_else(|| default_interval(steps)).max(1);
    let fast = learner.start(e, &batch.classes, true)?;
    let features = learner.features(&batch.support_x)?;
    let x = features.f_detach()?;
    let y = &batch.support_y;
    let cancel = learner.cancel.clone();
    // Cancellation reaches the reverse pass between inner steps, forward and backward alike.
    let check_cancel = || -> Result<()> {
        if cancel.as_ref().is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        Ok(())
    };
    let step_input = |t: usize| -> Result<(Tensor, Tensor)> {
        check_cancel()?;
        Ok((x.f_select(1, t as i64)?, y.f_select(1, t as i64)?))
    };

    // Forward, keeping the weights at the start of every segment (contiguous: the fused loops read rows
    // in place, and W_0 may be a broadcast view).
    let mut checkpoints = Vec::with_capacity(steps.div_ceil(k));
    let (mut w, mut b) = (detach_all(&fast.w)?, detach_all(&fast.b)?);
    tch::no_grad(|| -> Result<()> {
        for t in 0..steps {
            if t % k == 0 {
                checkpoints.push((w.iter().map(|t| t.shallow_clone()).collect::<Vec<_>>(), b.iter().map(|t| t.shallow_clone()).collect::<Vec<_>>()));
            }
            let (xt, yt) = step_input(t)?;
            (w, b) = {
                let (nw, nb, _) = rule.forward(t, &w, &b, &xt, &yt)?;
                (nw, nb)
            };
        }
        Ok(())
    })?;

    // Query loss on the final weights (autograd): its gradient with respect to them starts the reverse pass.
    let leaves = |v: &[Tensor]| -> Vec<Tensor> { v.iter().map(|t| t.shallow_clone().set_requires_grad(true)).collect() };
    let (w_final, b_final) = (leaves(&w), leaves(&b));
    let final_fast = crate::inner::FastWeights { w: w_final.iter().map(|t| t.shallow_clone()).collect(), b: b_final.iter().map(|t| t.shallow_clone()).collect() };
    let loss = learner.loss(&final_fast, &batch.query_x, &batch.query_y)?.f_mean(None::<Kind>)?;
    let finals: Vec<Tensor> = w_final.iter().chain(&b_final).map(|t| t.shallow_clone()).collect();
    let mut adj = Tensor::f_run_backward(&[&loss], &finals, true, false)?;
    for (a, leaf) in adj.iter_mut().zip(&finals) {
        *a = if a.defined() { a.f_contiguous()? } else { leaf.f_zeros_like()? };
    }
    let mut gb = adj.split_off(w.len());
    let mut gw = adj;

    let needs_dx = features.requires_grad();
    let mut d_features: Vec<Option<Tensor>> = (0..steps).map(|_| None).collect();
    {
        let _no_grad = tch::no_grad_guard();
        for (seg, (w0, b0)) in checkpoints.iter().enumerate().rev() {
            let t0 = seg * k;
            let t1 = (t0 + k).min(steps);
            let mut states = Vec::with_capacity(t1 - t0);
            let (mut wt, mut bt): (Vec<Tensor>, Vec<Tensor>) = (w0.iter().map(|t| t.shallow_clone()).collect(), b0.iter().map(|t| t.shallow_clone()).collect());
            for t in t0..t1 {
                let (xt, yt) = step_input(t)?;
                let (nw, nb, tape) = rule.forward(t, &wt, &bt, &xt, &yt)?;
                states.push((std::mem::replace(&mut wt, nw), std::mem::replace(&mut bt, nb), tape));
            }
            for t in (t0..t1).rev() {
                check_cancel()?;
                let (wt, bt, tape) = states.pop().expect("one state per step");
                let (pw, pb, dx) = rule.backward(t, &wt, &bt, tape, gw, gb, mode(t))?;
                (gw, gb) = (pw, pb);
                if needs_dx {
                    d_features[t] = dx;
                }
            }
        }
    }

    rule.flush(&mut gw)?;
    let mut surrogate = loss.f_to_kind(Kind::Double)?;
    for (t, g) in fast.w.iter().zip(&gw).chain(fast.b.iter().zip(&gb)) {
        surrogate = surrogate.f_add(&dot(t, g)?)?;
    }
    if let Some(s) = rule.surrogate(&learner.params)? {
        surrogate = surrogate.f_add(&s)?;
    }
    if needs_dx {
        let parts: Vec<Tensor> = (0..steps).map(|t| d_features[t].take().map_or_else(|| Ok(x.f_select(1, t as i64)?.f_zeros_like()?), Ok)).collect::<Result<_>>()?;
        surrogate = surrogate.f_add(&dot(&features, &Tensor::f_stack(&parts, 1)?)?)?;
    }
    let trainable: Vec<usize> = learner.params.iter().enumerate().filter(|(_, p)| p.trainable).map(|(i, _)| i).collect();
    let inputs: Vec<Tensor> = trainable.iter().map(|&i| learner.params.at(i).shallow_clone()).collect();
    let out = Tensor::f_run_backward(&[&surrogate], &inputs, false, false)?;
    let mut result = Vec::with_capacity(trainable.len());
    for (i, gr) in out.into_iter().enumerate() {
        let gr = if gr.defined() { gr.f_to_kind(inputs[i].kind())? } else { inputs[i].f_zeros_like()? };
        result.push((trainable[i], gr));
    }
    Ok((loss.f_double_value(&[])?, result))
}
