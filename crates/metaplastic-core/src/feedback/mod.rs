//! Feedback pathways: from the output error or target to a post-synaptic "teaching" activity ã_l for
//! every plastic layer. Feedback weights are never tied to the forward weights (no weight transport).
pub(crate) mod config;

pub use config::{Activation, FeedbackConfig, FeedbackKind, Signal, StrengthConfig};

use crate::config::{LearnerConfig, TaskKind};
use crate::net::functional::TailActivations;
use crate::Result;
use tch::{Kind, Tensor};

/// The feedback meta-parameters of one plastic layer: its feedback MLP and its blend strength.
pub struct LayerFeedback<'a> {
    /// (B, c) for each feedback layer, applied in order to the signal e.
    pub layers: Vec<(&'a Tensor, &'a Tensor)>,
    pub strength: &'a Tensor,
}

/// y as a dense target [E, B, out]: one-hot for classification labels.
pub fn dense_target(cfg: &LearnerConfig, y: &Tensor, outputs: i64, kind: Kind) -> Result<Tensor> {
    Ok(match cfg.task {
        TaskKind::Regression => y.shallow_clone(),
        TaskKind::Classification => y.f_one_hot(outputs)?.f_to_kind(kind)?,
    })
}

/// −∂L/∂ŷ for the task loss summed over the batch: y − ŷ (½·squared error) or onehot − softmax (CE).
pub fn negative_output_gradient(cfg: &LearnerConfig, y_dense: &Tensor, y_hat: &Tensor) -> Result<Tensor> {
    Ok(match cfg.task {
        TaskKind::Regression => y_dense.f_sub(y_hat)?,
        TaskKind::Classification => y_dense.f_sub(&y_hat.f_softmax(-1, y_hat.kind())?)?,
    })
}

/// The feedback signal e.
pub fn signal(cfg: &LearnerConfig, y_dense: &Tensor, y_hat: &Tensor) -> Result<Tensor> {
    let e = match cfg.signal() {
        Signal::Error => y_dense.f_sub(y_hat)?,
        Signal::Target => y_dense.shallow_clone(),
        Signal::CrossEntropy => y_dense.f_sub(&y_hat.f_softmax(-1, y_hat.kind())?)?,
    };
    Ok(if cfg.feedback.detach_signal { e.f_detach()? } else { e })
}

/// f_l = φ(B_k … φ(B_1 e + c_1) … + c_k).
pub fn feedback_map(cfg: &LearnerConfig, fb: &LayerFeedback, e: &Tensor) -> Result<Tensor> {
    let mut h = e.shallow_clone();
    for (b, c) in &fb.layers {
        h = h.f_linear(b, Some(*c))?;
        if cfg.feedback.activation == Activation::Relu {
            h = h.f_relu()?;
        }
    }
    Ok(h)
}

/// True backpropagated signals δ_l = −∂L/∂z_l of every plastic layer (derivative control), computed
/// with the actual forward weights: δ_k = (δ_{k+1} W_{k+1}) ⊙ 1[z_k > 0].
pub fn derivative_signals(acts: &TailActivations, w: &[Tensor], delta_out: Tensor) -> Result<Vec<Tensor>> {
    let n = w.len();
    let mut deltas = vec![delta_out];
    for k in (0..n - 1).rev() {
        let upstream = deltas.last().unwrap().f_matmul(&w[k + 1])?;
        let gate = acts.z[k].f_gt(0.0)?.f_to_kind(upstream.kind())?;
        deltas.push(upstream.f_mul(&gate)?);
    }
    deltas.reverse();
    Ok(deltas)
}

/// Post-synaptic teaching activity ã_k for each plastic layer k, given this minibatch's activations.
pub fn teaching_activity(
    cfg: &LearnerConfig,
    acts: &TailActivations,
    fast_w: &[Tensor],
    y: &Tensor,
    feedback: &[LayerFeedback],
) -> Result<Vec<Tensor>> {
    let y_hat = acts.output();
    let outputs = y_hat.size()[2];
    let y_dense = dense_target(cfg, y, outputs, y_hat.kind())?;
    if cfg.feedback.kind == FeedbackKind::Derivative {
        let mut delta_out = negative_output_gradient(cfg, &y_dense, y_hat)?;
        if cfg.feedback.detach_signal {
            delta_out = delta_out.f_detach()?;
        }
        return derivative_signals(acts, fast_w, delta_out);
    }
    let e = signal(cfg, &y_dense, y_hat)?;
    let n = acts.post.len();
    if feedback.len() != n {
        return Err(crate::Error::Internal(format!("{} feedback pathways for {n} plastic layers", feedback.len())));
    }
    let mut out = Vec::with_capacity(n);
    for (k, (a, fb)) in acts.post.iter().zip(feedback).enumerate() {
        let is_output = k + 1 == n;
        let post = if is_output && cfg.task == TaskKind::Classification && cfg.feedback.clamp_output {
            y_dense.shallow_clone()
        } else if !is_output && cfg.feedback.kind == FeedbackKind::None {
            a.shallow_clone()
        } else {
            let f = feedback_map(cfg, fb, &e)?;
            let s = fb.strength;
            // ã = s·f + (1 − s)·a
            f.f_mul(s)?.f_add(&a.f_mul(&s.f_neg()?.f_add_scalar(1.0)?)?)?
        };
        out.push(post);
    }
    Ok(out)
}
