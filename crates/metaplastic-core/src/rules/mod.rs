//! Inner-loop learning rules behind one trait: local plasticity (Oja, Hebb) and OML's SGD.
//! The inner-loop driver (inner.rs) calls `update` once per minibatch, whatever the rule.
pub mod local;
pub mod sgd;

use crate::config::LearnerConfig;
use crate::net::functional::TailActivations;
use crate::params::ParamStore;
use crate::Result;
use tch::Tensor;

/// What a rule sees for one minibatch: the forward activations computed with the fast weights `w`, `b`.
pub struct StepInputs<'a> {
    pub cfg: &'a LearnerConfig,
    pub acts: &'a TailActivations,
    pub w: &'a [Tensor],
    pub b: &'a [Tensor],
    /// Targets: [E, B, out] (regression) or labels [E, B].
    pub y: &'a Tensor,
    /// Keep the update differentiable in its inputs (second-order meta-gradient).
    pub create_graph: bool,
    /// Multiplier on the gradient rule's step sizes (meta-test step-size selection); 1 in training.
    pub step_scale: f64,
    /// Index of this inner step in the lifetime (0 = first).
    pub step: usize,
}

/// Additive changes to the plastic layers' fast weights (and biases, for rules that adapt them):
/// ΔW_k = w_rate[k] ⊙ w[k] when a rate is given (applied as one fused multiply-add), else w[k].
pub struct Update {
    pub w: Vec<Tensor>,
    pub w_rate: Vec<Option<Tensor>>,
    pub b: Vec<Option<Tensor>>,
}

pub trait InnerRule: Send {
    fn update(&self, params: &ParamStore, inputs: &StepInputs) -> Result<Update>;
    /// Whether the update needs gradients with respect to the fast weights (the forward must be tracked).
    fn needs_weight_grad(&self) -> bool {
        false
    }
    /// The local rule behind this one, for the hand-derived reverse pass.
    fn as_local(&self) -> Option<&local::LocalRule> {
        None
    }
    /// The SGD rule behind this one, for the hand-derived reverse pass.
    fn as_sgd(&self) -> Option<&sgd::SgdRule> {
        None
    }
}
