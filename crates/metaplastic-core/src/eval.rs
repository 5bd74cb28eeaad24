//! Continual-learning evaluation protocols (docs/method.md §5). Runs are batched as episodes and evaluated
//! without meta-gradients. Results are raw per-run values; summaries (mean, 95% CI) are made by the
//! caller. The output is a pure function of the learner, the seed and the options.
use crate::experiment::{Experiment, LoadedTask, TaskConfig};
use crate::inner::{FastWeights, InnerLoop, StepMode};
use crate::learner::Learner;
use crate::net::functional::tail;
use crate::rng::{stream, Rng};
use crate::tasks::sampling::{stream_items, StreamItems};
use crate::tasks::{ImageStore, Order, SineTask, StreamConfig};
use crate::{loss, Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EvalOptions {
    /// Independent runs per setting.
    pub runs: usize,
    pub seed: u64,
    /// Omniglot: numbers of classes learned in sequence.
    pub classes: Vec<usize>,
    /// Gradient learners: candidate multipliers of the step size, chosen on a validation split.
    pub step_scales: Vec<f64>,
    /// Local-rule learners: candidate upper bounds of the plasticity rates (each at most the learner's own
    /// `maxRate`), chosen on the validation split together with the learner's own bound; none by default.
    pub rate_bounds: Vec<f64>,
    /// Runs per candidate on the validation split.
    pub validation_runs: usize,
    /// Training drawings per class held out for validation (taken from the training drawings only).
    pub validation_held_out: usize,
    /// Runs evaluated together as one batch of episodes (0: as many as fit in about 256 MB of input).
    pub max_batch: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            runs: 50,
            seed: 0,
            classes: vec![10, 50, 75, 100, 150, 200],
            step_scales: vec![0.1, 0.3, 1.0, 3.0, 10.0],
            rate_bounds: Vec::new(),
            validation_runs: 5,
            validation_held_out: 5,
            max_batch: 0,
        }
    }
}

/// Options only the classification protocols read.
const CLASSIFICATION_ONLY: [&str; 5] = ["classes", "stepScales", "rateBounds", "validationRuns", "validationHeldOut"];

impl EvalOptions {
    /// Reads the options given for an experiment's task, naming an unknown option or one that does not
    /// apply to the task (silently ignored, it would give a result that looks right).
    pub fn for_task(given: serde_json::Value, task: &TaskConfig) -> Result<Self> {
        let opts: EvalOptions = crate::config::from_value(given.clone())?;
        let kind = task_kind(task);
        if kind == "sine" {
            not_given(
                &given,
                &CLASSIFICATION_ONLY,
                &format!("applies to classification tasks; this experiment's task is {kind}"),
            )?;
        }
        // What one run returns: per order, the final error, the curve and the per-function errors (sine), or
        // per class count, held-out and training accuracy.
        let per_run = match task {
            TaskConfig::Sine { sine, .. } => 2.0 * (1.0 + 2.0 * sine.functions as f64),
            _ => 2.0 * opts.classes.len() as f64,
        };
        crate::budget::check_eval_runs(opts.runs, per_run)?;
        if let Some(b) = opts.rate_bounds.iter().find(|b| !(b.is_finite() && **b > 0.0)) {
            return Err(Error::config("rateBounds", format!("every bound must be finite and > 0, got {b}")));
        }
        Ok(opts)
    }
}

/// The task's `type` ("sine", "omniglot", "imageFolder", "custom").
pub(crate) fn task_kind(task: &TaskConfig) -> String {
    serde_json::to_value(task).ok().and_then(|v| v["type"].as_str().map(str::to_string)).unwrap_or_default()
}

/// An error naming the first of `keys` that `given` holds.
pub(crate) fn not_given(given: &serde_json::Value, keys: &[&str], why: &str) -> Result<()> {
    match keys.iter().find(|k| given.get(**k).is_some()) {
        Some(k) => Err(Error::config(*k, why)),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SineOrderRaw {
    /// [run]: MSE over all the functions after the whole stream; null where the learner diverged.
    #[schemars(with = "Vec<Option<f64>>")]
    pub final_mse: Vec<f64>,
    /// [run][k]: MSE over the functions seen after k + 1 functions' worth of the stream.
    #[schemars(with = "Vec<Vec<Option<f64>>>")]
    pub curve: Vec<Vec<f64>>,
    /// [run][f]: MSE on function f after the whole stream.
    #[schemars(with = "Vec<Vec<Option<f64>>>")]
    pub per_function: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OmniglotPointRaw {
    pub classes: usize,
    pub held_out: Vec<f64>,
    pub train: Vec<f64>,
    /// The step size used (gradient learners), chosen on the validation split.
    pub step_size: Option<f64>,
    /// The rate bound used (local rules given `rateBounds`), chosen on the validation split; None when
    /// the rates were unbounded.
    pub rate_bound: Option<f64>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "protocol", rename_all = "camelCase")]
pub enum EvalRaw {
    #[serde(rename_all = "camelCase")]
    Sine { runs: usize, functions: usize, continual: SineOrderRaw, iid: SineOrderRaw },
    #[serde(rename_all = "camelCase")]
    Omniglot { runs: usize, points: Vec<OmniglotPointRaw> },
}

fn to_vec2(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    let t = t.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?;
    let rows = t.size()[0];
    (0..rows).map(|r| Ok(Vec::<f64>::try_from(&t.f_get(r)?)?)).collect()
}

/// A group's episodes of the fast weights, in storage of their own: views of one tensor share its version
/// counter, and a gradient rule's in-place step in one group would invalidate the graph of another's.
fn group_weights(fast: &FastWeights, first: i64, count: i64) -> Result<FastWeights> {
    let own =
        |v: &[Tensor]| v.iter().map(|t| Ok(t.f_narrow(0, first, count)?.f_detach_copy()?)).collect::<Result<Vec<_>>>();
    Ok(FastWeights { w: own(&fast.w)?, b: own(&fast.b)? })
}

fn batch_size(opts: &EvalOptions, bytes_per_run: i64) -> usize {
    if opts.max_batch > 0 {
        return opts.max_batch;
    }
    ((256 << 20) / bytes_per_run.max(1)).clamp(1, 64) as usize
}

pub fn evaluate(exp: &mut Experiment, opts: &EvalOptions) -> Result<EvalRaw> {
    crate::budget::check_run_count(opts.runs)?;
    // Re-initialised plastic weights draw from the learner's generator: evaluation uses its own.
    let saved = std::mem::replace(&mut exp.learner.rng, stream(opts.seed, "eval-reinit"));
    let result = tch::no_grad(|| match &exp.task {
        LoadedTask::Custom => Err(Error::config(
            "task",
            "a custom task has no evaluation protocol: score your own episodes with runEpisodes",
        )),
        LoadedTask::Sine(task, _) => sine(&mut exp.learner, task, opts),
        LoadedTask::Images { test, .. } => images(&mut exp.learner, test, opts),
    });
    exp.learner.rng = saved;
    result
}

fn sine(learner: &mut Learner, task: &SineTask, opts: &EvalOptions) -> Result<EvalRaw> {
    let cfg = task.config();
    let mut rng = stream(opts.seed, "eval-sine");
    let per_run = (cfg.steps() * cfg.batch_size * (cfg.slots + 2) * 8) as i64;
    let chunk = batch_size(opts, per_run);
    let continual = sine_order(learner, task, opts.runs, chunk, Order::Continual, &mut rng)?;
    let iid = sine_order(learner, task, opts.runs, chunk, Order::Iid, &mut rng)?;
    Ok(EvalRaw::Sine { runs: opts.runs, functions: cfg.functions, continual, iid })
}

fn sine_order(
    learner: &mut Learner,
    task: &SineTask,
    runs: usize,
    chunk: usize,
    order: Order,
    rng: &mut Rng,
) -> Result<SineOrderRaw> {
    let cfg = task.config();
    let (f, bpf) = (cfg.functions, cfg.batches_per_function);
    let mut out = SineOrderRaw { final_mse: vec![], curve: vec![], per_function: vec![] };
    let mut done = 0;
    while done < runs {
        let n = chunk.min(runs - done);
        let data = (0..n).map(|_| task.eval_run(rng, order)).collect::<Result<Vec<_>>>()?;
        let stack = |g: &dyn Fn(&crate::tasks::SineEvalRun) -> &Tensor| -> Result<Tensor> {
            Ok(Tensor::f_stack(&data.iter().map(g).collect::<Vec<_>>(), 0)?)
        };
        let (sx, sy) = (stack(&|r| &r.support_x)?, stack(&|r| &r.support_y)?);
        let (qx, qy) = (stack(&|r| &r.query_x)?, stack(&|r| &r.query_y)?); // [E, F, Q, in], [E, F, Q, 1]
        let batch = learner.prepare(&sx, &sy, &qx.f_flatten(1, 2)?, &qy.f_flatten(1, 2)?, vec![vec![]; n])?;
        let q = qx.size()[2];
        // The front is frozen: the query set's features are the same at every checkpoint of the curve.
        let query_features = learner.features_with(&batch.query_x, false)?;
        let features = learner.features_with(&batch.support_x, false)?;
        let fast = learner.start(n as i64, &batch.classes, false)?;
        let inner = learner.inner_loop();
        // Each group of runs goes through its lifetimes on a thread of its own (kernels::episode_groups),
        // scoring the query set per function after every function and at the end: [count, f] each time.
        let groups = crate::kernels::episode_groups(n as i64, learner.device, None);
        let scored = crate::kernels::in_episode_groups(&groups, |first, count| -> Result<Vec<Vec<Vec<f64>>>> {
            let part = |t: &Tensor| -> Result<Tensor> { Ok(t.f_narrow(0, first, count)?) };
            let mut fast = group_weights(&fast, first, count)?;
            let (x, y, query, query_y) =
                (part(&features)?, part(&batch.support_y)?, part(&query_features)?, part(&batch.query_y)?);
            let per_function = |fast: &FastWeights| -> Result<Vec<Vec<f64>>> {
                let err = tail(&query, &fast.w, &fast.b)?.output().f_sub(&query_y)?.f_square()?;
                to_vec2(&err.f_reshape([count, f as i64, q])?.f_mean_dim([2i64].as_slice(), false, None::<Kind>)?)
            };
            let mut scores = Vec::with_capacity(f + 1);
            for t in 0..cfg.steps() {
                fast = inner.step(fast, &x.f_select(1, t as i64)?, &y.f_select(1, t as i64)?, StepMode::Constant, t)?;
                if (t + 1) % bpf == 0 {
                    scores.push(per_function(&fast)?);
                }
            }
            scores.push(per_function(&fast)?);
            Ok(scores)
        })?;
        // Every run's rows, in run order, at each scoring.
        let at = |k: usize| -> Vec<Vec<f64>> { scored.iter().flat_map(|g| g[k].iter().cloned()).collect() };
        let mut curves = vec![Vec::with_capacity(f); n];
        for (k, t) in (0..cfg.steps()).filter(|t| (t + 1) % bpf == 0).enumerate() {
            let mse = at(k);
            for (r, run) in data.iter().enumerate() {
                // Functions seen so far in this run's stream (in i.i.d. order, usually all of them).
                let mut seen = vec![false; f];
                for &s in &run.step_function[..=t] {
                    seen[s] = true;
                }
                let vals: Vec<f64> = (0..f).filter(|&i| seen[i]).map(|i| mse[r][i]).collect();
                curves[r].push(vals.iter().sum::<f64>() / vals.len() as f64);
            }
        }
        let last = at(scored[0].len() - 1);
        out.final_mse.extend(last.iter().take(n).map(|row| row.iter().sum::<f64>() / f as f64));
        out.per_function.extend(last);
        out.curve.extend(curves);
        done += n;
    }
    Ok(out)
}

/// The frozen front's features of the images the streams show, computed on first use: an image goes
/// through the convolutions once, however many streams and runs show it, and unused images never do.
struct FeatureBank<'a> {
    store: &'a ImageStore,
    /// Row of each image (store order) in `rows`, or −1 while not computed.
    row: Vec<i64>,
    rows: Option<Tensor>,
}

impl<'a> FeatureBank<'a> {
    fn new(store: &'a ImageStore) -> Self {
        Self { store, row: vec![-1; store.num_images()], rows: None }
    }

    fn global(&self, (c, i): (usize, usize)) -> usize {
        self.store.classes()[c].start + i
    }

    /// Features [n, F] of the given images, in order.
    fn features(&mut self, learner: &Learner, items: &[((usize, usize), i64)]) -> Result<Tensor> {
        let mut missing: Vec<(usize, usize)> = Vec::new();
        for &(item, _) in items {
            let g = self.global(item);
            if self.row[g] < 0 {
                self.row[g] = -2; // queued
                missing.push(item);
            }
        }
        for chunk in missing.chunks(512) {
            let images = self.store.gather(chunk)?.f_to_device(learner.device)?.f_to_kind(learner.kind)?;
            let f = learner.features_with(&images, false)?;
            let start = self.rows.as_ref().map_or(0, |r| r.size()[0]);
            for (k, &item) in chunk.iter().enumerate() {
                let g = self.global(item);
                self.row[g] = start + k as i64;
            }
            self.rows = Some(match self.rows.take() {
                Some(r) => Tensor::f_cat(&[r, f], 0)?,
                None => f,
            });
        }
        let idx: Vec<i64> = items.iter().map(|&(item, _)| self.row[self.global(item)]).collect();
        let rows = self.rows.as_ref().ok_or_else(|| Error::Data("a stream with no images".into()))?;
        Ok(rows.f_index_select(0, &Tensor::f_from_slice(&idx)?.f_to_device(learner.device)?)?)
    }
}

/// Features [E, n, F] and labels [E, n] of one part (train or test) of each stream.
fn gather_features(
    learner: &Learner,
    bank: &mut FeatureBank,
    streams: &[StreamItems],
    train: bool,
) -> Result<(Tensor, Tensor)> {
    let mut feats = Vec::with_capacity(streams.len());
    let mut labels = Vec::with_capacity(streams.len());
    for s in streams {
        let items = if train { &s.train } else { &s.test };
        feats.push(bank.features(learner, items)?);
        labels.push(Tensor::f_from_slice(&items.iter().map(|&(_, l)| l).collect::<Vec<_>>())?);
    }
    Ok((Tensor::f_stack(&feats, 0)?, Tensor::f_stack(&labels, 0)?.f_to_device(learner.device)?))
}

/// Accuracy on the held-out and training images after learning each stream, one image per inner step:
/// ([E], [E]).
fn run_streams(
    learner: &mut Learner,
    bank: &mut FeatureBank,
    streams: &[StreamItems],
    scale: f64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let e = streams.len() as i64;
    let (train_f, train_y) = gather_features(learner, bank, streams, true)?;
    let (test_f, test_y) = gather_features(learner, bank, streams, false)?;
    let classes: Vec<Vec<i64>> = streams.iter().map(|s| (0..s.class_ids.len() as i64).collect()).collect();
    let fast = learner.start(e, &classes, false)?;
    let inner = InnerLoop { step_scale: scale, ..learner.inner_loop() };
    // Each group of streams learns on a thread of its own (kernels::episode_groups).
    let groups = crate::kernels::episode_groups(e, learner.device, None);
    let scored = crate::kernels::in_episode_groups(&groups, |first, count| -> Result<(Vec<f64>, Vec<f64>)> {
        let part = |t: &Tensor| -> Result<Tensor> { Ok(t.f_narrow(0, first, count)?) };
        let (train_f, train_y, test_f, test_y) = (part(&train_f)?, part(&train_y)?, part(&test_f)?, part(&test_y)?);
        let fast = inner.run(
            group_weights(&fast, first, count)?,
            &train_f.f_unsqueeze(2)?,
            &train_y.f_unsqueeze(2)?,
            |_| StepMode::Constant,
        )?;
        let acc = |f: &Tensor, y: &Tensor| -> Result<Vec<f64>> {
            let y_hat = tail(f, &fast.w, &fast.b)?.output().shallow_clone();
            Ok(Vec::<f64>::try_from(&loss::accuracy(&y_hat, y)?.f_to_device(Device::Cpu)?)?)
        };
        Ok((acc(&test_f, &test_y)?, acc(&train_f, &train_y)?))
    })?;
    let (held_out, train): (Vec<Vec<f64>>, Vec<Vec<f64>>) = scored.into_iter().unzip();
    Ok((held_out.concat(), train.concat()))
}

/// The candidate (of `n`) with the best mean held-out accuracy on the validation streams, the first on ties;
/// `set(learner, i)` puts candidate i in place and returns the step scale to run it with.
fn best_on_validation(
    learner: &mut Learner,
    bank: &mut FeatureBank,
    validation: &[StreamItems],
    chunk: usize,
    n: usize,
    mut set: impl FnMut(&mut Learner, usize) -> Result<f64>,
) -> Result<usize> {
    let (mut best, mut chosen) = (f64::NEG_INFINITY, 0);
    for i in 0..n {
        let scale = set(learner, i)?;
        let mut accs = Vec::new();
        for group in validation.chunks(chunk) {
            accs.extend(run_streams(learner, bank, group, scale)?.0);
        }
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        if mean > best {
            best = mean;
            chosen = i;
        }
    }
    Ok(chosen)
}

fn streams(store: &ImageStore, rng: &mut Rng, n: usize, cfg: &StreamConfig) -> Result<Vec<StreamItems>> {
    (0..n).map(|_| stream_items(store, rng, cfg)).collect()
}

fn images(learner: &mut Learner, store: &ImageStore, opts: &EvalOptions) -> Result<EvalRaw> {
    // A rate bound tried on validation never outlives the evaluation, even one that fails or is cancelled.
    let own_bound = learner.local_rule().and_then(|r| r.max_rate);
    let out = image_points(learner, store, opts, own_bound);
    if learner.local_rule().is_some() {
        learner.set_rate_bound(own_bound)?;
    }
    out
}

fn image_points(
    learner: &mut Learner,
    store: &ImageStore,
    opts: &EvalOptions,
    own_bound: Option<f64>,
) -> Result<EvalRaw> {
    let outputs = learner.spec.outputs() as usize;
    let base = StreamConfig::default();
    let mut bank = FeatureBank::new(store);
    let image_bytes: i64 = store.image_shape().iter().product::<i64>() * 8;
    let mut points = Vec::new();
    for &c in &opts.classes {
        if c == 0 || c > store.num_classes() || c > outputs {
            return Err(Error::config(
                "classes",
                format!(
                    "{c} classes requested, but the evaluation set has {} and the network {outputs} outputs",
                    store.num_classes()
                ),
            ));
        }
        let chunk = batch_size(opts, image_bytes * (c * (base.train_per_class + base.test_per_class)) as i64);
        // Chosen on validation images taken from the training drawings, never on the test drawings.
        let validation = || -> Result<Vec<StreamItems>> {
            let mut vrng = stream(opts.seed ^ c as u64, "eval-validation");
            let vcfg = StreamConfig { classes: c, validation: Some(opts.validation_held_out), ..base.clone() };
            streams(store, &mut vrng, opts.validation_runs.max(1), &vcfg)
        };
        let mut scale = 1.0;
        let mut step_size = None;
        let mut rate_bound = None;
        if learner.is_gradient_rule() {
            if !opts.step_scales.is_empty() {
                let n = opts.step_scales.len();
                let set = |_: &mut Learner, i: usize| Ok(opts.step_scales[i]);
                scale = opts.step_scales[best_on_validation(learner, &mut bank, &validation()?, chunk, n, set)?];
            }
            step_size = Some(match &learner.cfg.rule {
                crate::rules::RuleConfig::Sgd { lr, .. } => lr * scale,
                _ => scale,
            });
        } else if !opts.rate_bounds.is_empty() {
            // The learner's own bound is the first candidate, so it stays on a tie.
            let candidates: Vec<Option<f64>> = std::iter::once(own_bound)
                .chain(opts.rate_bounds.iter().map(|&b| Some(own_bound.map_or(b, |m| m.min(b)))))
                .collect();
            let set = |l: &mut Learner, i: usize| l.set_rate_bound(candidates[i]).map(|_| 1.0);
            rate_bound =
                candidates[best_on_validation(learner, &mut bank, &validation()?, chunk, candidates.len(), set)?];
            learner.set_rate_bound(rate_bound)?;
        }
        let mut rng = stream(opts.seed ^ c as u64, "eval-images");
        let (mut held_out, mut train) = (Vec::new(), Vec::new());
        let mut done = 0;
        while done < opts.runs {
            let n = chunk.min(opts.runs - done);
            let group = streams(store, &mut rng, n, &StreamConfig { classes: c, ..base.clone() })?;
            let (h, t) = run_streams(learner, &mut bank, &group, scale)?;
            held_out.extend(h);
            train.extend(t);
            done += n;
        }
        points.push(OmniglotPointRaw { classes: c, held_out, train, step_size, rate_bound });
    }
    Ok(EvalRaw::Omniglot { runs: opts.runs, points })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LearnerConfig;
    use crate::tasks::images::ClassEntry;
    use crate::tasks::Channels;

    /// `classes` classes of `per` random 8×8 gray drawings each.
    fn random_store(classes: usize, per: usize, seed: u64) -> ImageStore {
        let mut rng = stream(seed, "pixels");
        let pixels: Vec<u8> = (0..classes * per * 64).map(|_| rand::Rng::random::<u8>(&mut rng)).collect();
        let entries = (0..classes).map(|c| ClassEntry { name: format!("c{c}"), start: c * per, count: per }).collect();
        ImageStore::new(entries, pixels, Channels::Gray, 8, false).unwrap()
    }

    /// The feature-bank path gives exactly what passing each stream's images through the front does.
    #[test]
    fn feature_bank_streams_equal_direct_streams() {
        let (classes, per) = (6usize, 4usize);
        let store = random_store(classes, per, 1);
        let cfg = LearnerConfig::from_json(
            r#"{"inputShape":[1,8,8],"layers":[{"type":"conv","channels":3,"kernel":3,"stride":2},{"type":"linear","units":7},{"type":"linear","units":6}],
                "rln":1,"task":"classification","rule":{"type":"sgd","lr":0.5},"dtype":"float64","device":"cpu","seed":2}"#,
        )
        .unwrap();
        let mut learner = Learner::new(cfg).unwrap();
        let scfg = StreamConfig { classes: 4, train_per_class: 3, test_per_class: 1, ..StreamConfig::default() };
        let items = streams(&store, &mut stream(5, "s"), 3, &scfg).unwrap();
        let mut bank = FeatureBank::new(&store);
        // The bank gives each image's front features, in the order asked, whatever it computed before.
        let some: Vec<((usize, usize), i64)> = [(5, 1), (0, 3), (5, 1), (2, 0)].iter().map(|&c| (c, 0)).collect();
        let all: Vec<((usize, usize), i64)> = (0..classes).flat_map(|c| (0..per).map(move |i| ((c, i), 0))).collect();
        for part in [&some, &all] {
            let direct = learner
                .features(
                    &store.gather(&part.iter().map(|p| p.0).collect::<Vec<_>>()).unwrap().to_kind(tch::Kind::Double),
                )
                .unwrap();
            let banked = bank.features(&learner, part).unwrap();
            assert_eq!(banked.size(), direct.size());
            assert!((&banked - &direct).abs().max().double_value(&[]) < 1e-12);
        }
        let (held_out, train) = tch::no_grad(|| run_streams(&mut learner, &mut bank, &items, 0.7)).unwrap();
        for (k, s) in items.iter().enumerate() {
            let imgs = |part: &[((usize, usize), i64)]| {
                store.gather(&part.iter().map(|p| p.0).collect::<Vec<_>>()).unwrap().to_kind(tch::Kind::Double)
            };
            let labels =
                |part: &[((usize, usize), i64)]| Tensor::from_slice(&part.iter().map(|p| p.1).collect::<Vec<_>>());
            let (tx, ty, qx, qy) = (imgs(&s.train), labels(&s.train), imgs(&s.test), labels(&s.test));
            let fast = learner.start(1, &[(0..4).collect()], false).unwrap();
            let inner = InnerLoop { step_scale: 0.7, ..learner.inner_loop() };
            let feats = learner.features(&tx.unsqueeze(0).unsqueeze(2)).unwrap();
            let fast = inner.run(fast, &feats, &ty.unsqueeze(0).unsqueeze(2), |_| StepMode::Constant).unwrap();
            let acc = |x: &Tensor, y: &Tensor| {
                loss::accuracy(&learner.predict(&fast, &x.unsqueeze(0)).unwrap(), &y.unsqueeze(0))
                    .unwrap()
                    .double_value(&[0])
            };
            assert_eq!(acc(&qx, &qy), held_out[k], "stream {k} held-out");
            assert_eq!(acc(&tx, &ty), train[k], "stream {k} train");
        }
    }

    /// A rate bound chosen on validation: the evaluation equals that of the same learner with the chosen bound
    /// as its own, the candidate is the learner's own bound or a given one, and the own bound is restored.
    #[test]
    fn rate_bound_chosen_on_validation_equals_evaluating_with_it() {
        let store = random_store(6, 20, 3);
        let learner = |max_rate: &str| {
            Learner::new(
                LearnerConfig::from_json(&format!(
                    r#"{{"inputShape":[1,8,8],"layers":[{{"type":"conv","channels":3,"kernel":3,"stride":2}},{{"type":"linear","units":7}},{{"type":"linear","units":6}}],
                        "rln":1,"task":"classification","rule":{{"type":"oja"}},"plasticity":{{"init":2.5{max_rate}}},"dtype":"float64","device":"cpu","seed":2}}"#
                ))
                .unwrap(),
            )
            .unwrap()
        };
        let opts = |bounds: Vec<f64>| EvalOptions {
            runs: 3,
            classes: vec![4, 6],
            rate_bounds: bounds,
            validation_runs: 2,
            ..Default::default()
        };
        let points = |raw: EvalRaw| match raw {
            EvalRaw::Omniglot { points, .. } => points,
            _ => unreachable!(),
        };
        let mut swept = learner(r#","maxRate":3"#);
        let chosen = points(images(&mut swept, &store, &opts(vec![0.05, 1e-3])).unwrap());
        assert_eq!(swept.local_rule().unwrap().max_rate, Some(3.0), "the learner's own bound is restored");
        // Also when the evaluation fails part-way: here at its second class count, after a bound was chosen at the first.
        assert!(images(&mut swept, &store, &EvalOptions { classes: vec![6, 7], ..opts(vec![1e-3]) }).is_err());
        assert_eq!(swept.local_rule().unwrap().max_rate, Some(3.0), "the own bound is restored after an error");
        let mut distinct = std::collections::BTreeSet::new();
        for p in &chosen {
            let bound = p.rate_bound.expect("a bounded learner reports its bound");
            assert!([3.0, 0.05, 1e-3].contains(&bound), "{bound} is not a candidate");
            distinct.insert(bound.to_bits());
            let mut fixed = learner(&format!(r#","maxRate":{bound}"#));
            let direct =
                points(images(&mut fixed, &store, &EvalOptions { classes: vec![p.classes], ..opts(vec![]) }).unwrap());
            assert_eq!((&direct[0].held_out, &direct[0].train), (&p.held_out, &p.train), "{} classes", p.classes);
        }
        assert_eq!(
            distinct.len(),
            2,
            "this fixture chooses the own bound at one class count and a given one at the other"
        );
        // The bound changes the rates the rule uses (rates start at 2.5, above every candidate but the own).
        let mut l = learner("");
        assert!(l.local_rule().unwrap().rate(&l.params, 0).unwrap().max().double_value(&[]) > 2.0);
        assert_eq!(l.set_rate_bound(Some(0.05)).unwrap(), None);
        assert!(l.local_rule().unwrap().rate(&l.params, 0).unwrap().max().double_value(&[]) <= 0.05);
        // Without candidates nothing is swept, and an unbounded learner reports no bound.
        assert!(points(images(&mut learner(""), &store, &opts(vec![])).unwrap())
            .iter()
            .all(|p| p.rate_bound.is_none()));
    }
}
