//! Inner-loop learning rules behind one trait: local plasticity (Oja, Hebb) and OML's SGD.
//! The inner-loop driver (inner.rs) calls `update` once per minibatch, whatever the rule.
pub(crate) mod config;
pub mod local;
pub mod sgd;

pub use config::{
    DecayConfig, DecayGranularity, Granularity, PlasticityConfig, RateParameterization, RuleConfig, StepSizes,
    UpdateNormalization,
};

use crate::config::LearnerConfig;
use crate::net::functional::TailActivations;
use crate::net::spec::NetSpec;
use crate::params::ParamStore;
use crate::rng::Rng;
use crate::Result;
use tch::{Device, Kind, Tensor};

/// Builds the learner's inner rule, adding its meta-parameters to `params` (after the forward weights, so
/// that `rng` draws them in a fixed order).
pub fn build(
    cfg: &LearnerConfig,
    spec: &NetSpec,
    params: &mut ParamStore,
    rng: &mut Rng,
    on: (Kind, Device),
) -> Result<Box<dyn InnerRule>> {
    Ok(match &cfg.rule {
        RuleConfig::Oja { .. } | RuleConfig::Hebb {} => Box::new(local::LocalRule::build(cfg, spec, params, rng, on)?),
        RuleConfig::Sgd { lr, step_sizes, biases } => {
            Box::new(sgd::SgdRule::build(*lr, *step_sizes, *biases, spec, params, on)?)
        }
    })
}

/// A tensor of `shape` filled with `value`, of the learner's kind on its device.
pub(crate) fn full(value: f64, shape: &[i64], on: (Kind, Device)) -> Result<Tensor> {
    Ok(Tensor::f_full(shape, value, on)?)
}

/// A tensor of `shape` from row-major values, of the learner's kind on its device.
pub(crate) fn from_values(values: Vec<f32>, shape: &[i64], (kind, device): (Kind, Device)) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(&values)?.f_reshape(shape)?.f_to_kind(kind)?.f_to_device(device)?)
}

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
    /// The next fast weights W' of a step outside any graph (evaluation), where the rule has a faster
    /// way than `update`; None where it has not. Only called when no weight or input requires a gradient;
    /// like the in-place update it replaces, it may write W' over the weights in `inputs.w`.
    fn step_without_graph(&self, _params: &ParamStore, _inputs: &StepInputs) -> Result<Option<Vec<Tensor>>> {
        Ok(None)
    }
    /// The local rule behind this one, for the hand-derived reverse pass.
    fn as_local(&self) -> Option<&local::LocalRule> {
        None
    }
    /// The local rule behind this one, to change its rate bound at meta-test time.
    fn as_local_mut(&mut self) -> Option<&mut local::LocalRule> {
        None
    }
    /// The SGD rule behind this one, for the hand-derived reverse pass.
    fn as_sgd(&self) -> Option<&sgd::SgdRule> {
        None
    }
}
