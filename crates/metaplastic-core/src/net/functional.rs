//! The forward pass over explicit weights. Frozen (RLN) layers take a flat batch [N, ...]; plastic
//! layers take per-episode fast weights [E, out, in] and activations [E, B, in] (batched matmuls).
use super::spec::{LayerShape, NetSpec};
use crate::Result;
use tch::Tensor;

/// Runs the frozen front on x [N, ...input] and returns the features for the first plastic layer
/// [N, features]. `weights[l]`, `biases[l]` are the meta-parameters of layer l.
pub fn front(spec: &NetSpec, weights: &[Tensor], biases: &[Tensor], x: &Tensor) -> Result<Tensor> {
    let mut h = x.shallow_clone();
    let mut flat = false;
    for l in 0..spec.rln {
        h = match spec.layers[l] {
            LayerShape::Conv { stride, padding, .. } => {
                h.f_conv2d(&weights[l], Some(&biases[l]), [stride], [padding], [1], 1)?.f_relu()?
            }
            LayerShape::Linear { .. } => {
                if !flat {
                    h = h.f_flatten(1, -1)?;
                    flat = true;
                }
                h.f_linear(&weights[l], Some(&biases[l]))?.f_relu()?
            }
        };
    }
    Ok(h.f_flatten(1, -1)?)
}

/// Pre-activation of a plastic layer: z = h Wᵀ + b, with h [E, B, in], w [E, out, in], b [E, out] or [out].
pub fn plastic_linear(h: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let b = bias_rows(b)?;
    // One fused batched multiply-add: no separate product tensor to allocate and keep for backward.
    Ok(b.f_baddbmm(h, &w.f_transpose(1, 2)?, 1.0, 1.0)?)
}

/// A bias [O] or per-episode [E, O] as rows [1 or E, 1, O] that broadcast over the minibatch (already
/// shaped ones pass through, so a caller whose biases stay fixed can shape them once).
pub fn bias_rows(b: &Tensor) -> Result<Tensor> {
    Ok(match b.dim() {
        1 => b.f_view([1, 1, -1])?,
        2 => b.f_unsqueeze(1)?,
        _ => b.shallow_clone(),
    })
}

/// Activations of the plastic tail for one minibatch.
pub struct TailActivations {
    /// Input of each plastic layer (its presynaptic activity), in plastic order.
    pub pre: Vec<Tensor>,
    /// Pre-activations z of each plastic layer.
    pub z: Vec<Tensor>,
    /// Post-activations: ReLU(z) for hidden layers, z for the output.
    pub post: Vec<Tensor>,
}

impl TailActivations {
    fn with_capacity(n: usize) -> Self {
        TailActivations { pre: Vec::with_capacity(n), z: Vec::with_capacity(n), post: Vec::with_capacity(n) }
    }

    /// Records a layer's input and pre-activation; returns its output: ReLU(z), or z for the last layer.
    fn push(&mut self, input: Tensor, z: Tensor, last: bool) -> Result<Tensor> {
        let a = if last { z.shallow_clone() } else { z.f_relu()? };
        self.pre.push(input);
        self.z.push(z);
        self.post.push(a.shallow_clone());
        Ok(a)
    }

    pub fn output(&self) -> &Tensor {
        self.post.last().expect("at least one plastic layer")
    }
}

/// The activations `tail` forms, from the pre-activations z it formed: no weights needed.
pub fn tail_from_z(features: &Tensor, z: Vec<Tensor>) -> Result<TailActivations> {
    let n = z.len();
    let mut acts = TailActivations::with_capacity(n);
    let mut h = features.shallow_clone();
    for (k, zk) in z.into_iter().enumerate() {
        h = acts.push(h, zk, k + 1 == n)?;
    }
    Ok(acts)
}

/// Forward through the plastic layers with fast weights `w[k]`, biases `b[k]` (k in plastic order).
pub fn tail(features: &Tensor, w: &[Tensor], b: &[Tensor]) -> Result<TailActivations> {
    let n = w.len();
    let mut acts = TailActivations::with_capacity(n);
    let mut h = features.shallow_clone();
    for k in 0..n {
        let z = plastic_linear(&h, &w[k], &b[k])?;
        h = acts.push(h, z, k + 1 == n)?;
    }
    Ok(acts)
}
