//! The learner's configuration: plain data (serde, camelCase), validated with errors that name the field.
//! Every variant of the paper and its ablations is a value here, not a code path of its own.
//!
//! Each part is defined beside the module that reads it, in a file that imports nothing else of the crate
//! (the layers in net/spec.rs, the rule and its plasticity in rules/config.rs, the feedback in
//! feedback/config.rs, meta-training in meta/config.rs), and re-exported here. This file composes them, with
//! the learner's own settings (task, plastic init, output reset, dtype), into `LearnerConfig` and validates
//! the whole.
use crate::net::spec::NetSpec;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

pub use crate::feedback::config::{Activation, FeedbackConfig, FeedbackKind, Signal, StrengthConfig};
pub use crate::meta::config::{
    Backward, LearningRates, MetaConfig, MetaGradient, NonFinitePolicy, EXPLODE_MIN, EXPLODE_WINDOW,
};
pub use crate::net::spec::LayerSpec;
pub use crate::rules::config::{
    DecayConfig, DecayGranularity, Granularity, PlasticityConfig, RateParameterization, RuleConfig, StepSizes,
    UpdateNormalization,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TaskKind {
    Regression,
    Classification,
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
                if let Some(max) = self.plasticity.max_rate {
                    if !(max.is_finite() && max > 0.0) {
                        return Err(Error::config("plasticity.maxRate", format!("must be finite and > 0, got {max}")));
                    }
                }
                if self.plasticity.hebb_first_step && !matches!(self.rule, RuleConfig::Oja { .. }) {
                    return Err(Error::config("plasticity.hebbFirstStep", "applies to the oja rule only"));
                }
                if let Some(decay) = self.rule.decay() {
                    let g = decay.init;
                    if !(g > 0.0 && g < 1.0) {
                        return Err(Error::config(
                            "rule.decay.init",
                            format!("must be strictly between 0 and 1 (γ = σ(φ) starts at its logit), got {g}"),
                        ));
                    }
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
