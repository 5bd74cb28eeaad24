//! Batching, determinism, the meta-optimizer, the non-finite policy, configuration errors.
mod common;
use common::*;
use metaplastic_core::config::LearnerConfig;
use metaplastic_core::learner::Learner;
use metaplastic_core::meta::{meta_gradient, Adam};
use metaplastic_core::params::Group;
use tch::{Kind, Tensor};

fn flp() -> LearnerConfig {
    regression(r#"{"type":"oja"}"#, r#","plasticity":{"init":0.05}"#)
}

fn oml() -> LearnerConfig {
    classification(r#"{"type":"sgd","lr":0.1,"stepSizes":"perParameter"}"#, r#","outputReset":"episodeClasses""#)
}

#[test]
fn batched_episodes_equal_episodes_run_alone() {
    for cfg in [flp(), oml()] {
        let mut learner = Learner::new(cfg).unwrap();
        let batch = batch(&learner, 3, 4, 2, 5, 13);
        let (batched_loss, _) = learner.evaluate(&batch).unwrap();
        let (_, batched_grads) = meta_gradient(&mut learner, &batch).unwrap();
        let mut mean_grads: Vec<Tensor> = batched_grads.iter().map(|(_, g)| g.zeros_like()).collect();
        for e in 0..3 {
            let one = single(&batch, e);
            let (alone, _) = learner.evaluate(&one).unwrap();
            assert!(
                (alone[0] - batched_loss[e as usize]).abs() < 1e-12,
                "episode {e}: {} vs {}",
                alone[0],
                batched_loss[e as usize]
            );
            let (_, g) = meta_gradient(&mut learner, &one).unwrap();
            for (k, (_, gk)) in g.iter().enumerate() {
                mean_grads[k] = &mean_grads[k] + gk / 3.0;
            }
        }
        // The meta-loss is the mean over episodes, so its gradient is the mean of the episodes' gradients.
        for (k, (_, g)) in batched_grads.iter().enumerate() {
            let scale = g.abs().max().double_value(&[]).max(1e-12);
            assert!(
                max_abs_diff(g, &mean_grads[k]) / scale < 1e-10,
                "gradient {k}: {}",
                max_abs_diff(g, &mean_grads[k])
            );
        }
    }
}

#[test]
fn same_seed_gives_the_same_numbers() {
    let run = || {
        let mut learner = Learner::new(flp()).unwrap();
        let batch = batch(&learner, 2, 3, 2, 4, 17);
        let mut adam = Adam::default();
        let reports: Vec<f64> = (0..3).map(|_| adam.step(&mut learner, &batch).unwrap().meta_loss).collect();
        (reports, learner.params.read("plasticity.1").unwrap())
    };
    let (a, pa) = run();
    let (b, pb) = run();
    assert_eq!(a, b);
    assert_eq!(pa, pb);
    // A different seed initialises differently.
    let mut other = flp();
    other.seed = 8;
    let l1 = Learner::new(flp()).unwrap();
    let l2 = Learner::new(other).unwrap();
    assert_ne!(l1.params.read("forward.0.weight").unwrap(), l2.params.read("forward.0.weight").unwrap());
}

#[test]
fn first_adam_step_is_lr_times_sign_of_gradient() {
    let mut cfg = flp();
    cfg.meta.lr.forward = 1e-3;
    cfg.meta.lr.plasticity = 0.0; // a rate of zero freezes the group
    let mut learner = Learner::new(cfg).unwrap();
    let batch = batch(&learner, 2, 3, 2, 4, 19);
    let (_, grads) = meta_gradient(&mut learner, &batch).unwrap();
    let before: Vec<Tensor> = learner.params.iter().map(|p| p.tensor.detach().copy()).collect();
    let report = Adam::default().step(&mut learner, &batch).unwrap();
    assert!(!report.skipped);
    for (i, g) in grads {
        let p = learner.params.iter().nth(i).unwrap();
        let delta = &p.tensor.detach() - &before[i];
        let lr = learner.cfg.meta.lr.clone();
        let rate = match p.group {
            Group::Forward => lr.forward,
            Group::Feedback => lr.feedback,
            Group::Plasticity => lr.plasticity,
            Group::Strength => lr.strength,
        };
        // Bias-corrected first step: m̂ = g, v̂ = g², so Δ = −lr · g / (|g| + eps).
        let expected = -(&g / (g.abs() + 1e-8)) * rate;
        assert!(max_abs_diff(&delta, &expected) < 1e-12, "{}", p.name);
    }
}

#[test]
fn clipping_bounds_the_gradient_norm() {
    let mut cfg = flp();
    cfg.meta.clip_norm = Some(1e-3);
    let mut learner = Learner::new(cfg).unwrap();
    let batch = batch(&learner, 2, 3, 2, 4, 23);
    let report = Adam::default().step(&mut learner, &batch).unwrap();
    assert!(report.grad_norm > 1e-3 && report.clipped);
}

#[test]
fn non_finite_data_skips_the_step_and_changes_nothing() {
    let mut learner = Learner::new(flp()).unwrap();
    let batch = batch(&learner, 2, 3, 2, 4, 29);
    let _ = batch.support_y.get(0).get(1).get(0).fill_(f64::NAN);
    let before = learner.params.read("forward.0.weight").unwrap();
    let mut adam = Adam::default();
    let report = adam.step(&mut learner, &batch).unwrap();
    assert!(report.skipped && !report.meta_loss.is_finite());
    assert_eq!(learner.params.read("forward.0.weight").unwrap(), before);
    assert_eq!(adam.steps, 0, "a skipped step must not advance Adam");
    // Under the 'error' policy the same batch is an error naming the cause.
    learner.cfg.meta.non_finite = metaplastic_core::config::NonFinitePolicy::Error;
    let err = adam.step(&mut learner, &batch).unwrap_err();
    assert_eq!(err.code(), "E_DATA");
    assert!(err.to_string().contains("non-finite"), "{err}");
}

#[test]
fn random_feedback_and_fixed_strength_are_not_meta_learned() {
    let cfg = regression(
        r#"{"type":"oja"}"#,
        r#","plasticity":{"init":0.05},"feedback":{"type":"random","strength":{"init":1,"learned":false}}"#,
    );
    let mut learner = Learner::new(cfg).unwrap();
    let batch = batch(&learner, 2, 3, 2, 4, 31);
    let (_, grads) = meta_gradient(&mut learner, &batch).unwrap();
    let names: Vec<String> = grads.iter().map(|(i, _)| learner.params.iter().nth(*i).unwrap().name.clone()).collect();
    assert!(names.iter().all(|n| !n.starts_with("feedback.") && !n.starts_with("strength.")), "{names:?}");
    assert!(learner.params.infos().iter().any(|p| p.name == "feedback.0.0.weight" && !p.trainable));
}

#[test]
fn detaching_the_signal_changes_the_meta_gradient() {
    let grads = |detach: bool| {
        let cfg = regression(
            r#"{"type":"oja"}"#,
            &format!(r#","plasticity":{{"init":0.05}},"feedback":{{"detachSignal":{detach}}}"#),
        );
        let mut learner = Learner::new(cfg).unwrap();
        let batch = batch(&learner, 1, 3, 2, 4, 37);
        let i = learner.params.index_of("forward.2.weight").unwrap();
        let (_, g) = meta_gradient(&mut learner, &batch).unwrap();
        g.into_iter().find(|(j, _)| *j == i).unwrap().1
    };
    assert!(max_abs_diff(&grads(true), &grads(false)) > 1e-6);
}

#[test]
fn reinitialised_plastic_weights_differ_per_episode() {
    let cfg = regression(r#"{"type":"oja"}"#, r#","plasticInit":"reinit""#);
    let mut learner = Learner::new(cfg).unwrap();
    let a = learner.start(2, &[vec![], vec![]], false).unwrap();
    let b = learner.start(1, &[vec![]], false).unwrap();
    assert!(max_abs_diff(&a.w[0].get(0), &a.w[0].get(1)) > 1e-3);
    assert!(max_abs_diff(&a.w[0].get(0), &b.w[0].get(0)) > 1e-3);
    assert!(learner.params.infos().iter().any(|p| p.name == "forward.0.weight" && !p.trainable));
}

#[test]
fn output_rows_of_episode_classes_are_reset() {
    let mut learner = Learner::new(oml()).unwrap();
    let fast = learner.start(2, &[vec![0], vec![1, 2]], false).unwrap();
    let w = fast.w.last().unwrap();
    assert_eq!(w.get(0).get(0).abs().sum(Kind::Double).double_value(&[]), 0.0);
    assert!(w.get(0).get(1).abs().sum(Kind::Double).double_value(&[]) > 0.0);
    assert_eq!(w.get(1).narrow(0, 1, 2).abs().sum(Kind::Double).double_value(&[]), 0.0);
    assert!(learner.start(1, &[vec![7]], false).is_err(), "a class outside the output layer is an error");
}

#[test]
fn invalid_configurations_name_the_field() {
    let base = r#""inputShape":[4],"task":"regression","rule":{"type":"oja"}"#;
    let cases = [
        (format!(r#"{{{base},"layers":[]}}"#), "layers"),
        (format!(r#"{{{base},"layers":[{{"type":"linear","units":0}}]}}"#), "layers[0].units"),
        (format!(r#"{{{base},"layers":[{{"type":"linear","units":3}}],"rln":1}}"#), "rln"),
        (format!(r#"{{{base},"layers":[{{"type":"linear","units":3}}],"meta":{{"lr":{{"forward":-1}}}}}}"#), "meta.lr.forward"),
        (format!(r#"{{{base},"layers":[{{"type":"linear","units":3}}],"feedback":{{"type":"sideways"}}}}"#), "feedback.type"),
        (format!(r#"{{{base},"layers":[{{"type":"linear","units":3}}],"plasticity":{{"granularity":"axon"}}}}"#), "plasticity.granularity"),
        (format!(r#"{{{base},"layers":[{{"type":"linear","units":3}}],"bogus":1}}"#), "bogus"),
        (format!(r#"{{{base},"layers":[{{"type":"linear","units":3}}],"device":"tpu"}}"#), "device"),
        (format!(r#"{{{base},"layers":[{{"type":"conv","channels":2,"kernel":3}},{{"type":"linear","units":3}}]}}"#), "layers[0]"),
        (r#"{"inputShape":[1,4,4],"task":"regression","rule":{"type":"oja"},"layers":[{"type":"conv","channels":2,"kernel":3},{"type":"linear","units":3}]}"#.to_string(), "rln"),
    ];
    for (json, field) in cases {
        let err = LearnerConfig::from_json(&json).unwrap_err();
        assert_eq!(err.code(), "E_CONFIG", "{json}");
        assert!(err.to_string().contains(field), "error for {json} should name {field}: {err}");
    }
    // Oja's learned decay coefficient: γ starts strictly inside (0, 1), and only Oja's rule has one. (Inside
    // the rule, whose type tag serde reads first, a wrong name or value is reported on `rule`.)
    let net = r#""inputShape":[4],"task":"regression","layers":[{"type":"linear","units":3}]"#;
    for (rule, needles) in [
        (r#"{"type":"oja","decay":{"init":0}}"#, ["rule.decay.init", "got 0"]),
        (r#"{"type":"oja","decay":{"init":1}}"#, ["rule.decay.init", "got 1"]),
        (r#"{"type":"oja","decay":{"init":-0.5}}"#, ["rule.decay.init", "got -0.5"]),
        (r#"{"type":"oja","decay":{"granularity":"synapse"}}"#, ["rule", "unknown variant `synapse`"]),
        (r#"{"type":"oja","decay":{"rate":0.5}}"#, ["rule", "unknown field `rate`"]),
        (r#"{"type":"hebb","decay":{"init":0.5}}"#, ["rule", "decay"]),
    ] {
        let json = format!(r#"{{{net},"rule":{rule}}}"#);
        let err = LearnerConfig::from_json(&json).unwrap_err();
        assert_eq!(err.code(), "E_CONFIG", "{json}");
        for needle in needles {
            assert!(err.to_string().contains(needle), "error for {rule} should contain {needle}: {err}");
        }
    }
}

/// A configuration without a decay writes the rule as before (checkpoints keep their configuration), Hebb's
/// rule included; one with a decay round-trips with its defaults filled in.
#[test]
fn the_decay_configuration_round_trips() {
    let net = r#""inputShape":[4],"task":"regression","layers":[{"type":"linear","units":3}]"#;
    for rule in ["oja", "hebb"] {
        let plain = LearnerConfig::from_json(&format!(r#"{{{net},"rule":{{"type":"{rule}"}}}}"#)).unwrap();
        assert!(plain.to_json().contains(&format!(r#""rule":{{"type":"{rule}"}}"#)), "{}", plain.to_json());
    }
    let decayed = LearnerConfig::from_json(&format!(r#"{{{net},"rule":{{"type":"oja","decay":{{}}}}}}"#)).unwrap();
    let json = decayed.to_json();
    assert!(json.contains(r#""decay":{"init":0.5,"learned":true,"granularity":"layer"}"#), "{json}");
    assert_eq!(LearnerConfig::from_json(&json).unwrap(), decayed);
}

#[test]
fn chunked_frozen_features_equal_the_full_front() {
    let learner = Learner::new(classification(r#"{"type":"oja"}"#, "")).unwrap();
    tch::manual_seed(3);
    let x = Tensor::randn([2, 300, 1, 6, 6], (Kind::Double, tch::Device::Cpu)); // 600 examples: 3 chunks
    let full = learner.features(&x).unwrap();
    let chunked = learner.features_with(&x, false).unwrap();
    assert_eq!(full.size(), chunked.size());
    assert!(max_abs_diff(&full, &chunked) < 1e-12);
    assert!(!chunked.requires_grad());
}

#[test]
fn a_typo_inside_the_task_names_the_full_field_path() {
    let json = r#"{"learner":{"inputShape":[11],"task":"regression","rule":{"type":"oja"},"layers":[{"type":"linear","units":1}]},
        "task":{"type":"sine","sine":{"batchSiz":3}}}"#;
    let err = metaplastic_core::experiment::ExperimentConfig::from_json(json).unwrap_err();
    assert!(err.to_string().contains("invalid configuration: task.sine.batchSiz: unknown field `batchSiz`"), "{err}");
}

/// Evaluation's inner steps (nothing tracked) take the local rule's fused step on the CPU
/// (`InnerRule::step_without_graph`): it equals the rule's update applied with libtorch operations,
/// W + P ⊙ term, in float64, for Oja and Hebb, every normalisation and rate granularity, the Hebb-first-step
/// option and a classification net; and the inner loop's step gives exactly the fused step's weights.
#[test]
fn evaluation_steps_equal_the_rules_update() {
    use metaplastic_core::inner::{FastWeights, StepMode};
    use metaplastic_core::net::functional::tail;
    use metaplastic_core::rules::StepInputs;
    if test_device() != "cpu" {
        return; // the fused step is the CPU's
    }
    // Rows of 70 and 90 inputs: whole vector chunks and a remainder.
    let wide = |rule: &str, plasticity: &str| {
        let rule = match rule {
            "decayLayer" => r#"{"type":"oja","decay":{"init":0.3}}"#.to_string(),
            "decayNeuron" => r#"{"type":"oja","decay":{"init":0.6,"granularity":"neuron"}}"#.to_string(),
            _ => format!(r#"{{"type":"{rule}"}}"#),
        };
        config(&format!(
            r#"{{"inputShape":[4],"layers":[{{"type":"linear","units":70}},{{"type":"linear","units":90}},{{"type":"linear","units":2}}],
                "task":"regression","rule":{rule},"plasticity":{plasticity},"dtype":"float64","device":"cpu","seed":3}}"#
        ))
    };
    let mut cases = Vec::new();
    for rule in ["oja", "hebb", "decayLayer", "decayNeuron"] {
        for normalize in ["none", "batch", "presynaptic", "bounded"] {
            for granularity in ["synapse", "neuron", "global"] {
                cases.push(wide(rule, &format!(r#"{{"init":0.01,"granularity":"{granularity}","normalize":"{normalize}","hiddenMultiplier":0.5}}"#)));
            }
        }
    }
    cases.push(wide("oja", r#"{"init":0.01,"hebbFirstStep":true,"layerScale":true,"parameterization":"log"}"#));
    cases.push(wide("decayNeuron", r#"{"init":0.01,"hebbFirstStep":true,"layerScale":true,"parameterization":"log"}"#));
    cases.push(classification(r#"{"type":"oja"}"#, r#","plasticity":{"init":0.05}"#));
    for cfg in cases {
        let described = cfg.to_json();
        let mut learner = Learner::new(cfg).unwrap();
        jitter_biases(&mut learner, 5);
        jitter_decays(&mut learner, 5);
        let b = batch(&learner, 2, 3, 20, 4, 9);
        let mut fast = learner.start(2, &b.classes, false).unwrap();
        let features = learner.features_with(&b.support_x, false).unwrap();
        let inner = learner.inner_loop();
        for t in 0..3 {
            let (x, y) = (features.select(1, t), b.support_y.select(1, t));
            // The fused step may write over the weights it is given: each way gets its own copy.
            let copy = || FastWeights {
                w: fast.w.iter().map(|t| t.copy()).collect(),
                b: fast.b.iter().map(|t| t.copy()).collect(),
            };
            let (expected, fused) = tch::no_grad(|| {
                let acts = tail(&x, &fast.w, &fast.b).unwrap();
                let inputs = StepInputs {
                    cfg: &learner.cfg,
                    acts: &acts,
                    w: &fast.w,
                    b: &fast.b,
                    y: &y,
                    create_graph: false,
                    step_scale: 1.0,
                    step: t as usize,
                };
                let u = inner.rule.update(inner.params, &inputs).unwrap();
                let expected: Vec<Tensor> = fast
                    .w
                    .iter()
                    .zip(&u.w)
                    .zip(&u.w_rate)
                    .map(|((w, d), r)| w + r.as_ref().expect("a rate") * d)
                    .collect();
                let own = copy();
                let inputs = StepInputs { w: &own.w, ..inputs };
                (
                    expected,
                    inner
                        .rule
                        .step_without_graph(inner.params, &inputs)
                        .unwrap()
                        .expect("the fused step applies on the CPU"),
                )
            });
            let copy = copy();
            fast = inner.step(copy, &x, &y, StepMode::Constant, t as usize).unwrap();
            for k in 0..expected.len() {
                let scale = expected[k].abs().max().double_value(&[]);
                let off = max_abs_diff(&fused[k], &expected[k]);
                assert!(off <= 1e-12 * scale, "step {t}, layer {k}: {off} off (scale {scale}) for {described}");
                assert_eq!(
                    max_abs_diff(&fast.w[k], &fused[k]),
                    0.0,
                    "step {t}, layer {k}: the inner loop did not take the fused step"
                );
            }
        }
    }
}
