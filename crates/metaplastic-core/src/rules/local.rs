//! Local plasticity: Oja's rule (with its decay term) and the plain Hebbian rule.
//!   Oja:  ΔW = m · P ⊙ N( ãᵀ a − diag(q) W )      Hebb: ΔW = m · P ⊙ N( ãᵀ a ),   q_i = Σ_b ã_bi²
//!   with a learned decay (`rule.decay`): ΔW = m · P ⊙ N( ãᵀ a − diag(γ ⊙ q) W ),  γ = σ(φ) ∈ (0, 1)
//! a is the layer's forward presynaptic activity, ã the post-synaptic teaching activity shaped by
//! feedback, P the plasticity rates (broadcast from synapse/neuron/layer/global shape), m the
//! hidden-layer multiplier (1 for the output layer). Sums run over the minibatch. N is the update
//! normalisation (`plasticity.normalize`): identity (reference), ·1/B (batch), ·1/(1 + Σ_b ‖a_b‖²)
//! (presynaptic, per episode), row i ·1/(1 + q_i) (bounded).
//! P = g(θ) from the stored parameter θ (`plasticity.parameterization`): θ or exp(θ), times exp(σ_l)
//! with a per-layer log-scale (`plasticity.layerScale`); see `LocalRule::rate`. γ, per layer or per
//! post-synaptic neuron, lets the rule learn how much it forgets, between Hebb (γ → 0) and Oja (γ → 1).
use super::{
    from_values, full, DecayConfig, DecayGranularity, Granularity, InnerRule, RateParameterization, RuleConfig,
    StepInputs, Update, UpdateNormalization,
};
use crate::config::LearnerConfig;
use crate::feedback::{teaching_activity, FeedbackKind, LayerFeedback};
pub use crate::kernels::Decay;
use crate::net::spec::NetSpec;
use crate::params::{Group, ParamStore};
use crate::rng::{normal_vec, Rng};
use crate::Result;
use tch::{Device, Kind, Tensor};

/// Parameter indices of one plastic layer's feedback pathway.
#[derive(Debug, Clone)]
pub struct FeedbackIndices {
    pub layers: Vec<(usize, usize)>,
    pub strength: usize,
}

pub struct LocalRule {
    pub oja_decay: bool,
    /// Oja after a plain Hebbian first inner step (the reference's `--hebb`).
    pub hebb_first_step: bool,
    pub normalize: UpdateNormalization,
    pub parameterization: RateParameterization,
    /// `plasticity.maxRate`: rates are clamped to at most this.
    pub max_rate: Option<f64>,
    /// Plasticity-rate parameter θ of each plastic layer (the same index for a global rate).
    pub rates: Vec<usize>,
    /// Per-layer log-scale σ_l of each plastic layer, when `plasticity.layerScale` is on.
    pub scales: Option<Vec<usize>>,
    /// The decay coefficient's parameter φ (γ = σ(φ)) of each plastic layer, when `rule.decay` is set.
    pub decays: Option<Vec<usize>>,
    pub feedback: Vec<FeedbackIndices>,
    /// Update multiplier of each plastic layer.
    pub multipliers: Vec<f64>,
}

/// The rule's term before the rates: m · N(ãᵀa − diag(d) W) with the decay d = Σ ã² (Oja), γ ⊙ Σ ã²
/// (learned γ) or none (Hebb, `decay` false), post [E, B, out], pre [E, B, in], w [E, out, in]. The
/// update is rate ⊙ term, applied by the driver as one fused W + rate ⊙ term.
pub fn local_term<'a>(
    post: &Tensor,
    pre: &Tensor,
    w: &Tensor,
    decay: impl Into<Decay<'a>>,
    multiplier: f64,
    normalize: UpdateNormalization,
) -> Result<Tensor> {
    let energy = decay_energy(decay.into(), post)?;
    let term = plain_term(post, pre, w, energy.as_ref(), multiplier)?;
    Ok(match (normalize, normalization_factor(normalize, post, pre)?) {
        (_, Some(c)) => term.f_mul(&c.f_unsqueeze(2)?)?,
        (UpdateNormalization::Batch, None) => term.f_div_scalar(post.size()[1] as f64)?,
        (_, None) => term,
    })
}

/// Oja's decay factor of each row, q_i = Σ_b ã_bi², [E, out, 1].
pub fn row_energy(post: &Tensor) -> Result<Tensor> {
    Ok(post.f_square()?.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?.f_unsqueeze(2)?)
}

/// Each row's decay d [E, out, 1]: Oja's row energies q, times γ where the rule learns it; none for Hebb.
pub fn decay_energy(decay: Decay<'_>, post: &Tensor) -> Result<Option<Tensor>> {
    Ok(match decay {
        Decay::None => None,
        Decay::Oja => Some(row_energy(post)?),
        Decay::Scaled(gamma) => Some(row_energy(post)?.f_mul(gamma)?),
    })
}

/// The decay of a step as the kernels and `local_term` take it: off where the step has none (`uses_decay`),
/// scaled by γ where the rule learns it.
pub fn step_decay(decays: bool, gamma: Option<&Tensor>) -> Decay<'_> {
    match (decays, gamma) {
        (false, _) => Decay::None,
        (true, None) => Decay::Oja,
        (true, Some(g)) => Decay::Scaled(g),
    }
}

/// m (ãᵀa − q ⊙ W) with Oja's row energies q (or γ ⊙ q), m ãᵀa without (Hebb): the term before any normalisation.
pub fn plain_term(post: &Tensor, pre: &Tensor, w: &Tensor, energy: Option<&Tensor>, multiplier: f64) -> Result<Tensor> {
    let post_t = post.f_transpose(1, 2)?;
    Ok(match energy {
        // baddbmm: −m·q⊙W + m·ãᵀa in one kernel.
        Some(q) => q.f_mul(w)?.f_baddbmm(&post_t, pre, -multiplier, multiplier)?,
        None => {
            let hebb = post_t.f_matmul(pre)?;
            if multiplier == 1.0 {
                hebb
            } else {
                hebb.f_mul_scalar(multiplier)?
            }
        }
    })
}

/// The update normalisation's factor of each row that depends on the activities, c [E, out]:
/// 1/(1 + Σ_b ‖a_b‖²) per episode (presynaptic) or 1/(1 + Σ_b ã_bi²) per row (bounded); None for the
/// identity and for the batch form (a constant 1/B).
pub fn normalization_factor(normalize: UpdateNormalization, post: &Tensor, pre: &Tensor) -> Result<Option<Tensor>> {
    Ok(match normalize {
        UpdateNormalization::None | UpdateNormalization::Batch => None,
        UpdateNormalization::Presynaptic => {
            let energy = pre.f_square()?.f_sum_dim_intlist([1i64, 2].as_slice(), false, None::<Kind>)?; // [E]
            let c = energy.f_add_scalar(1.0)?.f_reciprocal()?;
            // A view: every row of an episode reads its one value (the fused loops read it by strides).
            Some(c.f_unsqueeze(1)?.f_expand([-1, post.size()[2]], false)?)
        }
        UpdateNormalization::Bounded => {
            let q = post.f_square()?.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?; // [E, out]
            Some(q.f_add_scalar(1.0)?.f_reciprocal()?)
        }
    })
}

/// Whether inner step `step` uses Oja's decay: an Oja rule does, except on step 0 with the Hebb-first-step
/// option.
pub fn uses_decay(oja_decay: bool, hebb_first_step: bool, step: usize) -> bool {
    oja_decay && !(hebb_first_step && step == 0)
}

/// The layer's multiplier as the fused loops take it: with the batch normalisation, its constant 1/B
/// folded in (the other normalisations are per-row factors of their own).
pub fn folded_multiplier(multiplier: f64, normalize: UpdateNormalization, batch: i64) -> f64 {
    if normalize == UpdateNormalization::Batch {
        multiplier / batch as f64
    } else {
        multiplier
    }
}

/// The full update ΔW = rate ⊙ term (for callers that want the delta itself).
pub fn local_delta<'a>(
    post: &Tensor,
    pre: &Tensor,
    w: &Tensor,
    rate: &Tensor,
    decay: impl Into<Decay<'a>>,
    multiplier: f64,
    normalize: UpdateNormalization,
) -> Result<Tensor> {
    Ok(local_term(post, pre, w, decay, multiplier, normalize)?.f_mul(rate)?)
}

/// φ of a decay coefficient starting at γ = `init`: its logit, ln(γ / (1 − γ)).
fn decay_logit(init: f64) -> f64 {
    (init / (1.0 - init)).ln()
}

/// Adds the decay coefficient's parameter φ of plastic layer `l` with `units` outputs to `params`.
fn add_decay(cfg: &DecayConfig, l: usize, units: i64, params: &mut ParamStore, on: (Kind, Device)) -> Result<usize> {
    let shape: Vec<i64> = match cfg.granularity {
        DecayGranularity::Layer => vec![],
        DecayGranularity::Neuron => vec![units, 1],
    };
    Ok(params.add(format!("decay.{l}"), full(decay_logit(cfg.init), &shape, on)?, Group::Plasticity, cfg.learned))
}

impl LocalRule {
    /// Builds the rule of an Oja or Hebb learner: per plastic layer, its plasticity rates θ (shaped by
    /// `plasticity.granularity`) and log-scale σ, its feedback pathway and its feedback strength, all
    /// added to `params`.
    pub fn build(
        cfg: &LearnerConfig,
        spec: &NetSpec,
        params: &mut ParamStore,
        rng: &mut Rng,
        on: (Kind, Device),
    ) -> Result<Self> {
        let outputs = spec.outputs();
        let fb_trainable = cfg.feedback.kind == FeedbackKind::Learned || cfg.feedback.kind == FeedbackKind::None;
        let mut feedback = Vec::new();
        let mut rates = Vec::new();
        let mut multipliers = Vec::new();
        let mut scales = Vec::new();
        let mut decays = Vec::new();
        // The stored θ with g(θ) = init; with a layer scale, σ_l = ln(init) carries the initial rate
        // and θ starts where g(θ) = 1, so θ and σ are both of order one (one learning rate fits both).
        let (theta0, sigma0) = match (cfg.plasticity.layer_scale, cfg.plasticity.parameterization) {
            (false, RateParameterization::Linear) => (cfg.plasticity.init, 0.0),
            (false, RateParameterization::Log) => (cfg.plasticity.init.ln(), 0.0),
            (true, RateParameterization::Linear) => (1.0, cfg.plasticity.init.ln()),
            (true, RateParameterization::Log) => (0.0, cfg.plasticity.init.ln()),
        };
        let global = if cfg.plasticity.granularity == Granularity::Global {
            Some(params.add("plasticity.global", full(theta0, &[], on)?, Group::Plasticity, true))
        } else {
            None
        };
        for l in spec.plastic() {
            let units = spec.layers[l].units();
            let mut fl = Vec::new();
            let mut width_in = outputs;
            for j in 0..cfg.feedback.layers {
                let std = (2.0 / width_in as f64).sqrt();
                let mut init = normal_vec(rng, (units * width_in) as usize, std);
                if cfg.feedback.output_identity && spec.is_output(l) {
                    init =
                        (0..units * width_in).map(|i| if i / width_in == i % width_in { 1.0 } else { 0.0 }).collect();
                }
                let b = params.add(
                    format!("feedback.{l}.{j}.weight"),
                    from_values(init, &[units, width_in], on)?,
                    Group::Feedback,
                    fb_trainable,
                );
                let c = params.add(
                    format!("feedback.{l}.{j}.bias"),
                    full(0.0, &[units], on)?,
                    Group::Feedback,
                    fb_trainable,
                );
                fl.push((b, c));
                width_in = units;
            }
            let strength = params.add(
                format!("strength.{l}"),
                full(cfg.feedback.strength.init, &[], on)?,
                Group::Strength,
                cfg.feedback.strength.learned,
            );
            feedback.push(FeedbackIndices { layers: fl, strength });
            let w_shape = spec.layers[l].weight_shape();
            let rate_shape: Vec<i64> = match cfg.plasticity.granularity {
                Granularity::Synapse => w_shape.clone(),
                Granularity::Neuron => vec![w_shape[0], 1],
                Granularity::Layer | Granularity::Global => vec![],
            };
            rates.push(match global {
                Some(g) => g,
                None => params.add(format!("plasticity.{l}"), full(theta0, &rate_shape, on)?, Group::Plasticity, true),
            });
            if cfg.plasticity.layer_scale {
                scales.push(params.add(
                    format!("plasticityScale.{l}"),
                    full(sigma0, &[], on)?,
                    Group::Plasticity,
                    true,
                ));
            }
            if let Some(decay) = cfg.rule.decay() {
                decays.push(add_decay(decay, l, units, params, on)?);
            }
            multipliers.push(if spec.is_output(l) { 1.0 } else { cfg.plasticity.hidden_multiplier });
        }
        Ok(LocalRule {
            oja_decay: matches!(cfg.rule, RuleConfig::Oja { .. }),
            hebb_first_step: cfg.plasticity.hebb_first_step,
            normalize: cfg.plasticity.normalize,
            parameterization: cfg.plasticity.parameterization,
            max_rate: cfg.plasticity.max_rate,
            rates,
            scales: cfg.plasticity.layer_scale.then_some(scales),
            decays: cfg.rule.decay().is_some().then_some(decays),
            feedback,
            multipliers,
        })
    }

    /// The teaching activity ã of every plastic layer for this minibatch (feedback.rs).
    fn teaching(&self, params: &ParamStore, inp: &StepInputs) -> Result<Vec<Tensor>> {
        let feedback: Vec<LayerFeedback> = self
            .feedback
            .iter()
            .map(|f| LayerFeedback {
                layers: f.layers.iter().map(|&(b, c)| (params.at(b), params.at(c))).collect(),
                strength: params.at(f.strength),
            })
            .collect();
        teaching_activity(inp.cfg, inp.acts, inp.w, inp.y, &feedback)
    }

    /// Whether inner step `step` uses Oja's decay (the Hebb-first-step option turns it off on step 0).
    fn oja_at(&self, step: usize) -> bool {
        uses_decay(self.oja_decay, self.hebb_first_step, step)
    }

    /// The decay coefficient γ = σ(φ) of plastic layer k (differentiable), where the rule learns one.
    pub fn decay_coefficient(&self, params: &ParamStore, k: usize) -> Result<Option<Tensor>> {
        match &self.decays {
            Some(d) => Ok(Some(params.at(d[k]).f_sigmoid()?)),
            None => Ok(None),
        }
    }

    /// The effective rate tensor P of plastic layer k from its stored parameters (differentiable):
    /// P = θ (linear) or exp(θ) (log), times exp(σ_k) when the layer has a learned log-scale, at most
    /// `maxRate`.
    pub fn rate(&self, params: &ParamStore, k: usize) -> Result<Tensor> {
        let theta = params.at(self.rates[k]);
        let p = match self.parameterization {
            RateParameterization::Linear => theta.shallow_clone(),
            RateParameterization::Log => theta.f_exp()?,
        };
        let p = match &self.scales {
            Some(s) => p.f_mul(&params.at(s[k]).f_exp()?)?,
            None => p,
        };
        Ok(match self.max_rate {
            Some(max) => p.f_clamp_max(max)?,
            None => p,
        })
    }
}

impl InnerRule for LocalRule {
    fn as_local(&self) -> Option<&LocalRule> {
        Some(self)
    }

    fn as_local_mut(&mut self) -> Option<&mut LocalRule> {
        Some(self)
    }

    /// On the CPU in float32/float64: each layer's W' = W + m c P ⊙ (ãᵀa − r ⊙ W) in one fused pass
    /// over W, in place (`kernels::local_step_in_place`), instead of the update's weight-sized outer
    /// product, its normalisation and the multiply-add, each a pass over memory of its own.
    fn step_without_graph(&self, params: &ParamStore, inp: &StepInputs) -> Result<Option<Vec<Tensor>>> {
        let w0 = &inp.w[0];
        if !crate::kernels::applies(w0.kind(), w0.device()) {
            return Ok(None);
        }
        let post = self.teaching(params, inp)?;
        let oja = self.oja_at(inp.step);
        let mut next = Vec::with_capacity(post.len());
        for (k, post_k) in post.iter().enumerate() {
            let pre_k = &inp.acts.pre[k];
            let m = folded_multiplier(self.multipliers[k], self.normalize, post_k.size()[1]);
            let c = normalization_factor(self.normalize, post_k, pre_k)?;
            let rate = self.rate(params, k)?.f_detach()?;
            let gamma = self.decay_coefficient(params, k)?.map(|g| g.f_detach()).transpose()?;
            let mut w = inp.w[k].f_contiguous()?; // the caller's own tensor where it is contiguous already
            crate::kernels::local_step_in_place(
                &mut w,
                &post_k.f_contiguous()?,
                &pre_k.f_contiguous()?,
                &rate,
                step_decay(oja, gamma.as_ref()),
                m,
                c.as_ref(),
            )?;
            next.push(w);
        }
        Ok(Some(next))
    }

    fn update(&self, params: &ParamStore, inp: &StepInputs) -> Result<Update> {
        let post = self.teaching(params, inp)?;
        let mut w = Vec::with_capacity(post.len());
        let mut rates = Vec::with_capacity(post.len());
        for (k, post_k) in post.iter().enumerate() {
            let gamma = self.decay_coefficient(params, k)?;
            w.push(local_term(
                post_k,
                &inp.acts.pre[k],
                &inp.w[k],
                step_decay(self.oja_at(inp.step), gamma.as_ref()),
                self.multipliers[k],
                self.normalize,
            )?);
            rates.push(Some(self.rate(params, k)?));
        }
        let b = (0..w.len()).map(|_| None).collect();
        Ok(Update { w, w_rate: rates, b })
    }
}
