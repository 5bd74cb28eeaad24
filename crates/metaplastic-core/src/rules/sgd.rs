//! OML's inner rule: one SGD step on the task loss per minibatch, on the plastic layers' weights (and
//! biases), with a fixed step size or meta-learned per-parameter / per-layer step sizes.
//! With `create_graph` the gradient itself is differentiated (second-order meta-gradient).
use super::StepSizes;
use super::{full, InnerRule, StepInputs, Update};
use crate::loss;
use crate::net::spec::NetSpec;
use crate::params::{Group, ParamStore};
use crate::Result;
use tch::{Device, Kind, Tensor};

pub enum StepSize {
    Fixed(f64),
    /// Parameter index per plastic layer: (weight step sizes, bias step sizes).
    Learned(Vec<(usize, usize)>),
}

pub struct SgdRule {
    pub step: StepSize,
    pub biases: bool,
}

impl SgdRule {
    /// Builds OML's rule with step size `lr`: fixed, or meta-learned step sizes initialised to `lr`, per
    /// parameter entry or per plastic layer, added to `params`.
    pub fn build(
        lr: f64,
        step_sizes: StepSizes,
        biases: bool,
        spec: &NetSpec,
        params: &mut ParamStore,
        on: (Kind, Device),
    ) -> Result<Self> {
        let step = match step_sizes {
            StepSizes::Fixed => StepSize::Fixed(lr),
            StepSizes::PerParameter => StepSize::Learned(
                spec.plastic()
                    .map(|l| -> Result<(usize, usize)> {
                        let w = params.add(
                            format!("stepSize.{l}.weight"),
                            full(lr, &spec.layers[l].weight_shape(), on)?,
                            Group::Plasticity,
                            true,
                        );
                        let b = params.add(
                            format!("stepSize.{l}.bias"),
                            full(lr, &[spec.layers[l].units()], on)?,
                            Group::Plasticity,
                            true,
                        );
                        Ok((w, b))
                    })
                    .collect::<Result<_>>()?,
            ),
            StepSizes::PerLayer => StepSize::Learned(
                spec.plastic()
                    .map(|l| -> Result<(usize, usize)> {
                        let s = params.add(format!("stepSize.{l}"), full(lr, &[], on)?, Group::Plasticity, true);
                        Ok((s, s))
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        Ok(SgdRule { step, biases })
    }
}

fn scaled(g: Tensor, step: &StepSize, idx: Option<usize>, params: &ParamStore, scale: f64) -> Result<Tensor> {
    Ok(g.f_mul(&step_rate(&g, step, idx, params, scale)?)?)
}

/// −scale × the step size, as a tensor that broadcasts over the parameter's episodes: the weights' update
/// is then one multiply-add, W + rate ⊙ g, with no weight-sized product of its own.
fn step_rate(like: &Tensor, step: &StepSize, idx: Option<usize>, params: &ParamStore, scale: f64) -> Result<Tensor> {
    Ok(match (step, idx) {
        (StepSize::Fixed(lr), _) => Tensor::f_full([], -lr * scale, (like.kind(), like.device()))?,
        (StepSize::Learned(_), Some(i)) => params.at(i).f_mul_scalar(-scale)?,
        (StepSize::Learned(_), None) => unreachable!("learned step sizes always have an index"),
    })
}

impl InnerRule for SgdRule {
    fn update(&self, params: &ParamStore, inp: &StepInputs) -> Result<Update> {
        // Episodes are independent, so the gradient of the summed loss is each episode's own gradient.
        let total = loss::per_episode(inp.cfg, inp.acts.output(), inp.y)?.f_sum(None::<tch::Kind>)?;
        let n = inp.w.len();
        let mut wrt: Vec<&Tensor> = inp.w.iter().collect();
        if self.biases {
            wrt.extend(inp.b.iter());
        }
        let grads = Tensor::f_run_backward(&[&total], &wrt, inp.create_graph, inp.create_graph)?;
        let grad = |i: usize| -> Result<Tensor> {
            let g = &grads[i];
            Ok(if g.defined() { g.shallow_clone() } else { wrt[i].f_zeros_like()? })
        };
        let idx = |k: usize, bias: bool| match &self.step {
            StepSize::Learned(v) => Some(if bias { v[k].1 } else { v[k].0 }),
            StepSize::Fixed(_) => None,
        };
        let mut w = Vec::with_capacity(n);
        let mut w_rate = Vec::with_capacity(n);
        let mut b = Vec::with_capacity(n);
        for k in 0..n {
            let g = grad(k)?;
            w_rate.push(Some(step_rate(&g, &self.step, idx(k, false), params, inp.step_scale)?));
            w.push(g);
            b.push(if self.biases {
                Some(scaled(grad(n + k)?, &self.step, idx(k, true), params, inp.step_scale)?)
            } else {
                None
            });
        }
        Ok(Update { w, w_rate, b })
    }

    fn needs_weight_grad(&self) -> bool {
        true
    }

    fn as_sgd(&self) -> Option<&SgdRule> {
        Some(self)
    }
}
