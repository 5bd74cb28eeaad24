//! Small learners and random episode batches for the engine's tests (f64 for gradient checks).
#![allow(dead_code)]
use metaplastic_core::config::LearnerConfig;
use metaplastic_core::learner::{EpisodeBatch, Learner};
use metaplastic_core::rng::{normal_vec, seeded};
use tch::{Kind, Tensor};

pub fn config(json: &str) -> LearnerConfig {
    LearnerConfig::from_json(json).unwrap_or_else(|e| panic!("bad test config: {e}\n{json}"))
}

/// The device the small learners run on: the CPU, or `METAPLASTIC_TEST_DEVICE` (e.g. `cuda`, to check the
/// reverse pass against autograd on a GPU machine with the same test binary).
pub fn test_device() -> String {
    std::env::var("METAPLASTIC_TEST_DEVICE").unwrap_or_else(|_| "cpu".into())
}

/// A small regression net: 4 → 5 → 5 → 1 with `rln` frozen layers, f64 on the test device.
pub fn regression(rule: &str, extra: &str) -> LearnerConfig {
    let device = test_device();
    config(&format!(
        r#"{{"inputShape":[4],"layers":[{{"type":"linear","units":5}},{{"type":"linear","units":5}},{{"type":"linear","units":1}}],
            "task":"regression","rule":{rule},"dtype":"float64","device":"{device}","seed":7{extra}}}"#
    ))
}

/// A small classification net with a conv front: [1,6,6] → conv(2, k3) → linear 6 → linear 3.
pub fn classification(rule: &str, extra: &str) -> LearnerConfig {
    let device = test_device();
    config(&format!(
        r#"{{"inputShape":[1,6,6],"layers":[{{"type":"conv","channels":2,"kernel":3}},{{"type":"linear","units":6}},{{"type":"linear","units":3}}],
            "task":"classification","rule":{rule},"rln":1,"dtype":"float64","device":"{device}","seed":11{extra}}}"#
    ))
}

/// Normal draws from a local seeded generator: libtorch's global generator is shared by the tests that
/// run in parallel threads, so seeding it and drawing would race.
pub fn randn(shape: &[i64], seed: i64) -> Tensor {
    let n: i64 = shape.iter().product();
    let values = normal_vec(&mut seeded(seed as u64), n as usize, 1.0);
    Tensor::from_slice(&values).reshape(shape).to_kind(Kind::Double)
}

fn randint(high: i64, shape: &[i64], seed: i64) -> Tensor {
    let mut rng = seeded(seed as u64);
    let n: i64 = shape.iter().product();
    let values: Vec<i64> = (0..n).map(|_| rand::Rng::random_range(&mut rng, 0..high)).collect();
    Tensor::from_slice(&values).reshape(shape)
}

/// E episodes of T steps × B examples, Q query examples.
pub fn batch(learner: &Learner, e: i64, t: i64, b: i64, q: i64, seed: i64) -> EpisodeBatch {
    let input = learner.cfg.input_shape.clone();
    let shape = |lead: &[i64]| -> Vec<i64> { lead.iter().chain(input.iter()).copied().collect() };
    let sx = randn(&shape(&[e, t, b]), seed);
    let qx = randn(&shape(&[e, q]), seed + 1);
    let outputs = learner.spec.outputs();
    let (sy, qy, classes) = if learner.is_classification() {
        let sy = randint(outputs, &[e, t, b], seed + 2);
        let qy = randint(outputs, &[e, q], seed + 3);
        let classes = (0..e).map(|_| (0..outputs).collect()).collect();
        (sy, qy, classes)
    } else {
        (randn(&[e, t, b, outputs], seed + 2), randn(&[e, q, outputs], seed + 3), vec![vec![]; e as usize])
    };
    learner.prepare(&sx, &sy, &qx, &qy, classes).unwrap()
}

/// Selects episode i of a batch as a batch of one.
pub fn single(batch: &EpisodeBatch, i: i64) -> EpisodeBatch {
    let s = |t: &Tensor| t.narrow(0, i, 1);
    EpisodeBatch {
        support_x: s(&batch.support_x),
        support_y: s(&batch.support_y),
        query_x: s(&batch.query_x),
        query_y: s(&batch.query_y),
        classes: vec![batch.classes[i as usize].clone()],
    }
}

/// Adds `delta` to one flat entry of a parameter, in place.
pub fn nudge(learner: &mut Learner, index: usize, flat: i64, delta: f64) {
    let p = learner.params.at(index).shallow_clone();
    tch::no_grad(|| {
        let mut view = p.view([-1]).narrow(0, flat, 1);
        let _ = view.g_add_scalar_(delta);
    });
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Moves zero-initialised biases off zero: a unit whose input is all zero (every ReLU below it dead)
/// would otherwise sit exactly on the ReLU kink, where finite differences and autograd disagree.
pub fn jitter_biases(learner: &mut Learner, seed: i64) {
    let names: Vec<String> =
        learner.params.iter().filter(|p| p.name.ends_with(".bias")).map(|p| p.name.clone()).collect();
    for (k, name) in names.iter().enumerate() {
        let i = learner.params.index_of(name).unwrap();
        let p = learner.params.at(i);
        let noise = randn(&p.size(), seed + k as i64).to_device(p.device()).to_kind(p.kind()) * 0.1;
        learner.params.write(name, &(p.detach() + noise)).unwrap();
    }
}

/// Moves every learned decay coefficient's φ (`decay.{l}`) off its one initial value, each entry its own:
/// γ = σ(φ) then differs by layer and by row (about 0.2 to 0.8), so that a γ applied to the wrong row or
/// layer shows. Nothing happens to a learner without them.
pub fn jitter_decays(learner: &mut Learner, seed: i64) {
    let names: Vec<String> =
        learner.params.iter().filter(|p| p.name.starts_with("decay.")).map(|p| p.name.clone()).collect();
    for (k, name) in names.iter().enumerate() {
        let i = learner.params.index_of(name).unwrap();
        let p = learner.params.at(i);
        let noise = randn(&p.size(), seed + 100 + k as i64).to_device(p.device()).to_kind(p.kind()) * 0.7;
        learner.params.write(name, &(p.detach() + noise)).unwrap();
    }
}
