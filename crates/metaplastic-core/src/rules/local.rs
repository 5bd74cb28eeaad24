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

/// The rule's core on explicit tensors: post [E, B, out], pre [E, B, in], w [E, out, in].
pub fn local_delta(post: &Tensor, pre: &Tensor, w: &Tensor, rate: &Tensor, oja_decay: bool, multiplier: f64) -> Result<Tensor> {
    let mut hebb = post.f_transpose(1, 2)?.f_matmul(pre)?;
    if oja_decay {
        let post_sq = post.f_square()?.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?.f_unsqueeze(2)?;
        hebb = hebb.f_sub(&post_sq.f_mul(w)?)?;
    }
    let delta = hebb.f_mul(rate)?;
    Ok(if multiplier == 1.0 { delta } else { delta.f_mul_scalar(multiplier)? })
}

impl InnerRule for LocalRule {
    fn update(&self, params: &ParamStore, inp: &StepInputs) -> Result<Update> {
        let feedback: Vec<LayerFeedback> = self
            .feedback
            .iter()
            .map(|f| LayerFeedback { layers: f.layers.iter().map(|&(b, c)| (params.at(b), params.at(c))).collect(), strength: params.at(f.strength) })
            .collect();
        let post = teaching_activity(inp.cfg, inp.acts, inp.w, inp.y, &feedback)?;
        let mut w = Vec::with_capacity(post.len());
        for (k, post_k) in post.iter().enumerate() {
            w.push(local_delta(post_k, &inp.acts.pre[k], &inp.w[k], params.at(self.rates[k]), self.oja_decay, self.multipliers[k])?);
        }
        let b = (0..w.len()).map(|_| None).collect();
        Ok(Update { w, b })
    }
}
