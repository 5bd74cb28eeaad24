//! The inner-loop rules' configuration: which rule (Oja, Hebb, or OML's SGD with its step sizes), and the
//! local rules' plasticity rates. Plain data (serde, camelCase), composed and validated in `LearnerConfig`.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StepSizes {
    /// One fixed step size `lr` for every plastic parameter.
    #[default]
    Fixed,
    /// A meta-learned step size per plastic parameter entry (Meta-SGD-like), initialised to `lr`.
    PerParameter,
    /// A meta-learned step size per plastic layer, initialised to `lr`.
    PerLayer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum RuleConfig {
    /// Oja's rule with its decay term: ΔW = P ⊙ (ãᵀa − diag(Σ ã²) W); with `decay`, the term scaled by a
    /// meta-learned γ: ΔW = P ⊙ (ãᵀa − γ ⊙ diag(Σ ã²) W).
    Oja {
        /// A meta-learned coefficient γ = σ(φ) ∈ (0, 1) in front of the decay term, so that the rule lies
        /// between Hebb (γ → 0) and Oja (γ → 1) and learns how much to forget. Absent: Oja's rule (γ = 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decay: Option<DecayConfig>,
    },
    /// Plain Hebbian rule: ΔW = P ⊙ ãᵀa. (A variant with no fields rather than a unit one, so that a field
    /// written on it, such as Oja's `decay`, is an error instead of being ignored.)
    Hebb {},
    /// OML's inner loop: SGD on the task loss of the plastic layers.
    Sgd {
        /// Inner-loop step size (OML: 0.003 for regression, 0.03 for Omniglot).
        lr: f64,
        /// A fixed step size, or meta-learned ones initialised to `lr`.
        #[serde(default)]
        step_sizes: StepSizes,
        /// Also adapt the plastic layers' biases (as OML's reference code does).
        #[serde(default = "yes")]
        biases: bool,
    },
}

fn yes() -> bool {
    true
}

/// Oja's decay coefficient γ = σ(φ): the stored parameter φ (`decay.{layer}`, in the plasticity group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecayConfig {
    /// Initial γ, strictly between 0 (Hebb) and 1 (Oja); φ starts at its logit.
    #[serde(default = "half")]
    pub init: f64,
    /// Meta-learn γ (else it stays at `init`).
    #[serde(default = "yes")]
    pub learned: bool,
    /// One γ per plastic layer, or one per post-synaptic neuron (each row of the layer's weights).
    #[serde(default)]
    pub granularity: DecayGranularity,
}

fn half() -> f64 {
    0.5
}

impl Default for DecayConfig {
    fn default() -> Self {
        Self { init: 0.5, learned: true, granularity: DecayGranularity::Layer }
    }
}

/// The shape of Oja's decay coefficient γ in each plastic layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DecayGranularity {
    /// One γ for the layer (shape []).
    #[default]
    Layer,
    /// One γ per post-synaptic neuron (shape [out, 1], broadcast over the row).
    Neuron,
}

impl RuleConfig {
    pub fn is_local(&self) -> bool {
        !matches!(self, RuleConfig::Sgd { .. })
    }

    /// Oja's learned decay coefficient, where the rule has one.
    pub fn decay(&self) -> Option<&DecayConfig> {
        match self {
            RuleConfig::Oja { decay } => decay.as_ref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Granularity {
    #[default]
    Synapse,
    Neuron,
    Layer,
    Global,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlasticityConfig {
    /// Shape of the plasticity rates: one per synapse, per post-synaptic neuron, per layer, or one in all.
    #[serde(default)]
    pub granularity: Granularity,
    /// Initial plasticity rate (reference: 0, switched on by meta-training).
    #[serde(default)]
    pub init: f64,
    /// Multiplier on hidden-layer updates (100 in the Omniglot setting); the output layer is not scaled.
    #[serde(default = "one_f64")]
    pub hidden_multiplier: f64,
    /// How the stored parameter θ maps to the rate P (see `RateParameterization`).
    #[serde(default)]
    pub parameterization: RateParameterization,
    /// A meta-learned log-scale σ_l per plastic layer: P = exp(σ_l) · g(θ). It lets a whole layer's rates grow
    /// or shrink together, multiplicatively; it is in the plasticity learning-rate group. It then carries the
    /// initial rate, σ_l = ln(init), and θ starts where g(θ) = 1 (θ = 1 linear, 0 log): with 'linear', rates
    /// keep their sign freedom (θ may cross 0) while their common scale moves multiplicatively.
    #[serde(default)]
    pub layer_scale: bool,
    /// How the Oja/Hebb update is normalised (see `UpdateNormalization`).
    #[serde(default)]
    pub normalize: UpdateNormalization,
    /// Oja only: the first inner step of every lifetime uses the plain Hebbian term (no decay), every later
    /// step Oja's rule, as the reference code's `--hebb` flag does.
    #[serde(default)]
    pub hebb_first_step: bool,
    /// An upper bound on every rate: P = min(g(θ), maxRate); a rate at the bound gets no meta-gradient. With
    /// `normalize: 'bounded'` and a clamped one-hot target, a presented class's row moves P/2 of the way to the
    /// input, so rates above 2 overshoot and grow the row at each presentation. On long streams lower bounds
    /// did better still, and better at meta-test alone (`EvalOptions.rateBounds`) than here in meta-training.
    #[serde(default)]
    pub max_rate: Option<f64>,
}

/// The map from the stored plasticity parameter θ to the rate P.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RateParameterization {
    /// P = θ (the reference; θ starts at `init` and Adam moves it additively).
    #[default]
    Linear,
    /// P = exp(θ), θ starts at ln(init): rates stay positive and Adam changes them multiplicatively.
    Log,
}

/// Normalisation of the local update term T = ãᵀa − diag(q) W (Oja) or ãᵀa (Hebb), q_i = Σ_b ã_bi².
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UpdateNormalization {
    /// T as is: summed over the minibatch (the reference).
    #[default]
    None,
    /// T / B: a mean over the minibatch of B examples instead of a sum.
    Batch,
    /// T / (1 + Σ_b ‖a_b‖²), the minibatch's presynaptic energy (per episode), as normalised LMS does: the
    /// Hebbian part then moves the layer's response to the minibatch by at most about P·|ã|, whatever the
    /// width and scale of the presynaptic layer, so rates mean the same in every layer and network size.
    Presynaptic,
    /// Row i of T divided by 1 + q_i. With Oja and 0 < P < 1 the decay factor 1 − P·q/(1+q) stays in
    /// (0, 1] and the Hebbian term is bounded by |a|/2 (Cauchy–Schwarz), whatever the activities' scale.
    Bounded,
}

fn one_f64() -> f64 {
    1.0
}

impl Default for PlasticityConfig {
    fn default() -> Self {
        Self {
            granularity: Granularity::Synapse,
            init: 0.0,
            hidden_multiplier: 1.0,
            parameterization: RateParameterization::Linear,
            layer_scale: false,
            normalize: UpdateNormalization::None,
            hebb_first_step: false,
            max_rate: None,
        }
    }
}
