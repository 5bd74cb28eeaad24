//! Local plasticity: Oja's rule (with its decay term) and the plain Hebbian rule.
//!   Oja:  ΔW = m · P ⊙ ( ãᵀ a − diag(Σ_b ã²) W )      Hebb: ΔW = m · P ⊙ ãᵀ a
//! a is the layer's forward presynaptic activity, ã the post-synaptic teaching activity shaped by
//! feedback, P the plasticity rates (broadcast from synapse/neuron/layer/global shape), m the
//! hidden-layer multiplier (1 for the output layer). Sums run over the minibatch.
use super::{InnerRule, StepInputs, Update};
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
    /// Plasticity-rate parameter of each plastic layer (the same index for a global rate).
    pub rates: Vec<usize>,
    pub feedback: Vec<FeedbackIndices>,
    /// Update multiplier of each plastic layer.
    pub multipliers: Vec<f64>,
}

/// The rule's term before the rates: m · (ãᵀa − diag(Σ ã²) W), with post [E, B, out], pre [E, B, in],
/// w [E, out, in]. The update is rate ⊙ term, applied by the driver as one fused W + rate ⊙ term.
pub fn local_term(post: &Tensor, pre: &Tensor, w: &Tensor, oja_decay: bool, multiplier: f64) -> Result<Tensor> {
    let post_t = post.f_transpose(1, 2)?;
    if oja_decay {
        let post_sq = post.f_square()?.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?.f_unsqueeze(2)?;
        // baddbmm: −m·(Σã²)⊙W + m·ãᵀa in one kernel.
        Ok(post_sq.f_mul(w)?.f_baddbmm(&post_t, pre, -multiplier, multiplier)?)
    } else {
        let hebb = post_t.f_matmul(pre)?;
        Ok(if multiplier == 1.0 { hebb } else { hebb.f_mul_scalar(multiplier)? })
    }
}

/// The full update ΔW = rate ⊙ term (for callers that want the delta itself).
pub fn local_delta(post: &Tensor, pre: &Tensor, w: &Tensor, rate: &Tensor, oja_decay: bool, multiplier: f64) -> Result<Tensor> {
    Ok(local_term(post, pre, w, oja_decay, multiplier)?.f_mul(rate)?)
}

impl LocalRule {
    /// The effective plasticity rate P of plastic layer `k` (differentiable in the stored parameters).
    pub fn rate(&self, params: &ParamStore, k: usize) -> Result<Tensor> {
        Ok(params.at(self.rates[k]).shallow_clone())
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
            w.push(local_term(post_k, &inp.acts.pre[k], &inp.w[k], self.oja_decay, self.multipliers[k])?);
            rates.push(Some(self.rate(params, k)?));
        }
        let b = (0..w.len()).map(|_| None).collect();
        Ok(Update { w, w_rate: rates, b })
    }
}
