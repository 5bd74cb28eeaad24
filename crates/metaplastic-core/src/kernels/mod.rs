//! Fused CPU loops for the local rules' weight-sized work: one pass over memory per layer and step,
//! where the same arithmetic in libtorch operations makes 4–12 passes and as many weight-sized
//! temporaries. Rows are split over libtorch's own threads. The libtorch-operation forms (crate::adjoint)
//! stay for other devices and are tested against these.
//!
//! Shapes (contiguous, float32 or float64, on the CPU): W, G, Q [E, O, I]; the teaching activity ã
//! [E, B, O] and the presynaptic activity a [E, B, I], whose outer product ãᵀa and Oja's decay
//! r = Σ_b ã² (times a learned γ of the row, `Decay::Scaled`) are formed here, row block by row block,
//! never stored; the rate P is broadcast from [O, I], [O, 1] or [] and read through its strides, and so
//! is γ from [] or [O, 1]; an optional per-row factor c [E, O]
//! (the update normalisation) scales each row's update; the rate gradient accumulates into a full
//! [O, I] (summed over episodes) and is reduced to P's shape once at the end.
//!
//! One file per idea: `threads` shares the work out over libtorch's threads, `simd` picks the vector
//! width and holds the chunk helpers, `views` reads the tensors in place, `forward` is the step and
//! `adjoint` its reverse.
mod adjoint;
mod forward;
mod simd;
mod threads;
mod views;

pub use adjoint::{local_step_adjoint, unstep_gain, StepAdjoint};
pub use forward::{local_step, local_step_in_place};
#[doc(hidden)]
pub use simd::limit_vector_width;
#[doc(hidden)]
pub use threads::limit_episode_groups;
pub use threads::{episode_groups, in_episode_groups, parallel_tasks, pipelined_tasks};

use tch::{Device, Kind, Tensor};

/// The decay term −d ⊙ W of a local step, d one value per row: none (Hebb), Oja's r = Σ_b ã², or γ ⊙ r
/// with a learned coefficient γ ([] for the layer, [O, 1] per row).
#[derive(Clone, Copy)]
pub enum Decay<'a> {
    None,
    Oja,
    Scaled(&'a Tensor),
}

impl Decay<'_> {
    /// Whether the step has a decay term at all.
    pub fn is_on(&self) -> bool {
        !matches!(self, Decay::None)
    }

    /// The coefficient γ, where there is one.
    pub fn coefficient(&self) -> Option<&Tensor> {
        match self {
            Decay::Scaled(g) => Some(g),
            _ => None,
        }
    }
}

/// `true` is Oja's decay, `false` none (Hebb): the kernels' callers without a learned γ pass a flag.
impl From<bool> for Decay<'_> {
    fn from(oja: bool) -> Self {
        if oja {
            Decay::Oja
        } else {
            Decay::None
        }
    }
}

/// Whether the fused loops can serve tensors of this kind on this device.
pub fn applies(kind: Kind, device: Device) -> bool {
    device == Device::Cpu && matches!(kind, Kind::Float | Kind::Double)
}
