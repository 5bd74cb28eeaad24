//! The reverse pass through OML's SGD inner loop: the second-order meta-gradient without autograd's
//! double-backward graph.
//!
//! One step: θ' = θ − s α ⊙ ∇ℓ(θ, x) for the plastic weights and biases θ = (W, b). With adjoints
//! (G, g) of θ', the cotangent of the update is V = −s α ⊙ G (v = −s α_b ⊙ g for adapted biases), and
//!   ∂L/∂θ = (G, g) + H_θθ V,    ∂L/∂x = H_xθ V,    ∂L/∂α = −s G ⊙ ∇ℓ,
//! both Hessian products being the gradient of D = <∇_θ ℓ, V>, the directional derivative of ℓ along V.
//! D is computed in forward mode (tangents ż_k = h_k V_kᵀ + v_k + ḣ_k W_kᵀ, ḣ_{k+1} = ż_k ⊙ 1[z_k > 0])
//! and differentiated in reverse mode by hand. The adjoint of each tangent ż_k is the ordinary backprop
//! signal δ_k = ∂ℓ/∂z_k, so with z̄ the adjoint of the primal pre-activations:
//!   z̄_out = Hess_ŷ(ℓ) ż_out,   h̄_k = δ_k V_k + z̄_k W_k,   z̄_{k−1} = h̄_k ⊙ 1[z_{k−1} > 0],
//!   W̄_k = δ_kᵀ ḣ_k + z̄_kᵀ h_k,   b̄_k = Σ_b z̄_k,   x̄ = h̄_0.
use super::{accumulate, dot, relu_backward, softmax_backward, StepAdjoint};
use crate::config::{LearnerConfig, TaskKind};
use crate::inner::StepMode;
use crate::learner::Learner;
use crate::net::functional::{tail, TailActivations};
use crate::params::ParamStore;
use crate::rules::sgd::{SgdRule, StepSize};
use crate::{Error, Result};
use tch::{Kind, Tensor};

/// A step size: the fixed one, or the (detached) meta-learned tensor.
enum Step {
    Fixed(f64),
    Learned(Tensor),
}

impl Step {
    /// −α ⊙ t
    fn descend(&self, t: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Step::Fixed(lr) => t.f_mul_scalar(-lr)?,
            Step::Learned(a) => t.f_mul(a)?.f_neg()?,
        })
    }
}

pub(super) struct SgdAdjoint {
    cfg: LearnerConfig,
    n: usize,
    adapt_biases: bool,
    steps_w: Vec<Step>,
    steps_b: Vec<Step>,
    /// Store indices of learned step sizes (weight, bias) per layer.
    learned: Option<Vec<(usize, usize)>>,
    grad_w: Vec<Option<Tensor>>,
    grad_b: Vec<Option<Tensor>>,
}

pub(super) struct SgdTape {
    acts: TailActivations,
    /// δ_k = ∂ℓ/∂z_k of each plastic layer.
    delta: Vec<Tensor>,
    /// ∇W_k, ∇b_k (kept only when step sizes are learned: their gradient needs them).
    grads: Option<(Vec<Tensor>, Vec<Tensor>)>,
}

impl SgdAdjoint {
    pub fn new(learner: &Learner) -> Result<Self> {
        let rule: &SgdRule = learner.sgd_rule().ok_or_else(|| Error::Internal("not an sgd rule".into()))?;
        let n = learner.spec.plastic().count();
        let (steps_w, steps_b, learned) = match &rule.step {
            StepSize::Fixed(lr) => {
                ((0..n).map(|_| Step::Fixed(*lr)).collect(), (0..n).map(|_| Step::Fixed(*lr)).collect(), None)
            }
            StepSize::Learned(idx) => {
                let value = |i: usize| -> Result<Step> { Ok(Step::Learned(learner.params.at(i).f_detach()?)) };
                (
                    idx.iter().map(|&(w, _)| value(w)).collect::<Result<_>>()?,
                    idx.iter().map(|&(_, b)| value(b)).collect::<Result<_>>()?,
                    Some(idx.clone()),
                )
            }
        };
        Ok(Self {
            cfg: learner.cfg.clone(),
            n,
            adapt_biases: rule.biases,
            steps_w,
            steps_b,
            learned,
            grad_w: (0..n).map(|_| None).collect(),
            grad_b: (0..n).map(|_| None).collect(),
        })
    }

    /// ∂ℓ/∂ŷ of the summed per-episode task loss (MSE mean over the batch and outputs; CE mean over the batch).
    fn output_gradient(&self, y_hat: &Tensor, y: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let s = y_hat.size();
        Ok(match self.cfg.task {
            TaskKind::Regression => (y_hat.f_sub(y)?.f_mul_scalar(2.0 / (s[1] * s[2]) as f64)?, None),
            TaskKind::Classification => {
                let p = y_hat.f_softmax(-1, y_hat.kind())?;
                (p.f_sub(&y.f_one_hot(s[2])?.f_to_kind(y_hat.kind())?)?.f_div_scalar(s[1] as f64)?, Some(p))
            }
        })
    }
}

impl StepAdjoint for SgdAdjoint {
    type Tape = SgdTape;
    type Kept = ();

    fn forward(
        &self,
        _t: usize,
        w: &[Tensor],
        b: &[Tensor],
        x: &Tensor,
        y: &Tensor,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>, SgdTape)> {
        let acts = tail(x, w, b)?;
        let (d_out, _) = self.output_gradient(acts.output(), y)?;
        let mut delta = vec![d_out];
        for k in (0..self.n - 1).rev() {
            let up = delta.last().unwrap().f_matmul(&w[k + 1])?;
            delta.push(relu_backward(&up, &acts.z[k])?);
        }
        delta.reverse();
        let mut nw = Vec::with_capacity(self.n);
        let mut nb = Vec::with_capacity(self.n);
        let mut kept = (Vec::new(), Vec::new());
        for k in 0..self.n {
            let delta_t = delta[k].f_transpose(1, 2)?;
            let gb = delta[k].f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?;
            match (&self.steps_w[k], self.learned.is_some()) {
                // W − α δᵀa in one kernel, when the gradient itself need not be kept.
                (Step::Fixed(lr), false) => nw.push(w[k].f_baddbmm(&delta_t, &acts.pre[k], 1.0, -lr)?),
                _ => {
                    let gw = delta_t.f_matmul(&acts.pre[k])?;
                    nw.push(w[k].f_add(&self.steps_w[k].descend(&gw)?)?);
                    kept.0.push(gw);
                }
            }
            nb.push(if self.adapt_biases { b[k].f_add(&self.steps_b[k].descend(&gb)?)? } else { b[k].shallow_clone() });
            if self.learned.is_some() {
                kept.1.push(gb);
            }
        }
        let grads = self.learned.as_ref().map(|_| kept);
        Ok((nw, nb, SgdTape { acts, delta, grads }))
    }

    fn backward(
        &mut self,
        _t: usize,
        w: &[Tensor],
        _b: &[Tensor],
        tape: SgdTape,
        gw: Vec<Tensor>,
        gb: Vec<Tensor>,
        mode: StepMode,
        _unstep: bool,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>, Option<Tensor>)> {
        if mode == StepMode::Constant {
            return Ok((gw, gb, None));
        }
        // Step sizes: ∂L/∂α = −G ⊙ ∇ℓ (reduced to the step size's shape by the surrogate's broadcast).
        if let Some((grad_w, grad_b)) = &tape.grads {
            for k in 0..self.n {
                accumulate(&mut self.grad_w[k], gw[k].f_mul(&grad_w[k])?.f_neg()?)?;
                if self.adapt_biases {
                    accumulate(&mut self.grad_b[k], gb[k].f_mul(&grad_b[k])?.f_neg()?)?;
                }
            }
        }
        if mode == StepMode::FirstOrder {
            return Ok((gw, gb, None));
        }
        let n = self.n;
        let acts = &tape.acts;
        let v: Vec<Tensor> = (0..n).map(|k| self.steps_w[k].descend(&gw[k])).collect::<Result<_>>()?;
        let vb: Vec<Option<Tensor>> = (0..n)
            .map(|k| if self.adapt_biases { self.steps_b[k].descend(&gb[k]).map(Some) } else { Ok(None) })
            .collect::<Result<_>>()?;
        // Tangents of the forward pass along V.
        let mut dz = Vec::with_capacity(n);
        let mut dh: Vec<Option<Tensor>> = vec![None]; // ḣ_0 = 0: the features are not perturbed
        for k in 0..n {
            let mut z = acts.pre[k].f_matmul(&v[k].f_transpose(1, 2)?)?;
            if let Some(vb) = &vb[k] {
                z = z.f_add(&vb.f_unsqueeze(1)?)?;
            }
            if let Some(h) = &dh[k] {
                let _ = z.f_baddbmm_(h, &w[k].f_transpose(1, 2)?)?;
            }
            if k + 1 < n {
                dh.push(Some(relu_backward(&z, &acts.z[k])?));
            }
            dz.push(z);
        }
        // Reverse over the primal pass: z̄ starts at the output from the loss's curvature.
        let y_hat = acts.output();
        let dz_out = &dz[n - 1];
        let mut zbar = match self.cfg.task {
            TaskKind::Regression => {
                let s = y_hat.size();
                dz_out.f_mul_scalar(2.0 / (s[1] * s[2]) as f64)?
            }
            TaskKind::Classification => {
                softmax_backward(dz_out, &y_hat.f_softmax(-1, y_hat.kind())?)?.f_div_scalar(y_hat.size()[1] as f64)?
            }
        };
        let mut out_w = gw;
        let mut out_b = gb;
        let mut dx = None;
        for k in (0..n).rev() {
            // G + z̄ᵀh + δᵀḣ, accumulated by two batched multiply-adds.
            let mut gk = out_w[k].f_baddbmm(&zbar.f_transpose(1, 2)?, &acts.pre[k], 1.0, 1.0)?;
            if let Some(h) = &dh[k] {
                let _ = gk.f_baddbmm_(&tape.delta[k].f_transpose(1, 2)?, h)?;
            }
            out_w[k] = gk;
            out_b[k] = out_b[k].f_add(&zbar.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?)?;
            let mut hbar = tape.delta[k].f_matmul(&v[k])?;
            let _ = hbar.f_baddbmm_(&zbar, &w[k])?;
            if k == 0 {
                dx = Some(hbar);
            } else {
                zbar = relu_backward(&hbar, &acts.z[k - 1])?;
            }
        }
        Ok((out_w, out_b, dx))
    }

    fn surrogate(&self, params: &ParamStore) -> Result<Option<Tensor>> {
        let Some(idx) = &self.learned else { return Ok(None) };
        let mut total = None;
        for (k, &(wi, bi)) in idx.iter().enumerate().take(self.n) {
            for (grad, index) in [(&self.grad_w[k], wi), (&self.grad_b[k], bi)] {
                if let Some(g) = grad {
                    let p = params.at(index);
                    // The step size broadcasts over episodes (and, per layer, over the whole tensor).
                    accumulate(&mut total, dot(p, &g.f_sum_to_size(p.size())?)?)?;
                }
            }
        }
        Ok(total)
    }
}
