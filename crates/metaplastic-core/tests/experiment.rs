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
    for rule in [r#"{"type":"oja"}"#, r#"{"type":"sgd","lr":0.01,"stepSizes":"perLayer"}"#] {
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
        let losses = |r: &[metaplastic_core::experiment::StepRecord]| r.iter().map(|s| s.report.meta_loss).collect::<Vec<_>>();
        assert_eq!(losses(&all[3..]), losses(&rest));
        // Saving again replaces the tensor file: only the newest remains.
        checkpoint::save(&resumed, &dir).unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
        assert_eq!(files.iter().filter(|f| f.ends_with(".safetensors")).count(), 1, "{files:?}");
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
    let tensors = std::fs::read_dir(&dir).unwrap().flatten().find(|e| e.file_name().to_string_lossy().ends_with(".safetensors")).unwrap().path();
    let mut bytes = std::fs::read(&tensors).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&tensors, bytes).unwrap();
    let err = checkpoint::load(&dir).err().unwrap();
    assert!(err.to_string().contains("is corrupt"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_manifest_that_no_longer_fits_its_tensors_names_the_folder() {
    let dir = tmpdir("mismatch");
    let exp = Experiment::new(tiny_sine(r#"{"type":"oja"}"#)).unwrap();
    checkpoint::save(&exp, &dir).unwrap();
    let manifest = dir.join("checkpoint.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replacen("\"units\": 8", "\"units\": 9", 1)).unwrap();
    let err = checkpoint::load(&dir).err().unwrap();
    assert_eq!(err.code(), "E_CHECKPOINT");
    assert!(err.to_string().contains(&dir.display().to_string()) && err.to_string().contains("does not fit"), "{err}");
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
    let mean = |r: &[metaplastic_core::experiment::StepRecord]| r.iter().map(|s| s.report.meta_loss).sum::<f64>() / r.len() as f64;
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
    assert_eq!(again.iter().map(|r| r.report.meta_loss).collect::<Vec<_>>(), all.iter().map(|r| r.report.meta_loss).collect::<Vec<_>>());
    assert_eq!(params(&exp), params(&straight));
    // A single meta-step reports the cancellation as such.
    let mut other = Experiment::new(tiny_sine(r#"{"type":"oja"}"#)).unwrap();
    other.learner.cancel = Some(Arc::new(AtomicBool::new(true)));
    assert_eq!(other.train_step().err().unwrap().code(), "E_CANCELLED");
}
