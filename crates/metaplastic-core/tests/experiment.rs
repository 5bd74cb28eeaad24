//! Meta-training runs, checkpoints (exact resume, refusal of bad ones) and the sine evaluation protocol.
use metaplastic_core::checkpoint;
use metaplastic_core::eval::{evaluate, EvalOptions, EvalRaw};
use metaplastic_core::experiment::{Experiment, ExperimentConfig};
use std::sync::atomic::AtomicBool;

fn tiny_sine(rule: &str) -> ExperimentConfig {
    ExperimentConfig::from_json(&format!(
        r#"{{"name":"tiny","seed":3,"metaBatch":2,
            "learner":{{"inputShape":[4],"layers":[{{"type":"linear","units":8}},{{"type":"linear","units":8}},{{"type":"linear","units":1}}],
              "task":"regression","rule":{rule},"plasticity":{{"init":0.001}},"meta":{{"lr":{{"forward":1e-3,"plasticity":1e-4}}}},"seed":5}},
            "task":{{"type":"sine","sine":{{"poolSize":20,"functions":3,"slots":3,"batchesPerFunction":2,"batchSize":4,"queryPerFunction":5}}}}}}"#
    ))
    .unwrap()
}

fn params(exp: &Experiment) -> Vec<(String, Vec<f32>)> {
    exp.learner.params.iter().map(|p| (p.name.clone(), exp.learner.params.read(&p.name).unwrap().data)).collect()
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("metaplastic-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn resume_is_identical_to_an_uninterrupted_run() {
    for rule in [
        r#"{"type":"oja"}"#,
        r#"{"type":"sgd","lr":0.01,"stepSizes":"perLayer"}"#,
        r#"{"type":"oja","decay":{"init":0.3,"granularity":"neuron"}}"#,
    ] {
        let stop = AtomicBool::new(false);
        let mut straight = Experiment::new(tiny_sine(rule)).unwrap();
        let all = straight.train(6, &stop).unwrap();
        let dir = tmpdir("resume");
        let mut first = Experiment::new(tiny_sine(rule)).unwrap();
        first.train(3, &stop).unwrap();
        checkpoint::save(&first, &dir).unwrap();
        drop(first);
        let mut resumed = checkpoint::load(&dir).unwrap();
        assert_eq!(resumed.step, 3);
        let rest = resumed.train(3, &stop).unwrap();
        assert_eq!(params(&straight), params(&resumed), "{rule}");
        let losses =
            |r: &[metaplastic_core::experiment::StepRecord]| r.iter().map(|s| s.report.meta_loss).collect::<Vec<_>>();
        assert_eq!(losses(&all[3..]), losses(&rest));
        // Saving again replaces the tensor file: only the newest remains.
        checkpoint::save(&resumed, &dir).unwrap();
        let files: Vec<_> =
            std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
        assert_eq!(files.iter().filter(|f| f.ends_with(".safetensors")).count(), 1, "{files:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Oja's decay coefficient: φ of each plastic layer is listed among the parameters (plasticity group),
/// meta-trained where it is learned (it moves from logit(0.5) = 0) and fixed where not, and saved and
/// loaded with the checkpoint.
#[test]
fn learned_decay_is_trained_saved_and_loaded() {
    use metaplastic_core::params::Group;
    for learned in [true, false] {
        let rule = format!(r#"{{"type":"oja","decay":{{"init":0.5,"granularity":"neuron","learned":{learned}}}}}"#);
        let mut exp = Experiment::new(tiny_sine(&rule)).unwrap();
        exp.train(3, &AtomicBool::new(false)).unwrap();
        let infos = exp.learner.params.infos();
        let decay: Vec<_> = infos.iter().filter(|p| p.name.starts_with("decay.")).collect();
        assert_eq!(decay.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["decay.0", "decay.1", "decay.2"]);
        for p in &decay {
            assert_eq!((p.group, p.trainable, p.shape[1]), (Group::Plasticity, learned, 1), "{}", p.name);
            let phi = exp.learner.params.read(&p.name).unwrap().data;
            assert_eq!(phi.iter().any(|&v| v != 0.0), learned, "{}: {phi:?}", p.name);
        }
        let dir = tmpdir(&format!("decay-{learned}"));
        checkpoint::save(&exp, &dir).unwrap();
        let loaded = checkpoint::load(&dir).unwrap();
        assert_eq!(params(&loaded), params(&exp));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn bad_checkpoints_are_refused_with_a_clear_message() {
    let dir = tmpdir("bad");
    let exp = Experiment::new(tiny_sine(r#"{"type":"oja"}"#)).unwrap();
    let missing = checkpoint::load(&dir).err().unwrap();
    assert_eq!(missing.code(), "E_CHECKPOINT");
    assert!(missing.to_string().contains("checkpoint.json is missing"), "{missing}");
    checkpoint::save(&exp, &dir).unwrap();
    let manifest = dir.join("checkpoint.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    // Unknown format version.
    std::fs::write(&manifest, text.replace("\"formatVersion\": 1", "\"formatVersion\": 99")).unwrap();
    let err = checkpoint::load(&dir).err().unwrap();
    assert!(err.to_string().contains("format version 99 is not supported"), "{err}");
    // Corrupt tensors.
    std::fs::write(&manifest, &text).unwrap();
    let tensors = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&tensors).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&tensors, bytes).unwrap();
    let err = checkpoint::load(&dir).err().unwrap();
    assert!(err.to_string().contains("is corrupt"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A tiny Oja learner's checkpoint in a fresh folder: the folder, its manifest's path and the manifest's text.
fn saved_checkpoint(name: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let dir = tmpdir(name);
    let exp = Experiment::new(tiny_sine(r#"{"type":"oja"}"#)).unwrap();
    checkpoint::save(&exp, &dir).unwrap();
    let manifest = dir.join("checkpoint.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    (dir, manifest, text)
}

#[test]
fn a_manifest_that_no_longer_fits_its_tensors_names_the_folder() {
    let (dir, manifest, text) = saved_checkpoint("mismatch");
    std::fs::write(&manifest, text.replacen("\"units\": 8", "\"units\": 9", 1)).unwrap();
    let err = checkpoint::load(&dir).err().unwrap();
    assert_eq!(err.code(), "E_CHECKPOINT");
    assert!(err.to_string().contains(&dir.display().to_string()) && err.to_string().contains("does not fit"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_manifest_may_name_only_a_file_inside_its_folder() {
    let (dir, manifest, text) = saved_checkpoint("escape");
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    // A file that exists outside the folder must not even be opened (the checksum would reject it only after reading).
    for name in ["../../../../etc/passwd", "/etc/passwd", "..", "sub/tensors.safetensors"] {
        value["tensorsFile"] = name.into();
        std::fs::write(&manifest, serde_json::to_string(&value).unwrap()).unwrap();
        let err = checkpoint::load(&dir).err().unwrap();
        assert_eq!(err.code(), "E_CHECKPOINT", "{name}: {err}");
        assert!(err.to_string().contains("not a file name inside the checkpoint folder"), "{name}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_that_cannot_be_written_is_an_io_error() {
    let dir = tmpdir("unwritable");
    let exp = Experiment::new(tiny_sine(r#"{"type":"oja"}"#)).unwrap();
    // The temporary tensor file's name is taken by a folder: the write fails the way a read-only folder does
    // (this also works when the tests run as root, for whom permissions do not apply).
    std::fs::create_dir_all(dir.join(format!(".tensors-00000000.safetensors.tmp-{}", std::process::id()))).unwrap();
    let err = checkpoint::save(&exp, &dir).err().unwrap();
    assert_eq!(err.code(), "E_IO", "{err}");
    assert!(err.to_string().contains("cannot write the checkpoint") && err.to_string().contains("writable"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn meta_training_reduces_the_sine_query_loss() {
    let mut cfg = tiny_sine(r#"{"type":"sgd","lr":0.01}"#);
    cfg.learner.meta.lr.forward = 1e-2;
    cfg.meta_batch = 8;
    let mut exp = Experiment::new(cfg).unwrap();
    let records = exp.train(300, &AtomicBool::new(false)).unwrap();
    let mean = |r: &[metaplastic_core::experiment::StepRecord]| {
        r.iter().map(|s| s.report.meta_loss).sum::<f64>() / r.len() as f64
    };
    let (early, late) = (mean(&records[..50]), mean(&records[250..]));
    assert!(late < 0.8 * early, "query loss did not fall: first 50 steps {early}, last 50 {late}");
}

#[test]
fn sine_evaluation_has_the_protocol_structure_and_is_deterministic() {
    let mut exp = Experiment::new(tiny_sine(r#"{"type":"oja"}"#)).unwrap();
    let opts = EvalOptions { runs: 4, seed: 9, max_batch: 3, ..EvalOptions::default() };
    let a = serde_json::to_string(&evaluate(&mut exp, &opts).unwrap()).unwrap();
    let b = serde_json::to_string(&evaluate(&mut exp, &opts).unwrap()).unwrap();
    assert_eq!(a, b, "evaluation must be a pure function of the learner, seed and options");
    match evaluate(&mut exp, &opts).unwrap() {
        EvalRaw::Sine { runs, functions, continual, iid } => {
            assert_eq!((runs, functions), (4, 3));
            for order in [&continual, &iid] {
                assert_eq!(order.final_mse.len(), 4);
                assert!(order.curve.iter().all(|c| c.len() == 3));
                assert!(order.per_function.iter().all(|c| c.len() == 3));
                for r in 0..4 {
                    // The last point of the curve covers all functions: it is the final MSE.
                    assert!((order.curve[r][2] - order.final_mse[r]).abs() < 1e-9);
                    let mean: f64 = order.per_function[r].iter().sum::<f64>() / 3.0;
                    assert!((mean - order.final_mse[r]).abs() < 1e-9);
                }
            }
            // In continual order the first point is the error on the first function alone.
            assert!(continual.curve.iter().zip(&continual.per_function).all(|(c, _)| c[0].is_finite()));
        }
        other => panic!("expected a sine result, got {other:?}"),
    }
    let other_seed = serde_json::to_string(&evaluate(&mut exp, &EvalOptions { seed: 10, ..opts }).unwrap()).unwrap();
    assert_ne!(a, other_seed);
}

/// Runs evaluated one at a time score what they score evaluated together, where the runs are shared out
/// over the threads in groups (kernels::episode_groups): 4 runs in groups of 2, 3 runs in 2 + 1.
#[test]
fn sine_evaluation_is_the_same_one_run_at_a_time_and_in_groups_over_threads() {
    tch::set_num_threads(2);
    for rule in [r#"{"type":"oja"}"#, r#"{"type":"sgd","lr":0.01}"#] {
        let mut exp = Experiment::new(tiny_sine(rule)).unwrap();
        for runs in [3, 4] {
            let scores = |max_batch: usize, exp: &mut Experiment| match evaluate(
                exp,
                &EvalOptions { runs, seed: 9, max_batch, ..EvalOptions::default() },
            )
            .unwrap()
            {
                EvalRaw::Sine { continual, iid, .. } => [continual, iid]
                    .into_iter()
                    .flat_map(|o| o.curve.into_iter().flatten().chain(o.per_function.into_iter().flatten()))
                    .collect::<Vec<f64>>(),
                other => panic!("expected a sine result, got {other:?}"),
            };
            let (alone, together) = (scores(1, &mut exp), scores(runs, &mut exp));
            assert_eq!(alone.len(), together.len());
            for (a, b) in alone.iter().zip(&together) {
                assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-3), "{rule}, {runs} runs: {a} alone, {b} together");
            }
        }
    }
}

#[test]
fn a_cancel_inside_a_meta_step_changes_nothing_and_resume_repeats_the_step() {
    use std::sync::Arc;
    let stop = AtomicBool::new(false);
    let mut straight = Experiment::new(tiny_sine(r#"{"type":"oja"}"#)).unwrap();
    let all = straight.train(2, &stop).unwrap();
    let mut exp = Experiment::new(tiny_sine(r#"{"type":"oja"}"#)).unwrap();
    let before = params(&exp);
    // The learner's flag is checked before every inner step: the meta-step stops inside its inner loop.
    let cancel = Arc::new(AtomicBool::new(true));
    exp.learner.cancel = Some(cancel.clone());
    assert!(exp.train(2, &stop).unwrap().is_empty());
    assert_eq!((exp.step, exp.skipped), (0, 0));
    assert_eq!(params(&exp), before, "an interrupted meta-step applies nothing");
    // train() rewound the task streams: once the flag is cleared, the steps equal an uninterrupted run's.
    cancel.store(false, std::sync::atomic::Ordering::Relaxed);
    let again = exp.train(2, &stop).unwrap();
    assert_eq!(
        again.iter().map(|r| r.report.meta_loss).collect::<Vec<_>>(),
        all.iter().map(|r| r.report.meta_loss).collect::<Vec<_>>()
    );
    assert_eq!(params(&exp), params(&straight));
    // A single meta-step reports the cancellation as such.
    let mut other = Experiment::new(tiny_sine(r#"{"type":"oja"}"#)).unwrap();
    other.learner.cancel = Some(Arc::new(AtomicBool::new(true)));
    assert_eq!(other.train_step().err().unwrap().code(), "E_CANCELLED");
}

/// Exploded lifetimes: a finite meta-loss above explodeFactor × the median of the last applied steps'
/// losses is skipped (nothing changes, Adam does not advance) and counted apart from non-finite steps.
/// A factor just above 1 flags about half the steps, so the rule is checked against its definition.
#[test]
fn exploded_lifetimes_are_skipped_and_counted() {
    let mut cfg = tiny_sine(r#"{"type":"oja"}"#);
    cfg.learner.meta.explode_factor = Some(1.0001);
    let mut exp = Experiment::new(cfg).unwrap();
    let mut window: Vec<f64> = Vec::new();
    let mut flagged = 0;
    for _ in 0..40 {
        let before = params(&exp);
        let adam_before = exp.adam.steps;
        let r = exp.train_step().unwrap();
        let mut sorted = window.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            sorted[n / 2]
        } else {
            0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
        };
        let expected = n >= metaplastic_core::config::EXPLODE_MIN && r.report.meta_loss > 1.0001 * median;
        assert_eq!(r.report.exploded, expected, "step {}: loss {} median {median}", r.step, r.report.meta_loss);
        if r.report.exploded {
            flagged += 1;
            assert_eq!(params(&exp), before, "an exploded step must change nothing");
            assert_eq!(exp.adam.steps, adam_before);
        } else {
            window.push(r.report.meta_loss);
            if window.len() > metaplastic_core::config::EXPLODE_WINDOW {
                window.remove(0);
            }
        }
        assert_eq!((r.exploded_total, r.skipped_total), (flagged, 0));
    }
    assert!(flagged > 0 && exp.exploded == flagged);
    // The window is part of the checkpoint: a resumed run flags the same steps.
    let dir = tmpdir("exploded");
    checkpoint::save(&exp, &dir).unwrap();
    let mut resumed = checkpoint::load(&dir).unwrap();
    assert_eq!(resumed.exploded, flagged);
    let a: Vec<bool> = (0..10).map(|_| exp.train_step().unwrap().report.exploded).collect();
    let b: Vec<bool> = (0..10).map(|_| resumed.train_step().unwrap().report.exploded).collect();
    assert_eq!(a, b);
    assert_eq!(params(&exp), params(&resumed));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// resetAdamEvery: Adam is re-created before every N-th step (moments and bias correction restart).
#[test]
fn adam_is_recreated_every_n_steps() {
    let mut cfg = tiny_sine(r#"{"type":"oja"}"#);
    cfg.learner.meta.reset_adam_every = Some(3);
    let mut exp = Experiment::new(cfg.clone()).unwrap();
    let counts: Vec<i64> = (0..7)
        .map(|_| {
            exp.train_step().unwrap();
            exp.adam.steps
        })
        .collect();
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1]);
    // The first three steps are those of a run without resets; the fourth differs.
    cfg.learner.meta.reset_adam_every = None;
    let mut plain = Experiment::new(cfg).unwrap();
    let mut reset = Experiment::new({
        let mut c = tiny_sine(r#"{"type":"oja"}"#);
        c.learner.meta.reset_adam_every = Some(3);
        c
    })
    .unwrap();
    for _ in 0..3 {
        plain.train_step().unwrap();
        reset.train_step().unwrap();
    }
    assert_eq!(params(&plain), params(&reset));
    plain.train_step().unwrap();
    reset.train_step().unwrap();
    assert_ne!(params(&plain), params(&reset));
}

/// meta.warmup: the k-th applied step uses k/N of every learning rate, so the first step's change is a
/// quarter of the unwarmed one with N = 4 (same gradient, same Adam state), and step N onwards is unscaled.
#[test]
fn warmup_scales_the_first_steps() {
    let change = |warmup: u64| {
        let mut cfg = tiny_sine(r#"{"type":"oja"}"#);
        cfg.learner.meta.warmup = warmup;
        let mut exp = Experiment::new(cfg).unwrap();
        let before = params(&exp);
        exp.train_step().unwrap();
        let after = params(&exp);
        before
            .iter()
            .zip(&after)
            .flat_map(|((_, a), (_, b))| a.iter().zip(b).map(|(x, y)| (y - x) as f64).collect::<Vec<_>>())
            .collect::<Vec<f64>>()
    };
    let (plain, warm) = (change(0), change(4));
    let mut compared = 0;
    for (p, w) in plain.iter().zip(&warm) {
        if p.abs() > 1e-6 {
            assert!((w / p - 0.25).abs() < 1e-2, "warmed change {w} vs {p}");
            compared += 1;
        }
    }
    assert!(compared > 10);
    let (a, b) = (change(0), change(1));
    assert_eq!(a, b, "a warm-up of 1 step is no warm-up");
}
