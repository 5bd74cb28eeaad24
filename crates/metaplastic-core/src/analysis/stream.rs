//! Streams one held-out continual sequence through a trained learner and records, per inner step and
//! per plastic layer, what its update did. The learner steps exactly as in evaluation (the same
//! `InnerLoop::step` call on the same weights); every measurement reads copies taken around it.
use super::measures::{cosine, effective_rank, overlap, rows_changed, sign_agreement};
use crate::inner::{FastWeights, StepMode};
use crate::learner::Learner;
use crate::net::functional::tail;
use crate::{loss, Error, Result};
use serde::Serialize;
use tch::{Kind, Tensor};

/// A stream in feature space (the input of the first plastic layer), one episode.
pub struct AnalysisStream {
    /// [T, B, F]
    pub features: Tensor,
    /// [T, B, out] targets or [T, B] labels.
    pub ys: Tensor,
    /// Task (function, class) of each step's minibatch, in 0..tasks.
    pub step_task: Vec<usize>,
    /// Held-out probe points of each task: features [P_j, F] and targets, used to measure forgetting.
    pub probes: Vec<(Tensor, Tensor)>,
}

impl AnalysisStream {
    pub fn tasks(&self) -> usize {
        self.probes.len()
    }

    fn check(&self) -> Result<()> {
        let t = self.features.size()[0] as usize;
        if self.step_task.len() != t {
            return Err(Error::Shape(format!("the stream has {t} steps but {} task labels", self.step_task.len())));
        }
        if let Some(&bad) = self.step_task.iter().find(|&&k| k >= self.tasks()) {
            return Err(Error::Data(format!(
                "a step belongs to task {bad}, but only {} tasks have probe points",
                self.tasks()
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayerStep {
    /// cos(ΔW, −∇_W L) on this step's minibatch, at the weights the update was computed from.
    pub alignment: Option<f64>,
    pub sign_agreement: Option<f64>,
    /// Fraction of the weight matrix's rows the update changed.
    #[schemars(with = "Option<f64>")]
    pub rows_changed: f64,
    #[schemars(with = "Option<f64>")]
    pub update_norm: f64,
    #[schemars(with = "Option<f64>")]
    pub gradient_norm: f64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "AnalysisStep")]
pub struct StepRecord {
    pub step: usize,
    pub task: usize,
    /// One entry per plastic layer.
    pub layers: Vec<LayerStep>,
    /// L_j(W + ΔW) − L_j(W) on each task's probe points; null for tasks not yet seen.
    pub loss_change: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunAnalysis {
    pub steps: Vec<StepRecord>,
    /// Step after which each curve point was taken (after each 1/tasks of the stream).
    pub curve_steps: Vec<usize>,
    /// [point][task]: probe loss of every task at each curve point (continual order: after each task).
    #[schemars(with = "Vec<Vec<Option<f64>>>")]
    pub curve: Vec<Vec<f64>>,
    /// [layer][task]: effective rank of the task's accumulated update Σ_{t ∈ task} ΔW_t.
    pub effective_rank: Vec<Vec<Option<f64>>>,
    /// [layer][task][task] mean cosine between the measured steps' updates; within and across tasks.
    pub overlap: Vec<Vec<Vec<Option<f64>>>>,
    pub overlap_within: Vec<Option<f64>>,
    pub overlap_across: Vec<Option<f64>>,
}

fn probe_losses(learner: &Learner, fast: &FastWeights, probes: &[(Tensor, Tensor)]) -> Result<Vec<f64>> {
    probes
        .iter()
        .map(|(x, y)| {
            let out = tail(&x.f_unsqueeze(0)?, &fast.w, &fast.b)?;
            Ok(loss::per_episode(&learner.cfg, out.output(), &y.f_unsqueeze(0)?)?.f_double_value(&[0])?)
        })
        .collect()
}

/// −∇_W L of the task loss on one minibatch (features [1, B, F]) at the weights `fast`.
fn negative_gradients(learner: &Learner, fast: &FastWeights, x: &Tensor, y: &Tensor) -> Result<Vec<Tensor>> {
    tch::with_grad(|| {
        let w: Vec<Tensor> = fast.w.iter().map(|t| Ok(t.f_detach()?.set_requires_grad(true))).collect::<Result<_>>()?;
        let b: Vec<Tensor> = fast.b.iter().map(|t| Ok(t.f_detach()?)).collect::<Result<_>>()?;
        let out = tail(&x.f_detach()?, &w, &b)?;
        let l = loss::per_episode(&learner.cfg, out.output(), y)?.f_sum(None::<Kind>)?;
        let refs: Vec<&Tensor> = w.iter().collect();
        let g = Tensor::f_run_backward(&[&l], &refs, false, false)?;
        g.iter().zip(&w).map(|(g, w)| Ok(if g.defined() { g.f_neg()? } else { w.f_zeros_like()? })).collect()
    })
}

/// A copy that owns its storage (the evaluation step updates the fast weights in place).
fn deep_copy(t: &Tensor) -> Result<Tensor> {
    let mut c = t.f_detach()?.f_empty_like()?;
    c.f_copy_(t)?;
    Ok(c)
}

fn copy_weights(fast: &FastWeights) -> Result<Vec<Tensor>> {
    fast.w.iter().map(deep_copy).collect()
}

/// Runs the stream from the learner's start weights; returns the record and the final fast weights.
/// Steps t with t % every == 0 are measured (alignment, signs, rows, forgetting, overlap); the curve and
/// the accumulated updates cover every step.
pub fn analyze_stream(
    learner: &mut Learner,
    stream: &AnalysisStream,
    every: usize,
) -> Result<(RunAnalysis, FastWeights)> {
    if every == 0 {
        return Err(Error::config("every", "must be at least 1"));
    }
    stream.check()?;
    tch::no_grad(|| run(learner, stream, every))
}

fn run(learner: &mut Learner, stream: &AnalysisStream, every: usize) -> Result<(RunAnalysis, FastWeights)> {
    let (steps, tasks) = (stream.features.size()[0] as usize, stream.tasks());
    let classes: Vec<Vec<i64>> = vec![(0..tasks as i64).collect()];
    let mut fast = learner.start(1, &classes, false)?;
    let layers = fast.w.len();
    let inner = learner.inner_loop();
    let mut accumulated: Vec<Vec<Option<Tensor>>> = (0..layers).map(|_| (0..tasks).map(|_| None).collect()).collect();
    let mut measured: Vec<Vec<Tensor>> = (0..layers).map(|_| Vec::new()).collect();
    let mut measured_task = Vec::new();
    let mut seen = vec![false; tasks];
    let mut out = RunAnalysis {
        steps: vec![],
        curve_steps: vec![],
        curve: vec![],
        effective_rank: vec![],
        overlap: vec![],
        overlap_within: vec![],
        overlap_across: vec![],
    };
    for t in 0..steps {
        if inner.cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        let task = stream.step_task[t];
        seen[task] = true;
        let x = stream.features.f_select(0, t as i64)?.f_unsqueeze(0)?;
        let y = stream.ys.f_select(0, t as i64)?.f_unsqueeze(0)?;
        let measure = t % every == 0;
        let before = copy_weights(&fast)?;
        let (neg_grad, loss_before) = if measure {
            (Some(negative_gradients(learner, &fast, &x, &y)?), Some(probe_losses(learner, &fast, &stream.probes)?))
        } else {
            (None, None)
        };
        fast = inner.step(fast, &x, &y, StepMode::Constant, t)?;
        let deltas: Vec<Tensor> =
            fast.w.iter().zip(&before).map(|(a, b)| Ok(a.f_sub(b)?.f_squeeze_dim(0)?)).collect::<Result<_>>()?;
        for (k, d) in deltas.iter().enumerate() {
            let slot = &mut accumulated[k][task];
            *slot = Some(match slot.take() {
                Some(s) => s.f_add(d)?,
                None => deep_copy(d)?,
            });
        }
        if let (Some(g), Some(lb)) = (neg_grad, loss_before) {
            let la = probe_losses(learner, &fast, &stream.probes)?;
            let mut rec = StepRecord { step: t, task, layers: Vec::with_capacity(layers), loss_change: vec![] };
            for (k, d) in deltas.iter().enumerate() {
                let g = g[k].f_squeeze_dim(0)?;
                rec.layers.push(LayerStep {
                    alignment: cosine(d, &g)?,
                    sign_agreement: sign_agreement(d, &g)?,
                    rows_changed: rows_changed(d)?,
                    update_norm: d.f_norm()?.f_double_value(&[])?,
                    gradient_norm: g.f_norm()?.f_double_value(&[])?,
                });
                measured[k].push(d.f_flatten(0, 1)?);
            }
            rec.loss_change = (0..tasks).map(|j| seen[j].then(|| la[j] - lb[j])).collect();
            measured_task.push(task);
            out.steps.push(rec);
        }
        if (((t + 1) * tasks) % steps == 0 || t + 1 == steps) && out.curve_steps.last() != Some(&t) {
            out.curve_steps.push(t);
            out.curve.push(probe_losses(learner, &fast, &stream.probes)?);
        }
    }
    for k in 0..layers {
        out.effective_rank.push(
            accumulated[k]
                .iter()
                .map(|a| a.as_ref().map(effective_rank).transpose().map(Option::flatten))
                .collect::<Result<_>>()?,
        );
        let o = if measured[k].is_empty() {
            super::measures::Overlap { matrix: vec![vec![None; tasks]; tasks], within: None, across: None }
        } else {
            overlap(&Tensor::f_stack(&measured[k], 0)?, &measured_task, tasks)?
        };
        out.overlap.push(o.matrix);
        out.overlap_within.push(o.within);
        out.overlap_across.push(o.across);
    }
    Ok((out, fast))
}
