//! The learner's configuration: plain data (serde, camelCase), validated with errors that name the field.
//! Every variant of the paper and its ablations is a value here, not a code path of its own.
use crate::net::spec::NetSpec;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

pub use crate::net::spec::LayerSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TaskKind {
    Regression,
    Classification,
}

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
    /// Oja's rule with its decay term: ΔW = P ⊙ (ãᵀa − diag(Σ ã²) W).
    Oja,
    /// Plain Hebbian rule: ΔW = P ⊙ ãᵀa.
    Hebb,
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

impl RuleConfig {
    pub fn is_local(&self) -> bool {
        !matches!(self, RuleConfig::Sgd { .. })
    }
}

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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PlasticInit {
    /// The plastic weights' initial values are meta-learned.
    #[default]
    MetaLearned,
    /// Plastic weights are drawn afresh (Kaiming normal) at the start of every episode.
    Reinit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OutputReset {
    #[default]
    None,
    /// Zero the output rows (weights and bias) of the episode's classes before the episode.
    EpisodeClasses,
    /// Zero the whole output layer before each episode.
    All,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Dtype {
    #[default]
    Float32,
    Float64,
}

impl Dtype {
    pub fn kind(self) -> tch::Kind {
        match self {
            Dtype::Float32 => tch::Kind::Float,
            Dtype::Float64 => tch::Kind::Double,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LearnerConfig {
    /// Shape of one example, e.g. [11] or [1, 28, 28].
    pub input_shape: Vec<i64>,
    /// The layers in order; the last one is the (linear) output layer.
    pub layers: Vec<LayerSpec>,
    /// Number of front layers frozen during the inner loop (still meta-learned).
    #[serde(default)]
    pub rln: usize,
    /// Regression (MSE loss) or classification (cross-entropy).
    pub task: TaskKind,
    /// The inner-loop learning rule: Oja or Hebb with learned feedback (FLP), or SGD (OML).
    pub rule: RuleConfig,
    /// Local rules: how the teaching activity is formed.
    #[serde(default)]
    pub feedback: FeedbackConfig,
    /// Local rules: the plasticity rates.
    #[serde(default)]
    pub plasticity: PlasticityConfig,
    /// Where each episode's plastic weights start.
    #[serde(default)]
    pub plastic_init: PlasticInit,
    /// Output rows zeroed before each episode.
    #[serde(default)]
    pub output_reset: OutputReset,
    /// Meta-training: the meta-gradient, Adam, and the safeguards against divergence.
    #[serde(default)]
    pub meta: MetaConfig,
    /// Floating-point type of the parameters and activities.
    #[serde(default)]
    pub dtype: Dtype,
    /// "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    #[serde(default = "auto")]
    pub device: String,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
}

fn auto() -> String {
    "auto".to_string()
}

/// Deserializes a configuration value; a structural error names the offending path (e.g. `rule.lr`).
pub fn from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    let original = value.clone();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = e.path().to_string();
        let message = e.into_inner().to_string();
        // Tagged enums (the task) buffer their content, so the path stops at the enum: find the unknown
        // key below it ("task" becomes "task.sine.batchSiz").
        let unknown = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next());
        if let Some(key) = unknown {
            let prefix = if path == "." { String::new() } else { path.clone() };
            let mut found = Vec::new();
            key_paths(&original, key, "", &mut found);
            if let Some(p) = found.into_iter().find(|p| p.starts_with(&prefix) && p.len() > prefix.len()) {
                path = p;
            }
        }
        Error::config(if path == "." { "config".to_string() } else { path }, message)
    })
}

/// Dotted paths (`a.b[2].c`) of every object key named `key` in `v`.
fn key_paths(v: &serde_json::Value, key: &str, at: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                let p = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                if k == key {
                    out.push(p.clone());
                }
                key_paths(child, key, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            a.iter().enumerate().for_each(|(i, c)| key_paths(c, key, &format!("{at}[{i}]"), out))
        }
        _ => {}
    }
}

/// Parses JSON text into a configuration (see `from_value`).
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    from_value(serde_json::from_str(text).map_err(|e| Error::config("config", format!("not valid JSON: {e}")))?)
}

fn positive(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::config(field, format!("must be a positive finite number, got {v}")))
    }
}

fn non_negative(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Error::config(field, format!("must be a finite number >= 0, got {v}")))
    }
}

impl LearnerConfig {
    /// Parses JSON, naming the offending path for structural errors, then validates.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: LearnerConfig = parse_json(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serialises")
    }

    pub fn signal(&self) -> Signal {
        self.feedback.signal.unwrap_or(match self.task {
            TaskKind::Regression => Signal::Error,
            TaskKind::Classification => Signal::Target,
        })
    }

    /// Number of outputs of the network (units of the last layer).
    pub fn outputs(&self) -> i64 {
        match self.layers.last() {
            Some(LayerSpec::Linear { units }) => *units,
            _ => 0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.input_shape.is_empty() || self.input_shape.iter().any(|&d| d < 1) {
            return Err(Error::config(
                "inputShape",
                format!("must be a non-empty list of positive sizes, got {:?}", self.input_shape),
            ));
        }
        if self.layers.is_empty() {
            return Err(Error::config("layers", "at least one layer is required"));
        }
        let mut seen_linear = false;
        for (i, layer) in self.layers.iter().enumerate() {
            match *layer {
                LayerSpec::Linear { units } => {
                    seen_linear = true;
                    if units < 1 {
                        return Err(Error::config(format!("layers[{i}].units"), format!("must be >= 1, got {units}")));
                    }
                }
                LayerSpec::Conv { channels, kernel, stride, padding } => {
                    if seen_linear {
                        return Err(Error::config(
                            format!("layers[{i}]"),
                            "conv layers must come before all linear layers",
                        ));
                    }
                    if self.input_shape.len() != 3 {
                        return Err(Error::config(
                            format!("layers[{i}]"),
                            format!(
                                "conv layers need an input shape [channels, height, width], got {:?}",
                                self.input_shape
                            ),
                        ));
                    }
                    for (name, v, min) in [
                        ("channels", channels, 1),
                        ("kernel", kernel, 1),
                        ("stride", stride, 1),
                        ("padding", padding, 0),
                    ] {
                        if v < min {
                            return Err(Error::config(
                                format!("layers[{i}].{name}"),
                                format!("must be >= {min}, got {v}"),
                            ));
                        }
                    }
                }
            }
        }
        if !matches!(self.layers.last(), Some(LayerSpec::Linear { .. })) {
            return Err(Error::config(format!("layers[{}]", self.layers.len() - 1), "the output layer must be linear"));
        }
        if self.rln >= self.layers.len() {
            return Err(Error::config(
                "rln",
                format!(
                    "must be smaller than the number of layers ({}), got {}: at least the output layer is plastic",
                    self.layers.len(),
                    self.rln
                ),
            ));
        }
        if let Some(i) = self.layers[self.rln..].iter().position(|l| matches!(l, LayerSpec::Conv { .. })) {
            return Err(Error::config(
                "rln",
                format!(
                    "layers[{}] is a conv layer but plastic layers must be linear: rln must cover every conv layer",
                    self.rln + i
                ),
            ));
        }
        NetSpec::new(&self.input_shape, &self.layers, self.rln)?; // checks that the shapes chain
        if self.task == TaskKind::Classification && self.outputs() < 2 {
            return Err(Error::config("layers", "classification needs at least 2 output units"));
        }
        if self.task == TaskKind::Regression && self.feedback.signal == Some(Signal::CrossEntropy) {
            return Err(Error::config("feedback.signal", "crossEntropy is a classification signal"));
        }
        if !(1..=crate::budget::MAX_FEEDBACK_LAYERS).contains(&self.feedback.layers) {
            return Err(Error::config(
                "feedback.layers",
                format!("must be from 1 to {}, got {}", crate::budget::MAX_FEEDBACK_LAYERS, self.feedback.layers),
            ));
        }
        let s = self.feedback.strength.init;
        if !(s.is_finite()) {
            return Err(Error::config("feedback.strength.init", format!("must be finite, got {s}")));
        }
        match &self.rule {
            RuleConfig::Sgd { lr, .. } => non_negative("rule.lr", *lr)?,
            _ => {
                if !self.plasticity.init.is_finite() {
                    return Err(Error::config("plasticity.init", "must be finite"));
                }
                if !self.plasticity.hidden_multiplier.is_finite() {
                    return Err(Error::config("plasticity.hiddenMultiplier", "must be finite"));
                }
                if (self.plasticity.parameterization == RateParameterization::Log || self.plasticity.layer_scale)
                    && self.plasticity.init <= 0.0
                {
                    return Err(Error::config(
                        "plasticity.init",
                        format!(
                            "must be > 0 with parameterization 'log' or layerScale (they start from ln(init)), got {}",
                            self.plasticity.init
                        ),
                    ));
                }
                if self.plasticity.hebb_first_step && !matches!(self.rule, RuleConfig::Oja) {
                    return Err(Error::config("plasticity.hebbFirstStep", "applies to the oja rule only"));
                }
            }
        }
        let lr = &self.meta.lr;
        for (name, v) in [
            ("meta.lr.forward", lr.forward),
            ("meta.lr.feedback", lr.feedback),
            ("meta.lr.plasticity", lr.plasticity),
            ("meta.lr.strength", lr.strength),
        ] {
            non_negative(name, v)?;
        }
        for (i, b) in self.meta.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(Error::config(format!("meta.betas[{i}]"), format!("must be in [0, 1), got {b}")));
            }
        }
        positive("meta.eps", self.meta.eps)?;
        if let Some(c) = self.meta.clip_norm {
            positive("meta.clipNorm", c)?;
        }
        if self.meta.checkpoint_every == Some(0) {
            return Err(Error::config("meta.checkpointEvery", "must be >= 1"));
        }
        if let Some(f) = self.meta.explode_factor {
            if !(f.is_finite() && f > 1.0) {
                return Err(Error::config(
                    "meta.explodeFactor",
                    format!("must be a finite number > 1 (or null to turn the check off), got {f}"),
                ));
            }
        }
        if self.meta.reset_adam_every == Some(0) {
            return Err(Error::config("meta.resetAdamEvery", "must be >= 1 (or null for never)"));
        }
        if let MetaGradient::Truncated { steps } = self.meta.gradient {
            if steps < 1 {
                return Err(Error::config("meta.gradient.steps", "must be >= 1"));
            }
        }
        crate::runtime::parse_device(&self.device)?;
        Ok(())
    }
}
