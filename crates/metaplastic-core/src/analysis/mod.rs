//! Why it works (docs/method.md §7): the analysis of a trained learner's updates on held-out continual streams
//! (alignment with the true gradient, overlap between tasks, forgetting per update, sparsity and
//! dimensionality), and the inspection of what was meta-learned. No meta-gradient is involved.
pub mod learned;
pub mod measures;
pub mod stream;

use crate::experiment::{Experiment, LoadedTask};
use crate::learner::Learner;
use crate::rng::stream as rng_stream;
use crate::tasks::sampling::stream_items;
use crate::tasks::{ImageStore, Order, SineTask, StreamConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use stream::{analyze_stream, AnalysisStream, RunAnalysis};
use tch::Tensor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AnalysisOptions {
    /// Independent held-out streams.
    pub runs: usize,
    pub seed: u64,
    /// Measure every n-th inner step (1 = all); the learner still takes every step.
    pub every: usize,
    /// Order of the stream (sine only; image streams are class by class).
    pub order: Order,
    /// Image tasks: classes in the stream.
    pub classes: usize,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        Self { runs: 1, seed: 0, every: 1, order: Order::Continual, classes: 10 }
    }
}

impl AnalysisOptions {
    /// Reads the options given for an experiment's task, naming an unknown option or one that does not
    /// apply to the task.
    pub fn for_task(given: serde_json::Value, task: &crate::experiment::TaskConfig) -> Result<Self> {
        let opts: AnalysisOptions = crate::config::from_value(given.clone())?;
        let kind = crate::eval::task_kind(task);
        if kind == "sine" {
            crate::eval::not_given(
                &given,
                &["classes"],
                "applies to classification tasks; this experiment's task is sine",
            )?;
        } else {
            crate::eval::not_given(
                &given,
                &["order"],
                &format!("applies to sine streams; this experiment's task is {kind}"),
            )?;
        }
        crate::budget::check_run_count(opts.runs)?;
        Ok(opts)
    }
}

/// The kept updates of the overlap matrix must fit in this many bytes (per run); otherwise `every` must grow.
pub const OVERLAP_BUDGET: i64 = 1 << 30;

#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
/// n, mean, std, min, max of the finite values (null when there were none).
#[serde(rename_all = "camelCase")]
#[schemars(rename = "AnalysisStat")]
pub struct Stat {
    pub n: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Stat {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Stat {
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Stat::default();
        }
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Stat {
            n: v.len(),
            mean: Some(mean),
            std: Some(var.sqrt()),
            min: v.iter().copied().reduce(f64::min),
            max: v.iter().copied().reduce(f64::max),
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayerSummary {
    /// Index of the layer in the network.
    pub layer: usize,
    pub alignment: Stat,
    /// Every measured step's alignment (all runs), for histograms.
    pub alignment_values: Vec<f64>,
    pub sign_agreement: Stat,
    pub rows_changed: Stat,
    /// Effective rank of the accumulated update of each task (all runs).
    pub effective_rank: Stat,
    /// Task × task overlap averaged over runs.
    pub overlap: Vec<Vec<Option<f64>>>,
    pub overlap_within: Stat,
    pub overlap_across: Stat,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForgettingSummary {
    /// Loss change on earlier (seen, other) tasks per measured update.
    pub per_update: Stat,
    /// Loss change on the current task per measured update (learning).
    pub current_task: Stat,
    /// [point][task] probe loss averaged over runs (NaN-free runs only).
    #[schemars(with = "Vec<Vec<Option<f64>>>")]
    pub curve: Vec<Vec<f64>>,
    /// Per task: final loss − loss right after its own segment (continual order), averaged over runs.
    #[schemars(with = "Vec<Option<f64>>")]
    pub per_task: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// The experiment's name.
    pub name: String,
    /// "local" (Oja, Hebb) or "sgd".
    pub rule: String,
    /// "sine" or "images".
    pub protocol: String,
    /// The options used, defaults filled in.
    pub options: AnalysisOptions,
    pub tasks: usize,
    pub steps: usize,
    pub layers: Vec<LayerSummary>,
    pub forgetting: ForgettingSummary,
    pub runs: Vec<RunAnalysis>,
}

/// Analyses the experiment's learner on held-out streams of its task (sine: fresh functions; images:
/// the evaluation classes).
pub fn analyze(exp: &mut Experiment, opts: &AnalysisOptions) -> Result<Analysis> {
    crate::budget::check_run_count(opts.runs)?;
    if opts.every == 0 {
        return Err(Error::config("every", "must be at least 1"));
    }
    let saved = std::mem::replace(&mut exp.learner.rng, rng_stream(opts.seed, "analysis-reinit"));
    let result = tch::no_grad(|| -> Result<(String, Vec<AnalysisStream>)> {
        let learner = &exp.learner;
        Ok(match &exp.task {
            LoadedTask::Custom => return Err(Error::config("task", "a custom task has no held-out stream to analyse")),
            LoadedTask::Sine(task, _) => ("sine".into(), sine_streams(learner, task, opts)?),
            LoadedTask::Images { test, .. } => ("images".into(), image_streams(learner, test, opts)?),
        })
    })
    .and_then(|(protocol, streams)| analyze_streams(&mut exp.learner, &exp.cfg.name, &protocol, &streams, opts));
    exp.learner.rng = saved;
    result
}

fn sine_streams(learner: &Learner, task: &SineTask, opts: &AnalysisOptions) -> Result<Vec<AnalysisStream>> {
    let mut rng = rng_stream(opts.seed, "analysis-sine");
    (0..opts.runs)
        .map(|_| {
            let r = task.eval_run(&mut rng, opts.order)?;
            let batch = learner.prepare(&r.support_x, &r.support_y, &r.query_x, &r.query_y, vec![])?;
            let features = learner.features_with(&batch.support_x, false)?;
            let qf = learner.features_with(&batch.query_x, false)?;
            let probes =
                (0..qf.size()[0]).map(|j| Ok((qf.f_get(j)?, batch.query_y.f_get(j)?))).collect::<Result<_>>()?;
            Ok(AnalysisStream { features, ys: batch.support_y, step_task: r.step_function, probes })
        })
        .collect()
}

fn image_streams(learner: &Learner, store: &ImageStore, opts: &AnalysisOptions) -> Result<Vec<AnalysisStream>> {
    let outputs = learner.spec.outputs() as usize;
    if opts.classes == 0 || opts.classes > store.num_classes() || opts.classes > outputs {
        return Err(Error::config(
            "classes",
            format!(
                "{} classes requested, but the evaluation set has {} and the network {outputs} outputs",
                opts.classes,
                store.num_classes()
            ),
        ));
    }
    let mut rng = rng_stream(opts.seed, "analysis-images");
    let cfg = StreamConfig { classes: opts.classes, ..StreamConfig::default() };
    (0..opts.runs)
        .map(|_| {
            let items = stream_items(store, &mut rng, &cfg)?;
            let gather = |list: &[((usize, usize), i64)]| -> Result<(Tensor, Vec<i64>)> {
                let ids: Vec<(usize, usize)> = list.iter().map(|&(i, _)| i).collect();
                let x = store.gather(&ids)?.f_to_device(learner.device)?.f_to_kind(learner.kind)?;
                Ok((learner.features_with(&x, false)?, list.iter().map(|&(_, l)| l).collect()))
            };
            let (train_f, train_y) = gather(&items.train)?;
            let (test_f, test_y) = gather(&items.test)?;
            let labels = |v: &[i64]| -> Result<Tensor> { Ok(Tensor::f_from_slice(v)?.f_to_device(learner.device)?) };
            let probes = (0..opts.classes as i64)
                .map(|c| {
                    let idx: Vec<i64> =
                        test_y.iter().enumerate().filter(|&(_, &l)| l == c).map(|(i, _)| i as i64).collect();
                    let idx = labels(&idx)?;
                    Ok((test_f.f_index_select(0, &idx)?, labels(&vec![c; idx.size()[0] as usize])?))
                })
                .collect::<Result<_>>()?;
            Ok(AnalysisStream {
                features: train_f.f_unsqueeze(1)?,
                ys: labels(&train_y)?.f_unsqueeze(1)?,
                step_task: train_y.iter().map(|&l| l as usize).collect(),
                probes,
            })
        })
        .collect()
}

/// Analyses streams already in feature space and summarises them.
pub fn analyze_streams(
    learner: &mut Learner,
    name: &str,
    protocol: &str,
    streams: &[AnalysisStream],
    opts: &AnalysisOptions,
) -> Result<Analysis> {
    if opts.every == 0 {
        return Err(Error::config("every", "must be at least 1"));
    }
    let first = streams.first().ok_or_else(|| Error::config("runs", "at least one stream is required"))?;
    let steps = first.features.size()[0] as usize;
    let weights: i64 =
        learner.spec.plastic().map(|l| learner.spec.layers[l].weight_shape().iter().product::<i64>()).sum();
    let kept = weights * steps.div_ceil(opts.every) as i64 * 8;
    if kept > OVERLAP_BUDGET {
        return Err(Error::config(
            "every",
            format!(
                "measuring every {} step(s) keeps {} MiB of updates for the overlap matrix; use every ≥ {}",
                opts.every,
                kept >> 20,
                (kept / OVERLAP_BUDGET + 1) * opts.every as i64
            ),
        ));
    }
    // What each run returns, about: a record per measured step and plastic layer, and the task × task overlaps.
    let layers = learner.spec.plastic().len() as f64;
    let tasks = first.step_task.iter().max().map_or(1, |t| t + 1) as f64;
    crate::budget::check_eval_runs(
        streams.len(),
        layers * (8.0 * steps.div_ceil(opts.every) as f64 + tasks * tasks + 2.0 * tasks),
    )?;
    let runs = streams.iter().map(|s| Ok(analyze_stream(learner, s, opts.every)?.0)).collect::<Result<Vec<_>>>()?;
    let rule = if learner.local_rule().is_some() { "local" } else { "sgd" };
    Ok(Analysis {
        name: name.to_string(),
        rule: rule.into(),
        protocol: protocol.into(),
        options: opts.clone(),
        tasks: first.tasks(),
        steps,
        layers: summarize_layers(learner, &runs),
        forgetting: summarize_forgetting(&runs, first.tasks()),
        runs,
    })
}

fn summarize_layers(learner: &Learner, runs: &[RunAnalysis]) -> Vec<LayerSummary> {
    let steps = || runs.iter().flat_map(|r| r.steps.iter());
    learner
        .spec
        .plastic()
        .enumerate()
        .map(|(k, layer)| {
            let alignment_values: Vec<f64> = steps().filter_map(|s| s.layers[k].alignment).collect();
            let tasks = runs[0].overlap[k].len();
            let overlap = (0..tasks)
                .map(|a| (0..tasks).map(|b| Stat::of(runs.iter().filter_map(|r| r.overlap[k][a][b])).mean).collect())
                .collect();
            LayerSummary {
                layer,
                alignment: Stat::of(alignment_values.iter().copied()),
                alignment_values,
                sign_agreement: Stat::of(steps().filter_map(|s| s.layers[k].sign_agreement)),
                rows_changed: Stat::of(steps().map(|s| s.layers[k].rows_changed)),
                effective_rank: Stat::of(runs.iter().flat_map(|r| r.effective_rank[k].iter().flatten().copied())),
                overlap,
                overlap_within: Stat::of(runs.iter().filter_map(|r| r.overlap_within[k])),
                overlap_across: Stat::of(runs.iter().filter_map(|r| r.overlap_across[k])),
            }
        })
        .collect()
}

fn summarize_forgetting(runs: &[RunAnalysis], tasks: usize) -> ForgettingSummary {
    let steps = || runs.iter().flat_map(|r| r.steps.iter());
    let others = steps()
        .flat_map(|s| s.loss_change.iter().enumerate().filter(move |&(j, _)| j != s.task).filter_map(|(_, c)| *c));
    let ok: Vec<&RunAnalysis> = runs.iter().filter(|r| r.curve.iter().flatten().all(|v| v.is_finite())).collect();
    let points = runs[0].curve.len();
    let mean = |f: &dyn Fn(&RunAnalysis) -> f64| {
        if ok.is_empty() {
            f64::NAN
        } else {
            ok.iter().map(|r| f(r)).sum::<f64>() / ok.len() as f64
        }
    };
    let curve = (0..points).map(|p| (0..tasks).map(|j| mean(&|r| r.curve[p][j])).collect()).collect();
    let per_task = (0..tasks).map(|j| mean(&|r| r.curve[points - 1][j] - r.curve[j.min(points - 1)][j])).collect();
    ForgettingSummary {
        per_update: Stat::of(others),
        current_task: Stat::of(steps().filter_map(|s| s.loss_change[s.task])),
        curve,
        per_task,
    }
}
