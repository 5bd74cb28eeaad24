//! Local plasticity: Oja's rule (with its decay term) and the plain Hebbian rule.
//!   Oja:  ΔW = m · P ⊙ N( ãᵀ a − diag(q) W )      Hebb: ΔW = m · P ⊙ N( ãᵀ a ),   q_i = Σ_b ã_bi²
//! a is the layer's forward presynaptic activity, ã the post-synaptic teaching activity shaped by
//! feedback, P the plasticity rates (broadcast from synapse/neuron/layer/global shape), m the
//! hidden-layer multiplier (1 for the output layer). Sums run over the minibatch. N is the update
//! normalisation (`plasticity.normalize`): identity (reference), ·1/B (batch), ·1/(1 + Σ_b ‖a_b‖²)
//! (presynaptic, per episode), row i ·1/(1 + q_i) (bounded).
//! P = g(θ) from the stored parameter θ (`plasticity.parameterization`): θ or exp(θ), times exp(σ_l)
//! with a per-layer log-scale (`plasticity.layerScale`); see `LocalRule::rate`.
use super::{InnerRule, StepInputs, Update};
use crate::config::{RateParameterization, UpdateNormalization};
use crate::feedback::{teaching_activity, LayerFeedback};
use crate::params::ParamStore;
use crate::Result;
use tch::{Kind, Tensor};

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
    /// Plasticity-rate parameter θ of each plastic layer (the same index for a global rate).
    pub rates: Vec<usize>,
    /// Per-layer log-scale σ_l of each plastic layer, when `plasticity.layerScale` is on.
    pub scales: Option<Vec<usize>>,
    pub feedback: Vec<FeedbackIndices>,
    /// Update multiplier of each plastic layer.
    pub multipliers: Vec<f64>,
}

/// The rule's term before the rates: m · N(ãᵀa − diag(Σ ã²) W), with post [E, B, out], pre [E, B, in],
/// w [E, out, in]. The update is rate ⊙ term, applied by the driver as one fused W + rate ⊙ term.
pub fn local_term(post: &Tensor, pre: &Tensor, w: &Tensor, oja_decay: bool, multiplier: f64, normalize: UpdateNormalization) -> Result<Tensor> {
    let post_t = post.f_transpose(1, 2)?;
    let term = if oja_decay {
        // q_i = Σ_b ã_bi², [E, out, 1]; baddbmm: −m·q⊙W + m·ãᵀa in one kernel.
        let q = post.f_square()?.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?.f_unsqueeze(2)?;
        q.f_mul(w)?.f_baddbmm(&post_t, pre, -multiplier, multiplier)?
    } else {
        let hebb = post_t.f_matmul(pre)?;
        if multiplier == 1.0 { hebb } else { hebb.f_mul_scalar(multiplier)? }
    };
    Ok(match (normalize, normalization_factor(normalize, post, pre)?) {
        (_, Some(c)) => term.f_mul(&c.f_unsqueeze(2)?)?,
        (UpdateNormalization::Batch, None) => term.f_div_scalar(post.size()[1] as f64)?,
        (_, None) => term,
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
            Some(c.f_unsqueeze(1)?.f_expand([-1, post.size()[2]], false)?.f_contiguous()?)
        }
        UpdateNormalization::Bounded => {
            let q = post.f_square()?.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?; // [E, out]
            Some(q.f_add_scalar(1.0)?.f_reciprocal()?)
        }
    })
}

/// The full update ΔW = rate ⊙ term (for callers that want the delta itself).
pub fn local_delta(post: &Tensor, pre: &Tensor, w: &Tensor, rate: &Tensor, oja_decay: bool, multiplier: f64, normalize: UpdateNormalization) -> Result<Tensor> {
    Ok(local_term(post, pre, w, oja_decay, multiplier, normalize)?.f_mul(rate)?)
}

impl LocalRule {
    /// The effective rate tensor P of plastic layer k from its stored parameters (differentiable):
    /// P = θ (linear) or exp(θ) (log), times exp(σ_k) when the layer has a learned log-scale.
    pub fn rate(&self, params: &ParamStore, k: usize) -> Result<Tensor> {
        let theta = params.at(self.rates[k]);
        let p = match self.parameterization {
            RateParameterization::Linear => theta.shallow_clone(),
            RateParameterization::Log => theta.f_exp()?,
        };
        Ok(match &self.scales {
            Some(s) => p.f_mul(&params.at(s[k]).f_exp()?)?,
            None => p,
        })
    }
}

impl InnerRule for LocalRule {
    fn as_local(&self) -> Option<&LocalRule> {
        Some(self)
    }

    fn update(&self, params: &ParamStore, inp: &StepInputs) -> Result<Update> {
        let feedback: Vec<LayerFeedback> = self
            .feedback
            .iter()
            .map(|f| LayerFeedback { layers: f.layers.iter().map(|&(b, c)| (params.at(b), params.at(c))).collect(), strength: params.at(f.strength) })
            .collect();
        let post = teaching_activity(inp.cfg, inp.acts, inp.w, inp.y, &feedback)?;
        let mut w = Vec::with_capacity(post.len());
        let mut rates = Vec::with_capacity(post.len());
        for (k, post_k) in post.iter().enumerate() {
            let oja = self.oja_decay && !(self.hebb_first_step && inp.step == 0);
            w.push(local_term(post_k, &inp.acts.pre[k], &inp.w[k], oja, self.multipliers[k], self.normalize)?);
            rates.push(Some(self.rate(params, k)?));
        }
        let b = (0..w.len()).map(|_| None).collect();
        Ok(Update { w, w_rate: rates, b })
    }
}
