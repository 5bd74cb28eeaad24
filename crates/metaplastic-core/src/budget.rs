//! Pre-flight size checks. A size that cannot be allocated would abort the process (Rust's allocator
//! aborts rather than unwinds) or hang it swapping, so every size a configuration sets is weighed before
//! anything is allocated: each tensor against what the engine indexes, and the whole against the machine's
//! memory. Each failure is a configuration error naming the field and the limit.
use crate::config::{Dtype, LearnerConfig};
use crate::experiment::{ExperimentConfig, TaskConfig};
use crate::net::spec::NetSpec;
use crate::tasks::omniglot::{OmniglotSplit, DRAWINGS};
use crate::tasks::EpisodeConfig;
use crate::{Error, Result};

/// The most values one tensor may hold: the fused loops, the episode layouts and the JS boundary count
/// values in 32 bits.
pub const MAX_TENSOR_VALUES: f64 = 2_147_483_648.0;

/// The most layers of a feedback pathway (the paper's has one).
pub const MAX_FEEDBACK_LAYERS: usize = 64;

/// The most evaluation runs in one call.
pub const MAX_EVAL_RUNS: usize = 10_000;

/// The most numbers one result may carry back to JavaScript (napi's limit is 1,000,000 JSON values; the
/// rest is left for the result's structure).
pub const MAX_RESULT_VALUES: f64 = 900_000.0;

/// Bytes of physical memory (None when the system does not say).
pub fn physical_memory() -> Option<f64> {
    // SAFETY: sysconf has no preconditions; a negative answer means unknown.
    let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    (pages > 0 && size > 0).then_some(pages as f64 * size as f64)
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / (1u64 << 30) as f64)
}

/// `what` holds `values` values: at most MAX_TENSOR_VALUES.
fn tensor(field: &str, what: &str, values: f64) -> Result<()> {
    if values > MAX_TENSOR_VALUES {
        return Err(Error::config(
            field,
            format!("{what} would hold {values:.3e} values; one tensor holds at most 2^31"),
        ));
    }
    Ok(())
}

fn element_bytes(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::Float32 => 4.0,
        Dtype::Float64 => 8.0,
    }
}

/// Weights, their gradients, Adam's two moments, and as much again for per-synapse rates and feedback.
const STATE_COPIES: f64 = 8.0;

/// The learner's sizes in values (f64: the products of absurd sizes overflow integers), each weight checked
/// to fit in a tensor.
struct LearnerValues {
    /// All weights and feedback pathways: what the meta-parameters and their optimiser state scale with.
    parameters: f64,
    /// The plastic layers' weights: what each episode's fast weights hold.
    plastic: f64,
}

fn learner_values(cfg: &LearnerConfig) -> Result<LearnerValues> {
    let spec = NetSpec::new(&cfg.input_shape, &cfg.layers, cfg.rln)?;
    let weight = |l: usize| spec.layers[l].weight_shape().iter().map(|&d| d as f64).product::<f64>();
    let mut parameters = 0.0;
    for (i, layer) in spec.layers.iter().enumerate() {
        tensor(&format!("layers[{i}]"), &format!("layer {i}'s weight ({:?})", layer.weight_shape()), weight(i))?;
        parameters += weight(i);
    }
    // Each plastic layer's feedback pathway: outputs → units, then units → units per further layer.
    let outputs = spec.outputs() as f64;
    for l in spec.plastic() {
        let units = spec.layers[l].units() as f64;
        parameters += units * outputs + (cfg.feedback.layers.saturating_sub(1)) as f64 * units * units;
    }
    Ok(LearnerValues { parameters, plastic: spec.plastic().map(weight).sum() })
}

fn within_memory(field: &str, what: &str, bytes: f64) -> Result<()> {
    match physical_memory() {
        Some(limit) if bytes > limit => Err(Error::config(
            field,
            format!(
                "{what} would need about {} (estimated before allocating), more than this machine's {} of memory",
                gib(bytes),
                gib(limit)
            ),
        )),
        _ => Ok(()),
    }
}

/// What one episode of the task holds (values), and the field that sets its size; also checks the task's
/// other buffers (the sine function pool, the decoded images) against memory.
fn episode_values(task: &TaskConfig, input_values: f64) -> Result<(f64, &'static str)> {
    let f = |v: usize| v as f64;
    match task {
        TaskConfig::Sine { sine, .. } => {
            // The pool holds two f64 parameters per function.
            within_memory("task.sine.poolSize", "the sine function pool", f(sine.pool_size) * 16.0)?;
            let inputs = f(sine.slots) + 1.0;
            let support = f(sine.functions) * f(sine.batches_per_function) * f(sine.batch_size) * inputs;
            let query = f(sine.functions) * f(sine.query_per_function) * inputs;
            tensor("task.sine.queryPerFunction", "an episode's query set", query)?;
            Ok((support + query, "task.sine"))
        }
        TaskConfig::Omniglot { data, episode } => {
            // Both splits are held decoded, one byte per pixel.
            let images = f((OmniglotSplit::Background.expected_classes()
                + OmniglotSplit::Evaluation.expected_classes())
                * DRAWINGS);
            within_memory(
                "task.data.size",
                &format!("Omniglot's {images} images at {0}×{0} pixels", data.size),
                images * f(data.size).powi(2),
            )?;
            image_episode(episode, input_values)
        }
        TaskConfig::ImageFolder { episode, .. } => image_episode(episode, input_values),
        TaskConfig::Custom {} => Ok((0.0, "task")),
    }
}

fn image_episode(episode: &EpisodeConfig, input_values: f64) -> Result<(f64, &'static str)> {
    let f = |v: usize| v as f64;
    let images =
        f(episode.ways) * (f(episode.shots) + f(episode.query_shots.unwrap_or(episode.shots))) + f(episode.remember);
    let values = images * input_values;
    tensor("task.episode", "an episode's images", values)?;
    Ok((values, "task.episode"))
}

/// The whole experiment: the learner, one episode, and the meta-batch of episodes with their fast weights.
pub fn check_experiment(cfg: &ExperimentConfig) -> Result<()> {
    let elem = element_bytes(cfg.learner.dtype);
    let sizes = learner_values(&cfg.learner).map_err(|e| e.within("learner"))?;
    let learner = sizes.parameters * elem * STATE_COPIES;
    within_memory("learner.layers", "the learner's parameters and optimiser state", learner)?;
    let input_values: f64 = cfg.learner.input_shape.iter().map(|&d| d as f64).product();
    let (episode, field) = episode_values(&cfg.task, input_values)?;
    // Each episode of the meta-batch holds its data and its own fast weights (and their adjoints).
    let per_episode = (episode + 2.0 * sizes.plastic) * elem;
    within_memory(field, "one episode of this task with its fast weights, and the learner", learner + per_episode)?;
    let what = format!("{} episodes of this task with their fast weights, and the learner", cfg.meta_batch);
    within_memory("metaBatch", &what, learner + cfg.meta_batch as f64 * per_episode)
}

/// An evaluation's or analysis's run count: at least one, at most MAX_EVAL_RUNS.
pub fn check_run_count(runs: usize) -> Result<()> {
    match runs {
        0 => Err(Error::config("runs", "must be at least 1")),
        n if n > MAX_EVAL_RUNS => Err(Error::config("runs", format!("at most {MAX_EVAL_RUNS}, got {n}"))),
        _ => Ok(()),
    }
}

/// An evaluation's run count, and its per-run values within what one result can carry.
pub fn check_eval_runs(runs: usize, values_per_run: f64) -> Result<()> {
    check_run_count(runs)?;
    let values = runs as f64 * values_per_run;
    if values > MAX_RESULT_VALUES {
        let most = (MAX_RESULT_VALUES / values_per_run).floor();
        return Err(Error::config("runs", format!("{runs} runs would return {values:.0} values ({values_per_run} per run), more than one result carries ({MAX_RESULT_VALUES}); use at most {most} runs, or several evaluations with different seeds")));
    }
    Ok(())
}

/// The most libtorch threads: more than the cores only slows libtorch, and thousands exhaust the process.
pub fn max_threads() -> i32 {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (4 * cores).min(4096) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine_experiment(edit: impl FnOnce(&mut serde_json::Value)) -> Result<ExperimentConfig> {
        let mut v = serde_json::json!({
            "learner": { "inputShape": [11], "task": "regression", "layers": [{ "type": "linear", "units": 40 }, { "type": "linear", "units": 1 }], "rule": { "type": "hebb" } },
            "task": { "type": "sine" },
        });
        edit(&mut v);
        ExperimentConfig::from_value(v)
    }

    #[test]
    fn a_sane_configuration_passes() {
        assert!(sine_experiment(|_| {}).is_ok());
    }

    #[test]
    fn a_weight_beyond_2_31_values_is_named() {
        let e =
            sine_experiment(|v| v["learner"]["layers"][0]["units"] = 2_147_483_648u64.into()).unwrap_err().to_string();
        assert!(e.contains("learner.layers[0]") && e.contains("2^31"), "{e}");
    }

    #[test]
    fn a_learner_beyond_memory_is_named_with_the_estimate() {
        // 40 layers of 46,000 units: 8.5e10 weights, each matrix under 2^31 values, about 2.5 TiB with Adam's state.
        let e = sine_experiment(|v| {
            let mut units = vec![46_000; 40];
            units.push(1);
            v["learner"]["layers"] =
                units.iter().map(|u| serde_json::json!({ "type": "linear", "units": u })).collect::<Vec<_>>().into();
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("learner.layers") && e.contains("GiB") && e.contains("memory"), "{e}");
    }

    #[test]
    fn task_sizes_and_meta_batch_are_named() {
        let e = sine_experiment(|v| v["task"]["sine"] = serde_json::json!({ "queryPerFunction": 4294967296u64 }))
            .unwrap_err()
            .to_string();
        assert!(e.contains("task.sine.queryPerFunction"), "{e}");
        let e = sine_experiment(|v| v["task"]["sine"] = serde_json::json!({ "poolSize": 100000000000u64 }))
            .unwrap_err()
            .to_string();
        assert!(e.contains("task.sine.poolSize") && e.contains("GiB"), "{e}");
        let e = sine_experiment(|v| v["metaBatch"] = 10_000_000_000u64.into()).unwrap_err().to_string();
        assert!(e.contains("metaBatch") && e.contains("GiB"), "{e}");
        // Omniglot at 1,024 pixels a side: 32,460 decoded images of 1 MiB, more than the test machines hold.
        let big_images = sine_experiment(|v| {
            v["learner"]["inputShape"] = serde_json::json!([1, 1024, 1024]);
            v["learner"]["task"] = "classification".into();
            v["learner"]["layers"] = serde_json::json!([{ "type": "conv", "channels": 1, "kernel": 64, "stride": 64 }, { "type": "linear", "units": 5 }]);
            v["learner"]["rln"] = 1.into();
            v["task"] = serde_json::json!({ "type": "omniglot", "data": { "size": 1024 } });
        });
        match big_images {
            Err(e) => {
                assert!(e.to_string().contains("task.data.size") && e.to_string().contains("32460 images"), "{e}")
            }
            Ok(_) => assert!(
                physical_memory().is_some_and(|m| m > 31.7 * (1u64 << 30) as f64),
                "refused only where memory is short"
            ),
        }
    }

    #[test]
    fn eval_runs_are_bounded_by_count_and_by_what_a_result_carries() {
        assert!(check_eval_runs(50, 42.0).is_ok());
        assert!(check_eval_runs(MAX_EVAL_RUNS + 1, 1.0).unwrap_err().to_string().contains("at most 10000"));
        let e = check_eval_runs(10_000, 210.0).unwrap_err().to_string();
        assert!(e.contains("at most 4285 runs"), "{e}");
    }
}
