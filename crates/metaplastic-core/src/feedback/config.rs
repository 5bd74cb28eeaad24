//! How the local rules' teaching activity is formed: where it comes from, the signal fed back, the
//! feedback layers and the blend strength. Plain data (serde, camelCase), composed and validated in
//! `LearnerConfig`.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FeedbackKind {
    /// Meta-learned feedback weights B_l (FLP).
    #[default]
    Learned,
    /// Fixed random feedback weights (feedback-alignment-like), never meta-learned.
    Random,
    /// Hidden layers use their own forward activity; only the output receives feedback.
    None,
    /// Post-synaptic activity is the true negative gradient of the task loss (control).
    Derivative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Signal {
    /// e = y − ŷ
    Error,
    /// e = y (one-hot for classification)
    Target,
    /// e = onehot(y) − softmax(ŷ)
    CrossEntropy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Activation {
    #[default]
    Relu,
    Linear,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrengthConfig {
    /// Initial strength s.
    #[serde(default = "half")]
    pub init: f64,
    /// Meta-learn s (else it stays at `init`).
    #[serde(default = "yes")]
    pub learned: bool,
}

fn half() -> f64 {
    0.5
}

impl Default for StrengthConfig {
    fn default() -> Self {
        Self { init: 0.5, learned: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeedbackConfig {
    /// Where the teaching activity comes from.
    #[serde(rename = "type", default)]
    pub kind: FeedbackKind,
    /// The signal fed back from the output: by default `error` for regression, `target` for classification.
    #[serde(default)]
    pub signal: Option<Signal>,
    /// Number of feedback layers from output space to each plastic layer.
    #[serde(default = "one_usize")]
    pub layers: usize,
    /// Activation of the feedback layers.
    #[serde(default)]
    pub activation: Activation,
    /// Blend ã = s·f + (1 − s)·a of the fed-back activity f and the forward activity a, per plastic layer.
    #[serde(default)]
    pub strength: StrengthConfig,
    /// Stop meta-gradients from flowing through ŷ into the feedback signal.
    #[serde(default)]
    pub detach_signal: bool,
    /// Classification: the output layer's post-synaptic activity is clamped to onehot(y).
    #[serde(default = "yes")]
    pub clamp_output: bool,
    /// The output layer's feedback weights start at the identity (and biases at 0) instead of Kaiming normal,
    /// so that with linear feedback and strength 1 the output's teaching activity starts as the error itself
    /// (its Oja update then starts as a normalised-LMS step instead of a random-signed one).
    #[serde(default)]
    pub output_identity: bool,
}

fn one_usize() -> usize {
    1
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            kind: FeedbackKind::Learned,
            signal: None,
            layers: 1,
            activation: Activation::Relu,
            strength: StrengthConfig::default(),
            detach_signal: false,
            clamp_output: true,
            output_identity: false,
        }
    }
}

fn yes() -> bool {
    true
}
