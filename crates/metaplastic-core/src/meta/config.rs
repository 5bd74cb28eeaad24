//! Meta-training's configuration: which meta-gradient and how it is computed, Adam's settings, and the
//! safeguards against divergence. Plain data (serde, camelCase), composed and validated in `LearnerConfig`.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum MetaGradient {
    /// Backpropagate through every inner step (default).
    #[default]
    SecondOrder,
    /// Each update is computed from detached state: dW_T/dW_0 = I, the rule's own meta-parameters still
    /// receive gradient through the update they scale.
    FirstOrder,
    /// The first T−k updates are constants added to W_0; the last k are differentiated fully.
    Truncated { steps: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LearningRates {
    /// Forward weights and biases.
    #[serde(default = "lr_default")]
    pub forward: f64,
    /// Feedback weights and biases.
    #[serde(default = "lr_default")]
    pub feedback: f64,
    /// Plasticity rates and scales, or OML's meta-learned step sizes.
    #[serde(default = "lr_plasticity")]
    pub plasticity: f64,
    /// Feedback strengths.
    #[serde(default = "lr_default")]
    pub strength: f64,
}

fn lr_default() -> f64 {
    1e-4
}
fn lr_plasticity() -> f64 {
    1e-8
}

impl Default for LearningRates {
    fn default() -> Self {
        Self { forward: 1e-4, feedback: 1e-4, plasticity: 1e-8, strength: 1e-4 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NonFinitePolicy {
    /// Skip the optimizer step, count it and report it.
    #[default]
    Skip,
    /// Fail the meta-step with an error.
    Error,
}

/// How the meta-gradient is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Backward {
    /// The hand-derived reverse pass where it applies, autograd elsewhere.
    #[default]
    Auto,
    /// Autograd through the unrolled lifetime: the reference the reverse pass is tested against.
    Autograd,
    /// The hand-derived reverse pass over checkpointed fast weights (an error where it does not apply).
    Adjoint,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetaConfig {
    /// Which meta-gradient: through every inner step, first order, or through the last k steps.
    #[serde(default)]
    pub gradient: MetaGradient,
    /// How the meta-gradient is computed.
    #[serde(default)]
    pub backward: Backward,
    /// Reverse pass: keep the fast weights every this many inner steps (default ⌈√T⌉); 1 keeps all.
    #[serde(default)]
    pub checkpoint_every: Option<usize>,
    /// Reverse pass: run the local rules' inner steps backwards from the weights after them instead of
    /// recomputing them from the checkpoints (fused CPU loops), where rounding stays bounded. Keeps each
    /// step's pre-activations: batch × plastic units values per inner step and episode.
    #[serde(default = "yes")]
    pub run_backwards: bool,
    /// Adam's learning rate per parameter group; 0 freezes a group.
    #[serde(default)]
    pub lr: LearningRates,
    /// Adam's β₁ and β₂.
    #[serde(default = "betas")]
    pub betas: [f64; 2],
    /// Adam's ε.
    #[serde(default = "eps")]
    pub eps: f64,
    /// Clip the global gradient norm to this value (none by default).
    #[serde(default)]
    pub clip_norm: Option<f64>,
    /// What a non-finite meta-loss or gradient does.
    #[serde(default)]
    pub non_finite: NonFinitePolicy,
    /// Under the 'skip' policy, fail after this many consecutive skipped steps: a learner whose every
    /// step is non-finite can never recover (skipped steps change nothing), so going on wastes the run.
    #[serde(default = "max_consecutive_skips")]
    pub max_consecutive_skips: u32,
    /// A finite meta-loss above this multiple of the median of the last `EXPLODE_WINDOW` applied steps' losses
    /// is an exploded lifetime: the step is skipped like a non-finite one and counted as `exploded`.
    /// `null` turns the check off. Default 1000.
    #[serde(default = "explode_factor")]
    pub explode_factor: Option<f64>,
    /// Re-create Adam (zero moments, bias correction restarted) before every N-th meta-step, as the reference
    /// run script does by relaunching every 1,000 steps. Default: never.
    #[serde(default)]
    pub reset_adam_every: Option<u64>,
    /// Linear warm-up of every group's learning rate over the first N applied meta-steps (0: none).
    #[serde(default)]
    pub warmup: u64,
}

/// How many recent applied steps' meta-losses the exploded-lifetime check takes the median of; it starts
/// checking once it has `EXPLODE_MIN` of them.
pub const EXPLODE_WINDOW: usize = 100;
pub const EXPLODE_MIN: usize = 10;

fn explode_factor() -> Option<f64> {
    Some(1000.0)
}

fn max_consecutive_skips() -> u32 {
    100
}

fn betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn eps() -> f64 {
    1e-8
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            gradient: MetaGradient::SecondOrder,
            backward: Backward::Auto,
            checkpoint_every: None,
            run_backwards: true,
            lr: LearningRates::default(),
            betas: betas(),
            eps: eps(),
            clip_norm: None,
            non_finite: NonFinitePolicy::Skip,
            max_consecutive_skips: max_consecutive_skips(),
            explode_factor: explode_factor(),
            reset_adam_every: None,
            warmup: 0,
        }
    }
}

fn yes() -> bool {
    true
}
