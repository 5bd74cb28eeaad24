//! What was meta-learned, per plastic layer: the effective plasticity rates P (after the log / layer-scale
//! parameterisation), Oja's decay coefficient γ = σ(φ) where it is learned, the feedback weights and the
//! feedback strength (local rules), or the inner step sizes (SGD). As statistics and as named arrays (for TypeScript and a safetensors export).
use super::Stat;
use crate::learner::Learner;
use crate::rules::sgd::StepSize;
use crate::tensor_io::HostTensor;
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
/// Statistics of one learned array (rates, feedback weights, strengths, step sizes).
#[serde(rename_all = "camelCase")]
#[schemars(rename = "LearnedStats")]
pub struct ArrayStats {
    pub name: String,
    pub shape: Vec<i64>,
    pub values: Stat,
    /// Mean |value| (null when not finite).
    #[schemars(with = "Option<f64>")]
    pub abs_mean: f64,
    /// Fraction of entries > 0.
    pub positive: f64,
}

/// The learned arrays: name ("rate.{l}", "decayCoefficient.{l}" (γ, where learned), "feedback.{l}.{j}.weight",
/// "feedback.{l}.{j}.bias", "strength.{l}", "stepSize.{l}.weight", ...) with the tensor.
pub fn learned_arrays(learner: &Learner) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    let det = |t: &Tensor| -> Result<Tensor> {
        Ok(t.f_detach()?.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_contiguous()?)
    };
    let plastic: Vec<usize> = learner.spec.plastic().collect();
    if let Some(rule) = learner.local_rule() {
        for (k, &l) in plastic.iter().enumerate() {
            let rate = tch::no_grad(|| rule.rate(&learner.params, k))?;
            out.push((format!("rate.{l}"), det(&rate)?));
            if let Some(gamma) = tch::no_grad(|| rule.decay_coefficient(&learner.params, k))? {
                out.push((format!("decayCoefficient.{l}"), det(&gamma)?));
            }
            for (j, &(b, c)) in rule.feedback[k].layers.iter().enumerate() {
                out.push((format!("feedback.{l}.{j}.weight"), det(learner.params.at(b))?));
                out.push((format!("feedback.{l}.{j}.bias"), det(learner.params.at(c))?));
            }
            out.push((format!("strength.{l}"), det(learner.params.at(rule.feedback[k].strength))?));
        }
    } else if let Some(rule) = learner.sgd_rule() {
        for (k, &l) in plastic.iter().enumerate() {
            match &rule.step {
                StepSize::Fixed(lr) => {
                    out.push((format!("stepSize.{l}"), Tensor::f_from_slice(&[*lr as f32])?.f_reshape([] as [i64; 0])?))
                }
                StepSize::Learned(idx) => {
                    let (w, b) = idx[k];
                    if w == b {
                        out.push((format!("stepSize.{l}"), det(learner.params.at(w))?));
                    } else {
                        out.push((format!("stepSize.{l}.weight"), det(learner.params.at(w))?));
                        out.push((format!("stepSize.{l}.bias"), det(learner.params.at(b))?));
                    }
                }
            }
        }
    }
    Ok(out)
}

pub fn array_stats(name: &str, t: &Tensor) -> Result<ArrayStats> {
    let v = Vec::<f64>::try_from(&t.f_to_kind(Kind::Double)?.f_flatten(0, -1)?)?;
    let n = v.len().max(1) as f64;
    Ok(ArrayStats {
        name: name.to_string(),
        shape: t.size(),
        abs_mean: v.iter().map(|x| x.abs()).sum::<f64>() / n,
        positive: v.iter().filter(|&&x| x > 0.0).count() as f64 / n,
        values: Stat::of(v),
    })
}

pub fn learned_stats(learner: &Learner) -> Result<Vec<ArrayStats>> {
    learned_arrays(learner)?.iter().map(|(n, t)| array_stats(n, t)).collect()
}

pub fn learned_host(learner: &Learner) -> Result<Vec<(String, HostTensor)>> {
    learned_arrays(learner)?.iter().map(|(n, t)| Ok((n.clone(), HostTensor::from_tensor(t)?))).collect()
}

/// Writes the learned arrays as one safetensors file.
pub fn export_safetensors(learner: &Learner, path: &Path) -> Result<()> {
    let arrays = learned_arrays(learner)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Tensor::write_safetensors(&arrays, path)
        .map_err(|e| Error::io(path, std::io::Error::other(format!("cannot write the learned arrays ({e})"))))
}
