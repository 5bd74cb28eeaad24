//! The reverse pass through a local-rule lifetime (Oja, Hebb), every feedback option included.
//!
//! One Oja step of layer k, with pre a [E,B,I], teaching activity ã [E,B,O], r = Σ_b ã² [E,O,1]:
//!   term = m (ãᵀa − r ⊙ W),   W' = W + P ⊙ term        (Hebb: no r ⊙ W)
//! and with Q = P ⊙ G' (G' = ∂L/∂W'):
//!   ∂L/∂P += m G' ⊙ (ãᵀa − r ⊙ W)      (reduced to P's shape)
//!   ∂L/∂W  = G' − m Q ⊙ r  + (forward-pass term)
//!   ∂L/∂ã  = m (a Qᵀ − 2 ã ⊙ rowsum(Q ⊙ W))
//!   ∂L/∂a  = m ã Q
//! With a learned decay coefficient γ (`rule.decay`), r is replaced by γ ⊙ r in the step and in ∂L/∂W,
//! ∂L/∂ã takes γ ⊙ rowsum(Q ⊙ W), and ∂L/∂γ += −m Σ r ⊙ rowsum(Q ⊙ W) (over episodes; and rows for one γ
//! per layer); autograd takes it on to φ (γ = σ(φ), γ' = γ (1 − γ)) through the surrogate.
//! The teaching activity ã = s f(e) + (1 − s) a_out, the feedback MLP f and the signal e are then
//! differentiated by hand as well, and finally the step's forward pass z = a Wᵀ + b.
use super::{accumulate, dot, relu_backward, softmax_backward, StepAdjoint};
use crate::config::{LearnerConfig, TaskKind};
use crate::feedback::{dense_target, Activation, FeedbackKind, Signal};
use crate::inner::StepMode;
use crate::learner::Learner;
use crate::net::functional::{bias_rows, tail, tail_from_z, TailActivations};
use crate::params::ParamStore;
use crate::rules::local::{
    folded_multiplier, normalization_factor, plain_term, row_energy, step_decay, uses_decay, LocalRule,
};
use crate::rules::UpdateNormalization;
use crate::{Error, Result};
use tch::{Kind, Tensor};

/// Detached values of the rule's meta-parameters for the reverse pass.
struct RuleValues {
    /// Effective rate of each layer, broadcastable to [E, O, I].
    rates: Vec<Tensor>,
    /// Each layer's least and greatest rate per row, or one pair for all rows (`kernels::unstep_gain`);
    /// times γ where the rule learns its decay (the rate the decay term sees).
    rate_ranges: Vec<Vec<(f64, f64)>>,
    /// The learned decay coefficient γ of each layer ([] or [O, 1]), where the rule has one.
    decay: Vec<Option<Tensor>>,
    /// (B, c) of each feedback layer, per plastic layer.
    feedback: Vec<Vec<(Tensor, Tensor)>>,
    /// Blend strength s of each layer (read once per meta-step: scalar arithmetic in the steps).
    strength: Vec<f64>,
    multipliers: Vec<f64>,
    oja: bool,
    hebb_first_step: bool,
    normalize: UpdateNormalization,
    /// Every layer's one-layer feedback map stacked into one, where the options allow (`Stacked::of`).
    stacked: Option<Stacked>,
}

/// The plastic layers' one-layer feedback maps as one map: they all read the same signal e, so one
/// product (and one of each operation after it) serves every layer. With the paper's nine layers a step
/// dispatches 399 libtorch operations instead of 581 (`bench --count-ops`), each a kernel launch on a GPU.
struct Stacked {
    /// B_k stacked by rows [ΣO, S], and c_k [ΣO].
    b: Tensor,
    c: Tensor,
    /// Rows O_k of each layer.
    sizes: Vec<i64>,
    /// Each row's blend strength s_k, and 1 − s_k [ΣO].
    s: Tensor,
    one_minus_s: Tensor,
}

impl Stacked {
    /// Learned or random feedback, one feedback layer per plastic layer, no clamped output.
    fn of(cfg: &LearnerConfig, feedback: &[Vec<(Tensor, Tensor)>], strength: &[f64]) -> Result<Option<Self>> {
        let maps = matches!(cfg.feedback.kind, FeedbackKind::Learned | FeedbackKind::Random);
        let clamped = cfg.task == TaskKind::Classification && cfg.feedback.clamp_output;
        if !maps || clamped || feedback.is_empty() || feedback.iter().any(|f| f.len() != 1) {
            return Ok(None);
        }
        let b: Vec<&Tensor> = feedback.iter().map(|f| &f[0].0).collect();
        let c: Vec<&Tensor> = feedback.iter().map(|f| &f[0].1).collect();
        let sizes: Vec<i64> = b.iter().map(|t| t.size()[0]).collect();
        let opts = (b[0].kind(), b[0].device());
        let rows = |v: &dyn Fn(f64) -> f64| -> Result<Tensor> {
            let parts: Vec<Tensor> = sizes
                .iter()
                .zip(strength)
                .map(|(&o, &sk)| Tensor::f_full([o], v(sk), opts))
                .collect::<std::result::Result<_, _>>()?;
            Ok(Tensor::f_cat(&parts, 0)?)
        };
        Ok(Some(Stacked {
            b: Tensor::f_cat(&b, 0)?,
            c: Tensor::f_cat(&c, 0)?,
            s: rows(&|sk| sk)?,
            one_minus_s: rows(&|sk| 1.0 - sk)?,
            sizes,
        }))
    }
}

/// Gradient accumulators of the stacked map, summed over the lifetime and split by layer at the end.
struct StackedGrads {
    /// Σ ∂L/∂ã ⊙ (f − a) [E, B, ΣO]: each layer's strength gradient, summed over its rows.
    strength: Tensor,
    /// Σ dzᵀ e [ΣO, S] and Σ dz [E, B, ΣO] (the bias gradient, summed over E and B).
    b: Tensor,
    c: Tensor,
}

/// What the reverse pass needs of one inner step besides the fast weights.
pub(super) struct StepTape {
    acts: TailActivations,
    /// Teaching activity of each plastic layer.
    post: Vec<Tensor>,
    /// Whether this step used Oja's decay (the Hebb-first-step option turns it off on step 0).
    oja: bool,
    /// Σ_b ã² of each layer [E, O, 1] (Oja, libtorch-operation path; the fused kernels compute it).
    post_sq: Vec<Option<Tensor>>,
    /// Per layer, with libtorch operations: the rule's term m(ãᵀa − r ⊙ W) before the normalisation
    /// factor (the fused loops form ãᵀa again from the activities).
    term: Vec<Option<Tensor>>,
    /// Per layer: the normalisation factor c [E, O] of each row, where it depends on the activities.
    scale: Vec<Option<Tensor>>,
    feedback: FeedbackTape,
}

enum FeedbackTape {
    /// Derivative control: δ of each layer (post = δ) and the output probabilities (classification).
    Derivative { softmax: Option<Tensor> },
    /// Learned/random/none feedback: per layer, the MLP's inputs and pre-activations, its output f
    /// (None where ã does not come from the feedback map); the signal's softmax (cross-entropy).
    Map { layers: Vec<Option<MapTape>>, softmax: Option<Tensor> },
    /// The stacked map (`Stacked`): its pre-activation [E, B, ΣO], f − a [E, B, ΣO], the signal e.
    Stacked { zf: Tensor, diff: Tensor, e: Tensor, softmax: Option<Tensor> },
}

struct MapTape {
    /// Input of each feedback layer (the first is e) and its pre-activation.
    inputs: Vec<Tensor>,
    pre: Vec<Tensor>,
    f: Tensor,
}

/// One layer's forward update: the next weights, the rule's term (libtorch operations), Σ_b ã², the
/// normalisation factor.
type LayerUpdate = (Tensor, Option<Tensor>, Option<Tensor>, Option<Tensor>);
/// One layer's adjoint: ∂L/∂ã, ∂L/∂a (fully), the direct part of ∂L/∂W (fully), ∂L/∂γ (a learned decay).
type LayerAdjoint = (Tensor, Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// Gradient accumulators of the meta-parameters that the reverse pass owns.
struct Grads {
    feedback: Vec<Vec<(Option<Tensor>, Option<Tensor>)>>,
    strength: Vec<Option<Tensor>>,
    /// The stacked feedback map's accumulators (instead of `feedback` and `strength`), from the first step.
    stacked: Option<StackedGrads>,
    /// The rate gradient of each layer at the weights' full size, reduced to the rate's shape at the
    /// end: [O, I] summed over episodes by the fused loops, [E, O, I] with libtorch operations (one
    /// in-place multiply-add per step). Created at the first step differentiated, when E is known.
    rate_full: Vec<Tensor>,
    /// ∂L/∂γ of each layer's learned decay coefficient, in γ's shape.
    decay: Vec<Option<Tensor>>,
}

impl Grads {
    /// The per-layer strength and feedback-map accumulators, as shallow copies: `accumulate` replaces
    /// them at each step, never writing them in place.
    #[allow(clippy::type_complexity)]
    fn per_layer(&self) -> (Vec<Option<Tensor>>, Vec<Vec<(Option<Tensor>, Option<Tensor>)>>) {
        let copy = |t: &Option<Tensor>| t.as_ref().map(|t| t.shallow_clone());
        (
            self.strength.iter().map(copy).collect(),
            self.feedback.iter().map(|l| l.iter().map(|(b, c)| (copy(b), copy(c))).collect()).collect(),
        )
    }
}

/// [E, B, X] → [E·B, X] (feedback parameters are shared by every episode).
fn flat(t: &Tensor) -> Result<Tensor> {
    let s = t.size();
    Ok(t.f_reshape([-1, s[s.len() - 1]])?)
}

/// G += dzᵀa, the forward pass's part of ∂L/∂W, in place: no weight-sized temporary.
fn add_forward_term(g: &mut Tensor, dz: &Tensor, a: &Tensor) -> Result<()> {
    let _ = g.f_baddbmm_(&dz.f_transpose(1, 2)?, a)?;
    Ok(())
}

/// The least and greatest value of each row of a rate [O, I] or [O, 1]; one pair for a rate shared by
/// all rows.
fn row_range(rate: &Tensor) -> Result<Vec<(f64, f64)>> {
    let rate = rate.f_to_kind(Kind::Double)?;
    if rate.dim() < 2 || rate.size()[0] == 1 {
        return Ok(vec![(rate.f_min()?.f_double_value(&[])?, rate.f_max()?.f_double_value(&[])?)]);
    }
    let rows = rate.f_flatten(1, -1)?;
    let of = |t: Tensor| -> Result<Vec<f64>> { Ok(Vec::<f64>::try_from(&t)?) };
    let lo = of(rows.f_amin([1i64].as_slice(), false)?)?;
    let hi = of(rows.f_amax([1i64].as_slice(), false)?)?;
    Ok(lo.into_iter().zip(hi).collect())
}

/// `row_range` of the rate the decay term sees: P, times γ where the rule learns its decay.
fn decayed_range((rate, gamma): (&Tensor, &Option<Tensor>)) -> Result<Vec<(f64, f64)>> {
    match gamma {
        Some(g) => row_range(&rate.f_mul(g)?),
        None => row_range(rate),
    }
}

/// Whether the reverse pass covers this local rule's options.
pub(super) fn supports(_rule: &LocalRule) -> bool {
    true
}

/// One inner step of the rule, forward and backward, with the meta-parameters' current values.
struct LocalStep {
    cfg: LearnerConfig,
    rule: RuleValues,
    n: usize,
    /// Weight-sized work in the fused CPU loops (kernels.rs) rather than libtorch operations.
    fused: bool,
    /// The biases shaped as rows for the forward, once: the local rules leave them fixed for the whole
    /// lifetime (one operation per layer and step fewer).
    bias_rows: std::cell::OnceCell<Vec<Tensor>>,
}

/// What one step's reverse pass reads: the weights (after the step, with `unstep`), the step's tape and
/// how it is differentiated.
#[derive(Clone, Copy)]
struct StepInput<'a> {
    w: &'a [Tensor],
    tape: &'a StepTape,
    mode: StepMode,
    /// The fused loops run the step backwards, turning `w` into the weights before it in place.
    unstep: bool,
}

/// What the reverse pass carries from step to step, each step adding to it: the meta-parameters'
/// accumulators, the biases' adjoints and what a step owes the one before it.
struct PassState<'a> {
    grads: &'a mut Grads,
    gb: &'a mut [Tensor],
    owed: &'a mut Owed,
    /// Whether a step's chain may wait for the step before it (`LocalAdjoint::defer_chain`).
    defer_chain: bool,
}

/// What the reverse pass reads of one plastic layer in one step.
struct LayerStep<'a> {
    /// The effective rate P, the teaching and presynaptic activities ã and a, the multiplier m.
    rate: &'a Tensor,
    post: &'a Tensor,
    pre: &'a Tensor,
    m: f64,
    /// Σ_b ã² (Oja, libtorch-operation path) and the row normalisation factor c, where there are.
    r: Option<&'a Tensor>,
    c: Option<&'a Tensor>,
    /// The learned decay coefficient γ (the decay is then γ ⊙ r), where the rule has one.
    gamma: Option<&'a Tensor>,
    /// The weights and G = ∂L/∂W'.
    w: &'a Tensor,
    g: &'a Tensor,
}

/// The adjoint through one layer's update W' = W + c P ⊙ term: Q = c P ⊙ G, rowsum(Q ⊙ W) (Oja), ∂L/∂c
/// of each row where c depends on the activities and, fully, the direct part of ∂L/∂W.
struct UpdateAdjoint {
    q: Tensor,
    rowsum: Option<Tensor>,
    scale_grad: Option<Tensor>,
    direct: Option<Tensor>,
}

/// What the reverse pass of the step last differentiated leaves to the step before it.
struct Owed {
    /// Per layer, the forward pass's dzᵀa, as (dz, a), not yet added to its G: the fused loops add it as
    /// they next read G (`kernels::local_step_adjoint`), which saves a weight-sized read and write per
    /// layer and step; `flush` adds what is left at the end.
    pending: Vec<Option<(Tensor, Tensor)>>,
    /// The step's backward chain through its layers, not yet run: where the step before it runs
    /// backwards too, that step's adjoint loops run under it layer by layer (`kernels::pipelined_tasks`)
    /// instead of after it. `settle` runs it where nothing follows.
    chain: Option<Chain>,
}

impl Owed {
    /// Runs a chain still owed, leaving its dzᵀa owed to G like any other step's (`w`: that step's
    /// weights).
    fn settle(&mut self, w: &[Tensor], gb: &mut [Tensor]) -> Result<()> {
        match self.chain.take() {
            Some(chain) => chain.settle(w, gb, &mut self.pending).map(drop),
            None => Ok(()),
        }
    }

    /// Refuses to go on while a chain is still owed (it needs the weights of its step: `settle` first).
    fn no_chain(&self) -> Result<()> {
        match self.chain {
            Some(_) => Err(Error::Internal("a step's backward chain is still owed (settle first)".into())),
            None => Ok(()),
        }
    }
}

/// A step's forward pass, to differentiate from the output down: the gradients reaching each layer's
/// output from the teaching path (`d_act`) and reaching its input from the rule (`d_pre`), and its
/// pre-activations z and inputs a.
struct Chain {
    d_act: Vec<Option<Tensor>>,
    d_pre: Vec<Tensor>,
    z: Vec<Tensor>,
    pre: Vec<Tensor>,
}

/// The forward pass's dzᵀa as the fused loops take it over (`Owed::pending`).
fn owed_term(dz: Tensor, a: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok((dz.f_contiguous()?, a.f_contiguous()?))
}

/// Layer k's update through the fused loop, which also turns G into its direct part G − m Q ⊙ r in place
/// (kept as is under first order) and, with `unstep`, the weights after the step into those before it.
fn update_adjoint_fused(
    layer: &LayerStep<'_>,
    step: &StepInput<'_>,
    rate_full: &mut Tensor,
    owed_k: Option<(&Tensor, &Tensor)>,
) -> Result<UpdateAdjoint> {
    let full = step.mode == StepMode::Full;
    let mut direct = layer.g.shallow_clone();
    let (post_k, pre_k) = (layer.post.f_contiguous()?, layer.pre.f_contiguous()?);
    let out = crate::kernels::local_step_adjoint(
        &mut direct,
        full,
        layer.w,
        step.unstep,
        &post_k,
        &pre_k,
        layer.rate,
        step_decay(step.tape.oja, layer.gamma),
        layer.m,
        layer.c,
        rate_full,
        owed_k,
    )?;
    Ok(UpdateAdjoint { q: out.q, rowsum: out.rowsum, scale_grad: out.scale_grad, direct: full.then_some(direct) })
}

/// Layer k's update with libtorch operations, from the rule's term m(ãᵀa − r ⊙ W) on the tape.
fn update_adjoint_ops(
    layer: &LayerStep<'_>,
    term: &Tensor,
    full: bool,
    rate_full: &mut Tensor,
) -> Result<UpdateAdjoint> {
    let g = layer.g;
    let gc = match layer.c {
        Some(c) => g.f_mul(&c.f_unsqueeze(2)?)?,
        None => g.shallow_clone(),
    };
    // In place, at the weights' own size: reduced to the rate's shape once, at the end.
    let _ = rate_full.f_addcmul_(&gc, term)?;
    let scale_grad = match layer.c {
        Some(_) => Some(g.f_mul(layer.rate)?.f_mul(term)?.f_sum_dim_intlist([2i64].as_slice(), false, None::<Kind>)?),
        None => None,
    };
    let q = gc.f_mul(layer.rate)?;
    let rowsum = match layer.r {
        Some(_) => Some(q.f_mul(layer.w)?.f_sum_dim_intlist([2i64].as_slice(), false, None::<Kind>)?),
        None => None,
    };
    let direct = if full {
        Some(match layer.r {
            Some(r) => {
                let d = match layer.gamma {
                    Some(gamma) => r.f_mul(gamma)?,
                    None => r.shallow_clone(),
                };
                g.f_addcmul(&q, &d.f_mul_scalar(-layer.m)?)? // G − m Q ⊙ d
            }
            None => g.shallow_clone(),
        })
    } else {
        None
    };
    Ok(UpdateAdjoint { q, rowsum, scale_grad, direct })
}

/// Through a learned decay d = γ ⊙ r (r = Σ_b ã²), whose adjoint is ∂L/∂d = −m rowsum(Q ⊙ W): the rowsum
/// scaled by γ for ∂L/∂ã (through r), and ∂L/∂γ = −m Σ_e r ⊙ rowsum summed to γ's shape.
fn decay_adjoint(layer: &LayerStep<'_>, gamma: &Tensor, rowsum: Tensor) -> Result<(Tensor, Tensor)> {
    let r = match layer.r {
        Some(r) => r.shallow_clone(),
        None => row_energy(layer.post)?, // the fused loops form r in registers only
    };
    let d_gamma = r.f_mul(&rowsum.f_unsqueeze(2)?)?.f_mul_scalar(-layer.m)?.f_sum_to_size(gamma.size())?;
    Ok((rowsum.f_mul(&gamma.f_reshape([-1])?)?, d_gamma))
}

impl Chain {
    /// Runs the chain from the output down with the step's weights `w`, adding each layer's Σ dz to its
    /// bias adjoint and handing `each(k, dz_k, a_k)` every layer in turn (dz_k none where no gradient
    /// reaches it; a_k the layer's input); returns ∂L/∂(the step's input features).
    fn run(
        mut self,
        w: &[Tensor],
        gb: &mut [Tensor],
        mut each: impl FnMut(usize, Option<Tensor>, &Tensor) -> Result<()>,
    ) -> Result<Option<Tensor>> {
        let n = w.len();
        // ∂L/∂(input of layer k), through its weights and through the rule (d_pre): the gradient of the
        // output of layer k − 1.
        let mut d_input: Option<Tensor> = None;
        for k in (0..n).rev() {
            let mut da = self.d_act[k].take();
            if let Some(d) = d_input.take() {
                accumulate(&mut da, d)?;
            }
            let Some(da) = da else {
                d_input = Some(self.d_pre[k].shallow_clone());
                each(k, None, &self.pre[k])?;
                continue;
            };
            let dz = if k + 1 == n { da } else { relu_backward(&da, &self.z[k])? };
            gb[k] = gb[k].f_add(&dz.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?)?; // b is constant: its adjoint sums
            d_input = Some(self.d_pre[k].f_baddbmm(&dz, &w[k], 1.0, 1.0)?);
            each(k, Some(dz), &self.pre[k])?;
        }
        Ok(d_input)
    }

    /// Runs the chain, leaving each layer's dzᵀa owed to its G (the fused loops); returns ∂L/∂(the
    /// step's input features).
    fn settle(
        self,
        w: &[Tensor],
        gb: &mut [Tensor],
        pending: &mut [Option<(Tensor, Tensor)>],
    ) -> Result<Option<Tensor>> {
        self.run(w, gb, |k, dz, a| {
            pending[k] = dz.map(|dz| owed_term(dz, a)).transpose()?;
            Ok(())
        })
    }
}

pub(super) struct LocalAdjoint {
    step: LocalStep,
    grads: Grads,
    owed: Owed,
    /// Whether a step's backward chain may wait for the step before it (`Owed::chain`): not when the
    /// features' adjoints are wanted, which the chain gives.
    defer_chain: bool,
    /// The effective rates with their graph to the stored parameters (for the surrogate).
    rates_graph: Vec<Tensor>,
    /// The learned decay coefficients γ = σ(φ) with their graph to φ (for the surrogate).
    decay_graph: Vec<Option<Tensor>>,
    feedback_idx: Vec<Vec<(usize, usize)>>,
    strength_idx: Vec<usize>,
}

impl LocalAdjoint {
    pub fn new(learner: &Learner, fused: bool) -> Result<Self> {
        let rule: &LocalRule = learner.local_rule().ok_or_else(|| Error::Internal("not a local rule".into()))?;
        let params = &learner.params;
        let rates_graph: Vec<Tensor> = (0..rule.rates.len()).map(|i| rule.rate(params, i)).collect::<Result<_>>()?;
        let decay_graph: Vec<Option<Tensor>> =
            (0..rule.rates.len()).map(|i| rule.decay_coefficient(params, i)).collect::<Result<_>>()?;
        let mut rule_values = RuleValues {
            decay: decay_graph
                .iter()
                .map(|g| g.as_ref().map(|g| g.f_detach()).transpose())
                .collect::<std::result::Result<_, _>>()?,
            rates: rates_graph.iter().map(|t| t.f_detach()).collect::<std::result::Result<_, _>>()?,
            feedback: rule
                .feedback
                .iter()
                .map(|f| {
                    f.layers
                        .iter()
                        .map(|&(b, c)| Ok((params.at(b).f_detach()?, params.at(c).f_detach()?)))
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<_>>()?,
            strength: rule
                .feedback
                .iter()
                .map(|f| Ok(params.at(f.strength).f_double_value(&[])?))
                .collect::<Result<_>>()?,
            multipliers: rule.multipliers.clone(),
            rate_ranges: Vec::new(),
            stacked: None,
            oja: rule.oja_decay,
            hebb_first_step: rule.hebb_first_step,
            normalize: rule.normalize,
        };
        // Where each operation is a launch (the libtorch-operation path, CUDA's). With the fused CPU loops
        // the per-layer maps run on both cores and the stacked one was measured 3–7% slower.
        if !fused {
            rule_values.stacked = Stacked::of(&learner.cfg, &rule_values.feedback, &rule_values.strength)?;
        } else {
            rule_values.rate_ranges =
                rule_values.rates.iter().zip(&rule_values.decay).map(decayed_range).collect::<Result<_>>()?;
        }
        let feedback_idx: Vec<Vec<(usize, usize)>> = rule.feedback.iter().map(|f| f.layers.clone()).collect();
        let n = rates_graph.len();
        let grads = Grads {
            feedback: feedback_idx.iter().map(|l| l.iter().map(|_| (None, None)).collect()).collect(),
            strength: (0..n).map(|_| None).collect(),
            stacked: None,
            rate_full: Vec::new(),
            decay: (0..n).map(|_| None).collect(),
        };
        Ok(Self {
            step: LocalStep {
                cfg: learner.cfg.clone(),
                rule: rule_values,
                n,
                fused,
                bias_rows: std::cell::OnceCell::new(),
            },
            grads,
            owed: Owed { pending: (0..n).map(|_| None).collect(), chain: None },
            defer_chain: false,
            rates_graph,
            decay_graph,
            feedback_idx,
            strength_idx: rule.feedback.iter().map(|f| f.strength).collect(),
        })
    }

    /// The strength and feedback-map gradients of each layer: the per-layer accumulators, or the
    /// stacked map's split by layer.
    #[allow(clippy::type_complexity)]
    fn feedback_grads(&self) -> Result<(Vec<Option<Tensor>>, Vec<Vec<(Option<Tensor>, Option<Tensor>)>>)> {
        let g = &self.grads;
        let (Some(acc), Some(st)) = (&g.stacked, &self.step.rule.stacked) else {
            return Ok(g.per_layer());
        };
        let by_layer = |t: &Tensor| -> Result<Vec<Tensor>> {
            Ok(t.f_sum_dim_intlist([0i64, 1].as_slice(), false, None::<Kind>)?.f_split_with_sizes(&st.sizes, 0)?)
        };
        let strength =
            by_layer(&acc.strength)?.into_iter().map(|t| Ok(Some(t.f_sum(None::<Kind>)?))).collect::<Result<_>>()?;
        let maps = acc
            .b
            .f_split_with_sizes(&st.sizes, 0)?
            .into_iter()
            .zip(by_layer(&acc.c)?)
            .map(|(b, c)| vec![(Some(b), Some(c))])
            .collect();
        Ok((strength, maps))
    }
}

impl StepAdjoint for LocalAdjoint {
    type Tape = StepTape;
    /// The pre-activations z of each layer: all else in the tape follows from them without the weights.
    type Kept = Vec<Tensor>;

    fn forward(
        &self,
        t: usize,
        w: &[Tensor],
        b: &[Tensor],
        x: &Tensor,
        y: &Tensor,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>, StepTape)> {
        let (next, tape) = self.step.forward(t, w, b, x, y)?;
        Ok((next, b.iter().map(|t| t.shallow_clone()).collect(), tape))
    }

    fn backward(
        &mut self,
        _t: usize,
        w: &[Tensor],
        _b: &[Tensor],
        tape: StepTape,
        gw: Vec<Tensor>,
        mut gb: Vec<Tensor>,
        mode: StepMode,
        unstep: bool,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>, Option<Tensor>)> {
        let step = StepInput { w, tape: &tape, mode, unstep };
        let mut pass =
            PassState { grads: &mut self.grads, gb: &mut gb, owed: &mut self.owed, defer_chain: self.defer_chain };
        let (gw, dx) = self.step.backward(&step, gw, &mut pass)?;
        Ok((gw, gb, dx))
    }

    fn features_need_adjoints(&mut self, needed: bool) {
        self.defer_chain = !needed;
    }

    fn settle(&mut self, w: &[Tensor], gb: &mut [Tensor]) -> Result<()> {
        self.owed.settle(w, gb)
    }

    /// The fused loops run a step backwards; derivative feedback needs the weights before the step to
    /// form its teaching signal, so its steps are recomputed instead.
    fn keep(&self, _t: usize, tape: &StepTape) -> Result<Option<(Vec<Tensor>, f64)>> {
        if !self.step.fused || self.step.cfg.feedback.kind == FeedbackKind::Derivative {
            return Ok(None);
        }
        let mut gain: f64 = 1.0;
        if tape.oja {
            for k in 0..self.step.n {
                let post = tape.post[k].f_contiguous()?;
                let m = self.step.multiplier(k, &post);
                gain = gain.max(crate::kernels::unstep_gain(
                    &post,
                    m,
                    tape.scale[k].as_ref(),
                    &self.step.rule.rate_ranges[k],
                )?);
            }
        }
        Ok(Some((tape.acts.z.iter().map(|z| z.shallow_clone()).collect(), gain)))
    }

    fn kept_bytes(z: &Vec<Tensor>) -> usize {
        z.iter().map(|t| t.numel() * t.kind().elt_size_in_bytes()).sum()
    }

    fn rebuild(&self, t: usize, z: Vec<Tensor>, x: &Tensor, y: &Tensor, w_after: &[Tensor]) -> Result<StepTape> {
        self.step.rebuild(t, z, x, y, w_after)
    }

    /// Only the rate gradients accumulate in place; the rest are replaced at each step (`accumulate`).
    fn save(&self) -> Result<Box<dyn std::any::Any>> {
        if self.grads.stacked.is_some() {
            return Err(Error::Internal(
                "the stacked feedback map's gradients are not saved (fused loops only)".into(),
            ));
        }
        let (strength, feedback) = self.grads.per_layer();
        let rate_full =
            self.grads.rate_full.iter().map(|t| t.f_detach_copy()).collect::<std::result::Result<_, _>>()?;
        let decay = self.grads.decay.iter().map(|t| t.as_ref().map(|t| t.shallow_clone())).collect();
        let saved = Grads { feedback, strength, stacked: None, rate_full, decay };
        self.owed.no_chain()?;
        let pending: Vec<Option<(Tensor, Tensor)>> =
            self.owed.pending.iter().map(|p| p.as_ref().map(|(d, a)| (d.shallow_clone(), a.shallow_clone()))).collect();
        Ok(Box::new((saved, pending)))
    }

    fn restore(&mut self, saved: Box<dyn std::any::Any>) -> Result<()> {
        let (grads, pending) = *saved
            .downcast::<(Grads, Vec<Option<(Tensor, Tensor)>>)>()
            .map_err(|_| Error::Internal("not this rule's saved state".into()))?;
        (self.grads, self.owed.pending) = (grads, pending);
        Ok(())
    }

    fn flush(&mut self, gw: &mut [Tensor]) -> Result<()> {
        self.owed.no_chain()?;
        for (g, owed) in gw.iter_mut().zip(self.owed.pending.iter_mut()) {
            if let Some((dz, a)) = owed.take() {
                add_forward_term(g, &dz, &a)?;
            }
        }
        Ok(())
    }

    fn surrogate(&self, params: &ParamStore) -> Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        let g = &self.grads;
        let (strength, feedback) = self.feedback_grads()?;
        for k in 0..self.step.n {
            if let Some(full) = g.rate_full.get(k) {
                accumulate(
                    &mut total,
                    dot(&self.rates_graph[k], &full.f_sum_to_size(self.step.rule.rates[k].size())?)?,
                )?;
            }
            if let Some(gs) = &strength[k] {
                accumulate(&mut total, dot(params.at(self.strength_idx[k]), gs)?)?;
            }
            if let (Some(gamma), Some(dg)) = (&self.decay_graph[k], &g.decay[k]) {
                accumulate(&mut total, dot(gamma, dg)?)?;
            }
            for (j, (gb, gc)) in feedback[k].iter().enumerate() {
                let (bi, ci) = self.feedback_idx[k][j];
                for (grad, index) in [(gb, bi), (gc, ci)] {
                    if let Some(grad) = grad {
                        accumulate(&mut total, dot(params.at(index), grad)?)?;
                    }
                }
            }
        }
        Ok(total)
    }
}

impl LocalStep {
    /// One forward inner step without a graph: the new fast weights and the tape of the step.
    fn forward(&self, t: usize, w: &[Tensor], b: &[Tensor], x: &Tensor, y: &Tensor) -> Result<(Vec<Tensor>, StepTape)> {
        if self.bias_rows.get().is_none() {
            let rows = b.iter().map(bias_rows).collect::<Result<Vec<_>>>()?;
            let _ = self.bias_rows.set(rows);
        }
        let acts = tail(x, w, self.bias_rows.get().expect("set above"))?;
        let (post, feedback, energies) = self.teaching(&acts, w, y)?;
        let oja = self.oja_at(t);
        let update = |k: usize| -> Result<LayerUpdate> {
            let m = self.multiplier(k, &post[k]);
            let c = self.scale(&post[k], &acts.pre[k])?;
            if self.fused {
                // The kernel forms ãᵀa and Oja's r = Σ_b ã² itself, in registers.
                let (post_k, pre_k) = (post[k].f_contiguous()?, acts.pre[k].f_contiguous()?);
                let decay = step_decay(oja, self.rule.decay[k].as_ref());
                let next =
                    crate::kernels::local_step(&w[k], &post_k, &pre_k, &self.rule.rates[k], decay, m, c.as_ref())?;
                Ok((next, None, None, c))
            } else {
                let post_sq = match (oja, &energies) {
                    (false, _) => None,
                    (true, Some(all)) => Some(all[k].shallow_clone()),
                    (true, None) => Some(row_energy(&post[k])?),
                };
                let decay = match (&post_sq, &self.rule.decay[k]) {
                    (Some(r), Some(gamma)) => Some(r.f_mul(gamma)?),
                    (r, _) => r.as_ref().map(Tensor::shallow_clone),
                };
                let t0 = plain_term(&post[k], &acts.pre[k], &w[k], decay.as_ref(), m)?;
                let normalized = match &c {
                    Some(c) => t0.f_mul(&c.f_unsqueeze(2)?)?,
                    None => t0.shallow_clone(),
                };
                let next = w[k].f_addcmul(&self.rule.rates[k], &normalized)?;
                Ok((next, Some(t0), post_sq, c))
            }
        };
        let updates = self.per_layer(w, update)?;
        let (mut next, mut term, mut post_sq, mut scale) = (
            Vec::with_capacity(self.n),
            Vec::with_capacity(self.n),
            Vec::with_capacity(self.n),
            Vec::with_capacity(self.n),
        );
        for (nw, t0, sq, c) in updates {
            next.push(nw);
            term.push(t0);
            post_sq.push(sq);
            scale.push(c);
        }
        Ok((next, StepTape { acts, post, oja, post_sq, term, scale, feedback }))
    }

    /// Whether step t uses Oja's decay (the Hebb-first-step option turns it off on step 0).
    fn oja_at(&self, t: usize) -> bool {
        uses_decay(self.rule.oja, self.rule.hebb_first_step, t)
    }

    /// The tape of step t (fused loops) from its pre-activations z: the activities, the teaching
    /// activities and the normalisation factors, as `forward` formed them. `w` only sizes the layers
    /// (derivative feedback, which reads it, never comes here: `LocalAdjoint::keep`).
    fn rebuild(&self, t: usize, z: Vec<Tensor>, x: &Tensor, y: &Tensor, w: &[Tensor]) -> Result<StepTape> {
        let acts = tail_from_z(x, z)?;
        let (post, feedback, _) = self.teaching(&acts, w, y)?;
        let scale = (0..self.n).map(|k| self.scale(&post[k], &acts.pre[k])).collect::<Result<_>>()?;
        Ok(StepTape {
            acts,
            post,
            oja: self.oja_at(t),
            post_sq: (0..self.n).map(|_| None).collect(),
            term: (0..self.n).map(|_| None).collect(),
            scale,
            feedback,
        })
    }

    /// `layer(k)` for every plastic layer: shared out over the CPU threads with the fused loops
    /// (kernels::parallel_tasks), in order otherwise. On CUDA, where a step's time is the host's time
    /// to launch its many small operations, launching layers from several threads was measured slower
    /// (H200, FLP meta-batch 1: 1.8 s per meta-step on one thread, 2.2–2.5 s on 4 to 16).
    fn per_layer<T: Send>(&self, w: &[Tensor], layer: impl Fn(usize) -> Result<T>) -> Result<Vec<T>> {
        if self.fused {
            let sizes: Vec<usize> = w.iter().map(|t| t.numel()).collect();
            crate::kernels::parallel_tasks(&sizes, layer)
        } else {
            (0..self.n).map(layer).collect()
        }
    }

    /// The layer's multiplier m, with the batch normalisation's constant 1/B folded in.
    fn multiplier(&self, k: usize, post: &Tensor) -> f64 {
        folded_multiplier(self.rule.multipliers[k], self.rule.normalize, post.size()[1])
    }

    /// The normalisation factor c [E, O] that depends on the activities (rules/local.rs).
    fn scale(&self, post: &Tensor, pre: &Tensor) -> Result<Option<Tensor>> {
        normalization_factor(self.rule.normalize, post, pre)
    }

    /// Teaching activities ã_k (as feedback.rs computes them) with what their backward needs; with the
    /// stacked map and Oja's rule also each layer's row energies Σ_b ã² [E, O, 1], formed for all layers
    /// at once.
    fn teaching(
        &self,
        acts: &TailActivations,
        w: &[Tensor],
        y: &Tensor,
    ) -> Result<(Vec<Tensor>, FeedbackTape, Option<Vec<Tensor>>)> {
        let cfg = &self.cfg;
        let y_hat = acts.output();
        let y_dense = dense_target(cfg, y, y_hat.size()[2], y_hat.kind())?;
        let classification = cfg.task == TaskKind::Classification;
        if cfg.feedback.kind == FeedbackKind::Derivative {
            let (delta_out, softmax) = if classification {
                let p = y_hat.f_softmax(-1, y_hat.kind())?;
                (y_dense.f_sub(&p)?, Some(p))
            } else {
                (y_dense.f_sub(y_hat)?, None)
            };
            let deltas = crate::feedback::derivative_signals(acts, w, delta_out)?;
            return Ok((deltas, FeedbackTape::Derivative { softmax }, None));
        }
        let (e, softmax) = match cfg.signal() {
            Signal::Error => (y_dense.f_sub(y_hat)?, None),
            Signal::Target => (y_dense.shallow_clone(), None),
            Signal::CrossEntropy => {
                let p = y_hat.f_softmax(-1, y_hat.kind())?;
                (y_dense.f_sub(&p)?, Some(p))
            }
        };
        if let Some(st) = &self.rule.stacked {
            let zf = e.f_linear(&st.b, Some(&st.c))?;
            let f = if cfg.feedback.activation == Activation::Relu { zf.f_relu()? } else { zf.shallow_clone() };
            let a = Tensor::f_cat(&acts.post, 2)?;
            let diff = f.f_sub(&a)?;
            // ã = a + s (f − a), each row with its own layer's s.
            let post_all = a.f_addcmul(&diff, &st.s)?;
            let energies = if self.rule.oja {
                let all =
                    post_all.f_square()?.f_sum_dim_intlist([1i64].as_slice(), true, None::<Kind>)?.f_transpose(1, 2)?;
                Some(all.f_split_with_sizes(&st.sizes, 1)?)
            } else {
                None
            };
            return Ok((
                post_all.f_split_with_sizes(&st.sizes, 2)?,
                FeedbackTape::Stacked { zf, diff, e, softmax },
                energies,
            ));
        }
        let layer = |k: usize| -> Result<(Tensor, Option<MapTape>)> {
            let is_output = k + 1 == self.n;
            let a = &acts.post[k];
            if is_output && classification && cfg.feedback.clamp_output {
                return Ok((y_dense.shallow_clone(), None));
            }
            if !is_output && cfg.feedback.kind == FeedbackKind::None {
                return Ok((a.shallow_clone(), None));
            }
            let mut h = e.shallow_clone();
            let mut inputs = Vec::new();
            let mut pre = Vec::new();
            for (bw, c) in &self.rule.feedback[k] {
                let z = h.f_linear(bw, Some(c))?;
                inputs.push(h);
                h = if cfg.feedback.activation == Activation::Relu { z.f_relu()? } else { z.shallow_clone() };
                pre.push(z);
            }
            // ã = s·f + (1 − s)·a
            Ok((a.f_lerp(&h, self.rule.strength[k])?, Some(MapTape { inputs, pre, f: h })))
        };
        let (post, layers) = self.per_layer(w, layer)?.into_iter().unzip();
        Ok((post, FeedbackTape::Map { layers, softmax }, None))
    }

    /// Propagates G (= ∂L/∂W after step t, plus what `pass.owed` still owes it) back through step t;
    /// returns ∂L/∂W before it (again with `owed`) and ∂L/∂x_t (the step's input features) when
    /// the step is differentiated fully and its chain is not deferred (`defer_chain`: it then waits in
    /// `owed` for the step before it).
    fn backward(
        &self,
        step: &StepInput<'_>,
        g: Vec<Tensor>,
        pass: &mut PassState<'_>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        let &StepInput { w, tape, mode, unstep } = step;
        if unstep && (!self.fused || mode == StepMode::Constant) {
            return Err(Error::Internal("only the fused loops run a differentiated step backwards".into()));
        }
        // A deferred chain runs under this step's adjoint loops only when they run this step backwards
        // (`w` then holds the weights after it: the ones the chain's step used).
        let pipelined = self.fused && unstep && mode == StepMode::Full;
        if !pipelined {
            pass.owed.settle(w, pass.gb)?;
        }
        if mode == StepMode::Constant {
            return Ok((g, None)); // G passes unchanged, and so does what is owed to it
        }
        let full = mode == StepMode::Full;
        // The rate gradients accumulate in place from the first step differentiated on.
        self.start_rate_accumulators(pass.grads, &g)?;
        // The rule's update first: it gives the teaching path its ∂L/∂ã.
        let (d_post, d_pre, direct) = self.update_adjoints(step, &g, pass)?;
        // Gradients reaching the layers' outputs a_k (hidden: ReLU(z_k), output: ŷ) from the teaching path.
        let mut d_act: Vec<Option<Tensor>> = (0..self.n).map(|_| None).collect();
        let mut extra_w: Vec<Option<Tensor>> = (0..self.n).map(|_| None).collect();
        self.teaching_backward(w, tape, d_post, full, &mut d_act, &mut extra_w, pass.grads)?;
        if !full {
            return Ok((g, None)); // first order: dW_{t+1}/dW_t = I and the activations are constants
        }
        // The forward pass of the step, from the output down.
        let acts = &tape.acts;
        let chain = Chain {
            d_act,
            d_pre,
            z: acts.z.iter().map(|z| z.shallow_clone()).collect(),
            pre: acts.pre.iter().map(|a| a.shallow_clone()).collect(),
        };
        if pipelined && pass.defer_chain && extra_w.iter().all(Option::is_none) {
            pass.owed.chain = Some(chain); // run under the step before this one's adjoint loops
            return Ok((direct, None));
        }
        // Run here: the step's weight adjoints and the features' adjoint need the chain now.
        self.weight_adjoints(step, chain, direct, extra_w, pass)
    }

    /// The rate gradients' full-size accumulators, made at the first step differentiated (when E is known).
    fn start_rate_accumulators(&self, grads: &mut Grads, g: &[Tensor]) -> Result<()> {
        if grads.rate_full.is_empty() {
            // [O, I] for the fused loops (they sum over episodes), [E, O, I] for libtorch operations.
            let shape = |gk: &Tensor| if self.fused { gk.size()[1..].to_vec() } else { gk.size() };
            grads.rate_full = g
                .iter()
                .map(|gk| Tensor::f_zeros(shape(gk), (gk.kind(), gk.device())))
                .collect::<std::result::Result<_, _>>()?;
        }
        Ok(())
    }

    /// Back through every layer's update (`layer_adjoint`): per layer ∂L/∂ã and, fully, ∂L/∂a from the
    /// rule and the direct part of ∂L/∂W. The layers run side by side, or each under the chain that the
    /// step after this one still owes, as that chain passes it.
    fn update_adjoints(
        &self,
        step: &StepInput<'_>,
        g: &[Tensor],
        pass: &mut PassState<'_>,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>, Vec<Tensor>)> {
        let (n, w) = (self.n, step.w);
        let PassState { grads, gb, owed, .. } = pass;
        let rate_full = &grads.rate_full;
        let layer = |k: usize, owed_k: Option<(&Tensor, &Tensor)>| -> Result<LayerAdjoint> {
            self.layer_adjoint(k, step, &g[k], &rate_full[k], owed_k)
        };
        let mut d_post = Vec::with_capacity(n);
        let mut d_pre = Vec::with_capacity(n);
        let mut direct = Vec::with_capacity(n);
        let layers = match owed.chain.take() {
            // The chain of the step after this one hands each layer's dz to its adjoint loop as it passes
            // it, top-down; the loop then runs its step backwards, over the weights the chain has read.
            Some(chain) => {
                let slots: Vec<std::sync::Mutex<Option<(Tensor, Tensor)>>> =
                    (0..n).map(|_| std::sync::Mutex::new(None)).collect();
                let produce = |release: &dyn Fn(usize)| -> Result<()> {
                    chain.run(w, gb, |k, dz, a| {
                        *slots[k].lock().unwrap_or_else(|e| e.into_inner()) =
                            dz.map(|dz| owed_term(dz, a)).transpose()?;
                        release(k);
                        Ok(())
                    })?;
                    Ok(())
                };
                let task = |k: usize| {
                    let owed_k = slots[k].lock().unwrap_or_else(|e| e.into_inner()).take();
                    layer(k, owed_k.as_ref().map(|(dz, a)| (dz, a)))
                };
                crate::kernels::pipelined_tasks(n, produce, task)?
            }
            None => self.per_layer(w, |k| layer(k, owed.pending[k].as_ref().map(|(dz, a)| (dz, a))))?,
        };
        for (k, (dp, dpre, gn, dgamma)) in layers.into_iter().enumerate() {
            d_post.push(dp);
            d_pre.extend(dpre);
            direct.extend(gn);
            if let Some(d) = dgamma {
                accumulate(&mut grads.decay[k], d)?;
            }
        }
        if self.fused {
            owed.pending.iter_mut().for_each(|p| *p = None); // the loops added it to G
        }
        Ok((d_post, d_pre, direct))
    }

    /// Layer k's share of `update_adjoints`, `owed_k` the dzᵀa still owed to its G (as (dz, a)); the rate
    /// gradient accumulates in place in the layer's own full-size accumulator `rate_full`.
    fn layer_adjoint(
        &self,
        k: usize,
        step: &StepInput<'_>,
        g: &Tensor,
        rate_full: &Tensor,
        owed_k: Option<(&Tensor, &Tensor)>,
    ) -> Result<LayerAdjoint> {
        let tape = step.tape;
        let post = &tape.post[k];
        let layer = LayerStep {
            rate: &self.rule.rates[k],
            post,
            pre: &tape.acts.pre[k],
            m: self.multiplier(k, post),
            r: tape.post_sq[k].as_ref(),
            c: tape.scale[k].as_ref(),
            gamma: self.rule.decay[k].as_ref(),
            w: &step.w[k],
            g,
        };
        // Q = c P ⊙ G, and ∂L/∂c of each row where c depends on the activities.
        let mut rate_full = rate_full.shallow_clone(); // this layer's own accumulator
        let update = if self.fused {
            update_adjoint_fused(&layer, step, &mut rate_full, owed_k)?
        } else {
            let term =
                tape.term[k].as_ref().ok_or_else(|| Error::Internal("the step's tape lacks the rule's term".into()))?;
            update_adjoint_ops(&layer, term, step.mode == StepMode::Full, &mut rate_full)?
        };
        self.activity_adjoints(&layer, update, step.mode == StepMode::Full)
    }

    /// From the update's adjoint to the activities': ∂L/∂ã = m (a Qᵀ − 2 ã ⊙ rowsum) and, fully,
    /// ∂L/∂a = m ã Q, each then through the normalisation factor where it depends on them; with a learned
    /// decay coefficient γ, rowsum ⊙ γ in ∂L/∂ã and ∂L/∂γ (`decay_adjoint`).
    fn activity_adjoints(&self, layer: &LayerStep<'_>, update: UpdateAdjoint, full: bool) -> Result<LayerAdjoint> {
        let UpdateAdjoint { q, rowsum, scale_grad, direct } = update;
        let (post, pre, m) = (layer.post, layer.pre, layer.m);
        let (rowsum, d_gamma) = match (rowsum, layer.gamma) {
            (Some(rowsum), Some(gamma)) => {
                let (scaled, d_gamma) = decay_adjoint(layer, gamma, rowsum)?;
                (Some(scaled), Some(d_gamma))
            }
            (rowsum, _) => (rowsum, None),
        };
        // m (a Qᵀ − 2 ã ⊙ rowsum), one baddbmm.
        let q_t = q.f_transpose(1, 2)?;
        let mut dp = match rowsum {
            Some(rowsum) => post.f_mul(&rowsum.f_unsqueeze(1)?)?.f_baddbmm(pre, &q_t, -2.0 * m, m)?,
            None if m == 1.0 => pre.f_matmul(&q_t)?,
            None => pre.f_matmul(&q_t)?.f_mul_scalar(m)?,
        };
        let mut dpre = if !full {
            None
        } else if m == 1.0 {
            Some(post.f_matmul(&q)?)
        } else {
            Some(post.f_matmul(&q)?.f_mul_scalar(m)?)
        };
        if let (Some(c), Some(sg)) = (layer.c, scale_grad) {
            self.normalization_adjoint(layer, c, sg, &mut dp, dpre.as_mut())?;
        }
        Ok((dp, dpre, direct, d_gamma))
    }

    /// Through the normalisation factor: c = 1/(1 + s) gives ∂L/∂s = −c² ∂L/∂c (`sg`), added to ∂L/∂ã
    /// (`dp`) or ∂L/∂a (`dpre`, fully) by what s is formed from.
    fn normalization_adjoint(
        &self,
        layer: &LayerStep<'_>,
        c: &Tensor,
        sg: Tensor,
        dp: &mut Tensor,
        dpre: Option<&mut Tensor>,
    ) -> Result<()> {
        match self.rule.normalize {
            UpdateNormalization::Presynaptic => {
                if let Some(d) = dpre {
                    // s = Σ_b ‖a_b‖², one per episode (c is one value broadcast along the rows): ∂L/∂s
                    // is −c² times the sum over the rows, and ∂s/∂a = 2a.
                    let c_e = c.f_select(1, 0)?; // [E]
                    let ds = sg
                        .f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?
                        .f_mul(&c_e.f_square()?)?
                        .f_mul_scalar(-2.0)?;
                    *d = d.f_addcmul(layer.pre, &ds.f_view([-1, 1, 1])?)?;
                }
            }
            UpdateNormalization::Bounded => {
                let ds = sg.f_mul(&c.f_square()?)?.f_neg()?; // [E, O]
                *dp = dp.f_add(&layer.post.f_mul(&ds.f_unsqueeze(1)?)?.f_mul_scalar(2.0)?)?;
            }
            UpdateNormalization::None | UpdateNormalization::Batch => {}
        }
        Ok(())
    }

    /// ∂L/∂W of each layer before the step: the direct part, the forward pass's dzᵀa and what the
    /// teaching path added (`extra_w`), from the chain run here; with ∂L/∂(the step's input features).
    fn weight_adjoints(
        &self,
        step: &StepInput<'_>,
        chain: Chain,
        direct: Vec<Tensor>,
        extra_w: Vec<Option<Tensor>>,
        pass: &mut PassState<'_>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        let (w, pre) = (step.w, &step.tape.acts.pre);
        // The fused loops take dzᵀa over from here: it is owed to G until they next read it.
        let mut dzs: Vec<Option<Tensor>> = (0..self.n).map(|_| None).collect();
        let d_x = if self.fused {
            chain.settle(w, pass.gb, &mut pass.owed.pending)?
        } else {
            chain.run(w, pass.gb, |k, dz, _| {
                dzs[k] = dz;
                Ok(())
            })?
        };
        let g_prev = self.per_layer(w, |k| {
            let mut gk = direct[k].shallow_clone();
            if let Some(dz) = &dzs[k] {
                add_forward_term(&mut gk, dz, &pre[k])?;
            }
            match &extra_w[k] {
                Some(e) => Ok(gk.f_add(e)?),
                None => Ok(gk),
            }
        })?;
        Ok((g_prev, d_x))
    }

    /// Back through ã_k: into the feedback parameters, the strengths and (fully) the activations.
    #[allow(clippy::too_many_arguments)]
    fn teaching_backward(
        &self,
        w: &[Tensor],
        tape: &StepTape,
        d_post: Vec<Tensor>,
        full: bool,
        d_act: &mut [Option<Tensor>],
        extra_w: &mut [Option<Tensor>],
        grads: &mut Grads,
    ) -> Result<()> {
        let n = self.n;
        let to_output = full && !self.cfg.feedback.detach_signal;
        let classification = self.cfg.task == TaskKind::Classification;
        match &tape.feedback {
            FeedbackTape::Derivative { softmax } => {
                if !full {
                    return Ok(()); // δ is built from constants only
                }
                // δ_k = (δ_{k+1} W_{k+1}) ⊙ 1[z_k > 0], from the first layer up.
                let mut d_delta: Vec<Tensor> = d_post;
                for k in 0..n - 1 {
                    let du = relu_backward(&d_delta[k], &tape.acts.z[k])?;
                    let d_next = du.f_matmul(&w[k + 1].f_transpose(1, 2)?)?;
                    d_delta[k + 1] = d_delta[k + 1].f_add(&d_next)?;
                    accumulate(&mut extra_w[k + 1], tape.post[k + 1].f_transpose(1, 2)?.f_matmul(&du)?)?;
                }
                if to_output {
                    let d_out = &d_delta[n - 1];
                    let d_yhat = if classification {
                        softmax_backward(d_out, softmax.as_ref().unwrap())?.f_neg()?
                    } else {
                        d_out.f_neg()?
                    };
                    accumulate(&mut d_act[n - 1], d_yhat)?;
                }
            }
            FeedbackTape::Map { layers, softmax } => {
                // Per layer: ∂L/∂a_k, ∂L/∂s_k, the feedback map's parameter gradients and ∂L/∂e through it.
                type MapGrads = (Option<Tensor>, Option<Tensor>, Vec<(Tensor, Tensor)>, Option<Tensor>);
                let layer = |k: usize| -> Result<MapGrads> {
                    let dp = &d_post[k];
                    let Some(map) = &layers[k] else {
                        // ã is the layer's own activity (no feedback) or the clamped target.
                        let is_output = k + 1 == n;
                        let to_act = full && !(is_output && classification && self.cfg.feedback.clamp_output);
                        return Ok((to_act.then(|| dp.shallow_clone()), None, Vec::new(), None));
                    };
                    let s = self.rule.strength[k];
                    let a = &tape.acts.post[k];
                    let d_strength = dp.f_mul(&map.f.f_sub(a)?)?.f_sum(None::<Kind>)?;
                    let d_a = if full { Some(dp.f_mul_scalar(1.0 - s)?) } else { None };
                    let mut dh = dp.f_mul_scalar(s)?;
                    let mut fb = Vec::with_capacity(map.pre.len());
                    for j in (0..map.pre.len()).rev() {
                        let dz = if self.cfg.feedback.activation == Activation::Relu {
                            relu_backward(&dh, &map.pre[j])?
                        } else {
                            dh
                        };
                        let dz_flat = flat(&dz)?;
                        fb.push((
                            dz_flat.f_transpose(0, 1)?.f_mm(&flat(&map.inputs[j])?)?,
                            dz_flat.f_sum_dim_intlist([0i64].as_slice(), false, None::<Kind>)?,
                        ));
                        dh = dz.f_matmul(&self.rule.feedback[k][j].0)?;
                    }
                    fb.reverse();
                    Ok((d_a, Some(d_strength), fb, to_output.then_some(dh)))
                };
                let mut d_e: Option<Tensor> = None;
                for (k, (d_a, d_strength, fb, de)) in self.per_layer(w, layer)?.into_iter().enumerate() {
                    if let Some(d) = d_a {
                        accumulate(&mut d_act[k], d)?;
                    }
                    if let Some(d) = d_strength {
                        accumulate(&mut grads.strength[k], d)?;
                    }
                    for (j, (dgb, dgc)) in fb.into_iter().enumerate() {
                        let (gb, gc) = &mut grads.feedback[k][j];
                        accumulate(gb, dgb)?;
                        accumulate(gc, dgc)?;
                    }
                    if let Some(d) = de {
                        accumulate(&mut d_e, d)?;
                    }
                }
                if let Some(de) = d_e {
                    self.signal_backward(de, softmax.as_ref(), d_act)?;
                }
            }
            FeedbackTape::Stacked { zf, diff, e, softmax } => {
                let st = self
                    .rule
                    .stacked
                    .as_ref()
                    .ok_or_else(|| Error::Internal("a stacked tape without the stacked map".into()))?;
                let dp = Tensor::f_cat(&d_post, 2)?;
                if grads.stacked.is_none() {
                    grads.stacked = Some(StackedGrads {
                        strength: dp.f_zeros_like()?,
                        b: st.b.f_zeros_like()?,
                        c: dp.f_zeros_like()?,
                    });
                }
                let acc = grads.stacked.as_mut().expect("set above");
                let _ = acc.strength.f_addcmul_(&dp, diff)?;
                if full {
                    for (k, d) in dp.f_mul(&st.one_minus_s)?.f_split_with_sizes(&st.sizes, 2)?.into_iter().enumerate() {
                        accumulate(&mut d_act[k], d)?;
                    }
                }
                let dh = dp.f_mul(&st.s)?;
                let dz = if self.cfg.feedback.activation == Activation::Relu { relu_backward(&dh, zf)? } else { dh };
                let _ = acc.b.f_addmm_(&flat(&dz)?.f_transpose(0, 1)?, &flat(e)?)?;
                let _ = acc.c.f_add_(&dz)?;
                if to_output {
                    self.signal_backward(dz.f_matmul(&st.b)?, softmax.as_ref(), d_act)?;
                }
            }
        }
        Ok(())
    }

    /// ∂L/∂e through the feedback signal into the output ŷ.
    fn signal_backward(&self, de: Tensor, softmax: Option<&Tensor>, d_act: &mut [Option<Tensor>]) -> Result<()> {
        let d_yhat = match self.cfg.signal() {
            Signal::Error => Some(de.f_neg()?),
            Signal::CrossEntropy => {
                let p = softmax.ok_or_else(|| Error::Internal("a cross-entropy signal without its softmax".into()))?;
                Some(softmax_backward(&de, p)?.f_neg()?)
            }
            Signal::Target => None,
        };
        if let Some(d) = d_yhat {
            accumulate(&mut d_act[self.n - 1], d)?;
        }
        Ok(())
    }
}
