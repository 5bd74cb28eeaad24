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
    /// Run the steps backwards from the weights after them, instead of recomputing each segment from
    /// its checkpoint, where the rule can and rounding stays bounded (default: yes, `meta.runBackwards`;
    /// `MAX_UNSTEP_GAIN`).
    pub unstep: Option<bool>,
    /// The most memory the kept pre-activations may take, in bytes (default `KEEP_BUDGET`), shared
    /// equally by the groups of episodes.
    pub keep_budget: Option<usize>,
    /// Groups of episodes run side by side on the threads (`kernels::episode_groups`; default on the CPU
    /// one per thread, elsewhere 1). 1 keeps the meta-batch whole.
    pub episode_groups: Option<usize>,
}

/// By default the forward keeps at most 1 GiB of pre-activations for running steps backwards (a
/// paper-size sine lifetime takes 154 MB per episode); the segments after that are recomputed.
pub const KEEP_BUDGET: usize = 1 << 30;

/// The most a segment run backwards may magnify the rounding errors of its weights (the product of
/// its steps' `StepAdjoint::keep` gains): 16×, 4 bits. Segments beyond it are recomputed forward.
pub const MAX_UNSTEP_GAIN: f64 = 16.0;

/// How far the weights a segment ran back to may lie from its checkpoint, in units of the dtype's
/// rounding, relative to the largest weight of the layer. The gain bounds how errors grow, not the
/// cancellation in W' − s ãᵀa when the steps' updates dwarf the weights: this catches that; the
/// segment is then recomputed.
const UNSTEP_TOLERANCE_ULPS: f64 = 256.0;

/// How the last reverse pass on this thread went through the lifetime's steps. With the meta-batch in
/// groups of episodes (`episode_groups`), each group goes through the steps on its own: these are the
/// counts of the group that recomputed the most.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Steps run backwards from the weights after them.
    pub unstepped: usize,
    /// Steps recomputed forward from their segment's checkpoint.
    pub recomputed: usize,
    /// Steps passed over: differentiated as constants, in segments of nothing else.
    pub skipped: usize,
    /// Steps run backwards whose segment missed its checkpoint by more than the tolerance, and was
    /// recomputed (they count as recomputed too).
    pub rejected: usize,
    /// Groups of episodes the meta-batch ran in.
    pub groups: usize,
}

thread_local! {
    static LAST_PASS: std::cell::Cell<PassStats> = std::cell::Cell::new(PassStats::default());
}

/// The `PassStats` of the last reverse pass run on this thread (tests, the bench).
pub fn last_pass() -> PassStats {
    LAST_PASS.with(|s| s.get())
}

/// Checkpoint interval used when none is configured: about √T (memory and recomputation balanced).
pub fn default_interval(steps: usize) -> usize {
    ((steps as f64).sqrt().ceil() as usize).max(1)
}

/// One rule's inner step, run forward without a graph and differentiated by hand.
trait StepAdjoint {
    type Tape;
    /// What of a step's tape `keep` holds for the whole lifetime.
    type Kept;
    /// Step t on features x [E, B, F] and targets y: the next weights and biases, and what the
    /// reverse pass needs of the step.
    fn forward(
        &self,
        t: usize,
        w: &[Tensor],
        b: &[Tensor],
        x: &Tensor,
        y: &Tensor,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>, Self::Tape)>;
    /// From the adjoints after step t to those before it; ∂L/∂x_t when the step is differentiated fully.
    /// With `unstep`, `w` holds the weights after the step, and the rule turns them into those before it
    /// in place (only for steps whose tape `keep` kept).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        t: usize,
        w: &[Tensor],
        b: &[Tensor],
        tape: Self::Tape,
        gw: Vec<Tensor>,
        gb: Vec<Tensor>,
        mode: StepMode,
        unstep: bool,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>, Option<Tensor>)>;
    /// Where the rule can run step t backwards from the weights after it: the part of its tape to keep
    /// for the reverse pass, and how much running it backwards can magnify errors in those weights
    /// (`kernels::unstep_gain`). Such steps must leave the biases as they are.
    fn keep(&self, _t: usize, _tape: &Self::Tape) -> Result<Option<(Self::Kept, f64)>> {
        Ok(None)
    }
    /// The memory that `keep` holds for one step.
    fn kept_bytes(_kept: &Self::Kept) -> usize {
        0
    }
    /// Step t's tape from what `keep` kept, its inputs and the weights after it.
    fn rebuild(
        &self,
        _t: usize,
        _kept: Self::Kept,
        _x: &Tensor,
        _y: &Tensor,
        _w_after: &[Tensor],
    ) -> Result<Self::Tape> {
        Err(Error::Internal("this rule keeps no tapes to rebuild".into()))
    }
    /// The rule's accumulated gradients, to go back to (`restore`) when a segment run backwards is
    /// recomputed instead.
    fn save(&self) -> Result<Box<dyn std::any::Any>> {
        Err(Error::Internal("this rule runs no steps backwards".into()))
    }
    fn restore(&mut self, _saved: Box<dyn std::any::Any>) -> Result<()> {
        Err(Error::Internal("this rule runs no steps backwards".into()))
    }
    /// Whether the reverse pass needs ∂L/∂x_t (a front that learns); a rule may defer work that gives
    /// it otherwise (`settle`).
    fn features_need_adjoints(&mut self, _needed: bool) {}
    /// Finishes whatever of the last step differentiated the rule left for the step before it, where no
    /// step before it follows in this segment run backwards; `w` holds that step's weights.
    fn settle(&mut self, _w: &[Tensor], _gb: &mut [Tensor]) -> Result<()> {
        Ok(())
    }
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

/// Whether weights run back to a segment's start lie within `UNSTEP_TOLERANCE_ULPS` of its checkpoint.
fn lands_on(reached: &[Tensor], checkpoint: &[Tensor]) -> Result<bool> {
    for (r, c) in reached.iter().zip(checkpoint) {
        let ulp = if c.kind() == Kind::Double { f64::EPSILON } else { f32::EPSILON as f64 };
        let scale = c.f_abs()?.f_max()?.f_double_value(&[])?;
        let off = r.f_sub(c)?.f_abs()?.f_max()?.f_double_value(&[])?;
        let tolerance = UNSTEP_TOLERANCE_ULPS * ulp * scale;
        if off.is_nan() || tolerance.is_nan() || off > tolerance {
            return Ok(false);
        }
    }
    Ok(true)
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
pub fn meta_gradient(
    learner: &mut Learner,
    batch: &EpisodeBatch,
    opts: AdjointOptions,
    mode: impl Fn(usize) -> StepMode,
) -> Result<(f64, Vec<(usize, Tensor)>)> {
    if learner.local_rule().is_some() {
        let fused = opts.fused.unwrap_or_else(|| crate::kernels::applies(learner.kind, learner.device));
        if fused && !crate::kernels::applies(learner.kind, learner.device) {
            return Err(Error::Internal(format!(
                "the fused kernels run on the CPU in float32/float64, not {:?} on {:?}",
                learner.kind, learner.device
            )));
        }
        run(learner, batch, opts, mode, |l| local::LocalAdjoint::new(l, fused))
    } else if learner.sgd_rule().is_some() {
        run(learner, batch, opts, mode, sgd::SgdAdjoint::new)
    } else {
        Err(Error::Internal("the reverse pass does not cover this rule".into()))
    }
}

/// What one group of episodes' reverse pass gives: its share of the mean query loss (with its graph to
/// the parameters), the adjoints of its initial fast weights and biases and of its features per step,
/// and the rule with its meta-parameters' accumulated gradients.
struct GroupPass<R> {
    loss: Tensor,
    gw: Vec<Tensor>,
    gb: Vec<Tensor>,
    d_features: Vec<Option<Tensor>>,
    rule: R,
    stats: PassStats,
}

fn run<R: StepAdjoint + Send>(
    learner: &mut Learner,
    batch: &EpisodeBatch,
    opts: AdjointOptions,
    mode: impl Fn(usize) -> StepMode,
    make_rule: impl Fn(&Learner) -> Result<R>,
) -> Result<(f64, Vec<(usize, Tensor)>)> {
    let e = batch.support_x.size()[0];
    let steps = batch.support_x.size()[1] as usize;
    let fast = learner.start(e, &batch.classes, true)?;
    let features = learner.features(&batch.support_x)?;
    let needs_dx = features.requires_grad();
    let x = features.f_detach()?;
    let learner: &Learner = learner;
    let groups = crate::kernels::episode_groups(e, learner.device, opts.episode_groups);
    let budget = opts.keep_budget.unwrap_or(KEEP_BUDGET) / groups.len();
    let group = |first: i64, count: i64| -> Result<GroupPass<R>> {
        let part = |t: &Tensor| -> Result<Tensor> { Ok(t.f_narrow(0, first, count)?) };
        let start =
            |v: &[Tensor]| -> Result<Vec<Tensor>> { detach_all(&v.iter().map(part).collect::<Result<Vec<_>>>()?) };
        let input = GroupInput {
            x: part(&x)?,
            y: part(&batch.support_y)?,
            query_x: part(&batch.query_x)?,
            query_y: part(&batch.query_y)?,
            w: start(&fast.w)?,
            b: start(&fast.b)?,
            share: count as f64 / e as f64,
            needs_dx,
        };
        group_pass(learner, input, opts, budget, &mode, make_rule(learner)?)
    };
    // The query loss and its seed run through autograd, on the worker threads too.
    let passes = crate::kernels::in_episode_groups(&groups, |first, count| tch::with_grad(|| group(first, count)))?;

    let most_recomputed = passes.iter().map(|p| p.stats).max_by_key(|s| s.recomputed).unwrap_or_default();
    LAST_PASS.with(|s| s.set(PassStats { groups: groups.len(), ..most_recomputed }));
    let mut surrogate = Tensor::f_zeros([], (Kind::Double, learner.device))?;
    let mut loss = 0.0;
    for (pass, &(first, count)) in passes.iter().zip(&groups) {
        loss += pass.loss.f_double_value(&[])?;
        surrogate = surrogate.f_add(&pass.loss.f_to_kind(Kind::Double)?)?;
        for (t, g) in fast.w.iter().zip(&pass.gw).chain(fast.b.iter().zip(&pass.gb)) {
            surrogate = surrogate.f_add(&dot(&t.f_narrow(0, first, count)?, g)?)?;
        }
        if let Some(s) = pass.rule.surrogate(&learner.params)? {
            surrogate = surrogate.f_add(&s)?;
        }
    }
    if needs_dx {
        let mut per_step = Vec::with_capacity(steps);
        for t in 0..steps {
            let parts: Vec<Tensor> = passes
                .iter()
                .zip(&groups)
                .map(|(pass, &(first, count))| {
                    pass.d_features[t].as_ref().map_or_else(
                        || Ok(x.f_select(1, t as i64)?.f_narrow(0, first, count)?.f_zeros_like()?),
                        |d| Ok(d.shallow_clone()),
                    )
                })
                .collect::<Result<_>>()?;
            per_step.push(Tensor::f_cat(&parts, 0)?);
        }
        surrogate = surrogate.f_add(&dot(&features, &Tensor::f_stack(&per_step, 1)?)?)?;
    }
    let trainable: Vec<usize> =
        learner.params.iter().enumerate().filter(|(_, p)| p.trainable).map(|(i, _)| i).collect();
    let inputs: Vec<Tensor> = trainable.iter().map(|&i| learner.params.at(i).shallow_clone()).collect();
    let out = Tensor::f_run_backward(&[&surrogate], &inputs, false, false)?;
    let mut result = Vec::with_capacity(trainable.len());
    for (i, gr) in out.into_iter().enumerate() {
        let gr = if gr.defined() { gr.f_to_kind(inputs[i].kind())? } else { inputs[i].f_zeros_like()? };
        result.push((trainable[i], gr));
    }
    Ok((loss, result))
}

/// One group's episodes: features [E', T, B, F] (detached) and targets, query set, the initial fast
/// weights and biases (detached copies), and the group's share of the meta-batch.
struct GroupInput {
    x: Tensor,
    y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    w: Vec<Tensor>,
    b: Vec<Tensor>,
    share: f64,
    /// Whether the features' adjoints are wanted (a front that learns).
    needs_dx: bool,
}

/// The forward and reverse pass of one group's lifetimes.
fn group_pass<R: StepAdjoint>(
    learner: &Learner,
    input: GroupInput,
    opts: AdjointOptions,
    budget: usize,
    mode: &impl Fn(usize) -> StepMode,
    mut rule: R,
) -> Result<GroupPass<R>> {
    let steps = input.x.size()[1] as usize;
    let k = opts.interval.unwrap_or_else(|| default_interval(steps)).max(1);
    let (x, y) = (&input.x, &input.y);
    rule.features_need_adjoints(input.needs_dx);
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
    // in place, and W_0 may be a broadcast view), and what the rule keeps of each step it can run
    // backwards.
    let mut checkpoints = Vec::with_capacity(steps.div_ceil(k));
    let unstep = opts.unstep.unwrap_or(true);
    let mut kept: Vec<Option<R::Kept>> = Vec::with_capacity(steps);
    let mut segment_gain = 1.0;
    let mut kept_bytes = 0usize;
    let (mut w, mut b) = (input.w, input.b);
    tch::no_grad(|| -> Result<()> {
        for t in 0..steps {
            if t % k == 0 {
                checkpoints.push((
                    w.iter().map(|t| t.shallow_clone()).collect::<Vec<_>>(),
                    b.iter().map(|t| t.shallow_clone()).collect::<Vec<_>>(),
                ));
                segment_gain = 1.0;
            }
            let (xt, yt) = step_input(t)?;
            let (nw, nb, tape) = rule.forward(t, &w, &b, &xt, &yt)?;
            // Nothing more is kept of a segment once it cannot run backwards (its gain, or the budget).
            let part = if unstep && segment_gain <= MAX_UNSTEP_GAIN && mode(t) != StepMode::Constant {
                rule.keep(t, &tape)?
            } else {
                None
            };
            let part = part.filter(|(p, _)| kept_bytes + R::kept_bytes(p) <= budget);
            segment_gain *= part.as_ref().map_or(f64::INFINITY, |(_, gain)| *gain);
            if segment_gain > MAX_UNSTEP_GAIN {
                for p in kept[t - t % k..].iter_mut().filter_map(Option::take) {
                    kept_bytes -= R::kept_bytes(&p);
                }
            }
            let part = part.filter(|_| segment_gain <= MAX_UNSTEP_GAIN).map(|(p, _)| p);
            kept_bytes += part.as_ref().map_or(0, R::kept_bytes);
            kept.push(part);
            (w, b) = (nw, nb);
        }
        Ok(())
    })?;

    // Query loss on the final weights (autograd): its gradient with respect to them starts the reverse pass.
    let leaves =
        |v: &[Tensor]| -> Vec<Tensor> { v.iter().map(|t| t.shallow_clone().set_requires_grad(true)).collect() };
    let (w_final, b_final) = (leaves(&w), leaves(&b));
    let final_fast = crate::inner::FastWeights {
        w: w_final.iter().map(|t| t.shallow_clone()).collect(),
        b: b_final.iter().map(|t| t.shallow_clone()).collect(),
    };
    let loss =
        learner.loss(&final_fast, &input.query_x, &input.query_y)?.f_mean(None::<Kind>)?.f_mul_scalar(input.share)?;
    let finals: Vec<Tensor> = w_final.iter().chain(&b_final).map(|t| t.shallow_clone()).collect();
    let mut adj = Tensor::f_run_backward(&[&loss], &finals, true, false)?;
    for (a, leaf) in adj.iter_mut().zip(&finals) {
        *a = if a.defined() { a.f_contiguous()? } else { leaf.f_zeros_like()? };
    }
    let mut gb = adj.split_off(w.len());
    let mut gw = adj;

    let mut d_features: Vec<Option<Tensor>> = (0..steps).map(|_| None).collect();
    let mut stats = PassStats::default();
    let mut gave_up = false;
    {
        let _no_grad = tch::no_grad_guard();
        for (seg, (w0, b0)) in checkpoints.iter().enumerate().rev() {
            let t0 = seg * k;
            let t1 = (t0 + k).min(steps);
            if (t0..t1).all(|t| mode(t) == StepMode::Constant) {
                stats.skipped += t1 - t0; // G, and what is owed to it, pass through unchanged
                continue;
            }
            // Every step kept (so the product of their gains is bounded): run the segment backwards from
            // the weights at its end (the next checkpoint, or the final weights), never writing those,
            // and keep the result if it lands on the segment's checkpoint.
            if !gave_up && (t0..t1).all(|t| kept[t].is_some()) {
                let saved = (
                    gw.iter().map(|g| g.f_detach_copy()).collect::<std::result::Result<Vec<_>, _>>()?,
                    gb.iter().map(|g| g.shallow_clone()).collect::<Vec<_>>(),
                    rule.save()?,
                );
                let end = checkpoints.get(seg + 1).map_or(&w, |(w1, _)| w1);
                let wt: Vec<Tensor> =
                    end.iter().map(|t| t.f_detach_copy()?.f_contiguous()).collect::<std::result::Result<_, _>>()?;
                for t in (t0..t1).rev() {
                    let (xt, yt) = step_input(t)?;
                    let part = kept[t]
                        .take()
                        .ok_or_else(|| Error::Internal(format!("step {t} kept nothing to run backwards from")))?;
                    let tape = rule.rebuild(t, part, &xt, &yt, &wt)?;
                    let (pw, pb, dx) = rule.backward(t, &wt, b0, tape, gw, gb, mode(t), true)?;
                    (gw, gb) = (pw, pb);
                    d_features[t] = dx.filter(|_| input.needs_dx);
                }
                rule.settle(&wt, &mut gb)?;
                if lands_on(&wt, w0)? {
                    stats.unstepped += t1 - t0;
                    continue;
                }
                // The rest of this pass recomputes: whatever made this segment miss is likely to last.
                gave_up = true;
                stats.rejected += t1 - t0;
                (gw, gb) = (saved.0, saved.1);
                rule.restore(saved.2)?;
            }
            let mut states = Vec::with_capacity(t1 - t0);
            let (mut wt, mut bt): (Vec<Tensor>, Vec<Tensor>) =
                (w0.iter().map(|t| t.shallow_clone()).collect(), b0.iter().map(|t| t.shallow_clone()).collect());
            kept[t0..t1].iter_mut().for_each(|p| *p = None);
            for t in t0..t1 {
                let (xt, yt) = step_input(t)?;
                let (nw, nb, tape) = rule.forward(t, &wt, &bt, &xt, &yt)?;
                states.push((std::mem::replace(&mut wt, nw), std::mem::replace(&mut bt, nb), tape));
            }
            for t in (t0..t1).rev() {
                check_cancel()?;
                let (wt, bt, tape) = states.pop().expect("one state per step");
                let (pw, pb, dx) = rule.backward(t, &wt, &bt, tape, gw, gb, mode(t), false)?;
                (gw, gb) = (pw, pb);
                d_features[t] = dx.filter(|_| input.needs_dx);
            }
            stats.recomputed += t1 - t0;
        }
    }
    rule.flush(&mut gw)?;
    Ok(GroupPass { loss, gw, gb, d_features, rule, stats })
}
