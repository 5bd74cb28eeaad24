//! The analysis of learned updates (docs/method.md §7) on constructed cases whose answers are known in closed
//! form, and the guarantee that measuring does not change what the learner does.
mod common;
use common::*;
use metaplastic_core::analysis::stream::{analyze_stream, AnalysisStream};
use metaplastic_core::analysis::{analyze_streams, AnalysisOptions};
use metaplastic_core::learner::Learner;
use metaplastic_core::rng::{normal_vec, seeded};
use tch::{Kind, Tensor};

fn t(values: &[f64], shape: &[i64]) -> Tensor {
    Tensor::from_slice(values).reshape(shape).to_kind(Kind::Double)
}

fn randn(shape: &[i64], seed: u64) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f64> = normal_vec(&mut seeded(seed), n as usize, 1.0).into_iter().map(f64::from).collect();
    t(&v, shape)
}

/// A regression stream in feature space: `tasks` tasks of `per` steps each (class by class), batch b.
fn regression_stream(features: i64, tasks: usize, per: usize, b: i64, seed: u64) -> AnalysisStream {
    let steps = (tasks * per) as i64;
    AnalysisStream {
        features: randn(&[steps, b, features], seed),
        ys: randn(&[steps, b, 1], seed + 1),
        step_task: (0..tasks).flat_map(|k| std::iter::repeat_n(k, per)).collect(),
        probes: (0..tasks as u64)
            .map(|k| (randn(&[4, features], seed + 10 + k), randn(&[4, 1], seed + 20 + k)))
            .collect(),
    }
}

fn vals(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.flatten(0, -1).to_kind(Kind::Double)).unwrap()
}

#[test]
fn derivative_control_with_hebb_is_aligned_with_the_gradient_in_every_layer() {
    let cfg = regression(
        r#"{"type":"hebb"}"#,
        r#","rln":0,"feedback":{"type":"derivative"},"plasticity":{"granularity":"layer","init":0.05}"#,
    );
    let mut learner = Learner::new(cfg).unwrap();
    let stream = regression_stream(4, 2, 3, 3, 1);
    let (run, _) = analyze_stream(&mut learner, &stream, 1).unwrap();
    assert_eq!(run.steps.len(), 6);
    for s in &run.steps {
        // The output layer always gets the error; a hidden layer may get a zero signal (dead units).
        let out = s.layers.last().unwrap();
        assert!((out.alignment.unwrap() - 1.0).abs() < 1e-9, "{:?}", out);
        assert_eq!(out.sign_agreement, Some(1.0));
        for l in &s.layers {
            if let Some(a) = l.alignment {
                assert!((a - 1.0).abs() < 1e-9, "{:?}", l);
            }
        }
    }
}

#[test]
fn oja_alignment_matches_the_closed_form_of_a_one_layer_learner() {
    // 3 → 2 linear, output plastic, derivative signal δ = y − ŷ, Oja: ΔW = P(δ aᵀ − diag(δ²) W); −∇L ∝ δ aᵀ.
    let cfg = config(
        r#"{"inputShape":[3],"layers":[{"type":"linear","units":2}],"task":"regression","rule":{"type":"oja"},"rln":0,
            "feedback":{"type":"derivative"},"plasticity":{"granularity":"global","init":0.1},"dtype":"float64","device":"cpu","seed":3}"#,
    );
    let mut learner = Learner::new(cfg).unwrap();
    let w = vals(&learner.params.at(learner.params.index_of("forward.0.weight").unwrap()).detach());
    let x = [0.5, -1.0, 2.0];
    let y = [1.0, -0.5];
    let stream = AnalysisStream {
        features: t(&x, &[1, 1, 3]),
        ys: t(&y, &[1, 1, 2]),
        step_task: vec![0],
        probes: vec![(t(&x, &[1, 3]), t(&y, &[1, 2]))],
    };
    let (run, _) = analyze_stream(&mut learner, &stream, 1).unwrap();
    // By hand (biases start at 0): ŷ_i = Σ_j W_ij x_j.
    let delta: Vec<f64> = (0..2).map(|i| y[i] - (0..3).map(|j| w[i * 3 + j] * x[j]).sum::<f64>()).collect();
    let upd: Vec<f64> = (0..6).map(|n| 0.1 * (delta[n / 3] * x[n % 3] - delta[n / 3].powi(2) * w[n])).collect();
    let grad: Vec<f64> = (0..6).map(|n| delta[n / 3] * x[n % 3]).collect();
    let dot: f64 = upd.iter().zip(&grad).map(|(a, b)| a * b).sum();
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let expected = dot / (norm(&upd) * norm(&grad));
    let got = run.steps[0].layers[0].alignment.unwrap();
    assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
    assert!(expected < 0.9999, "the decay term must make the case non-trivial");
    let agree = (0..6).filter(|&n| upd[n] * grad[n] > 0.0).count() as f64 / 6.0;
    assert!((run.steps[0].layers[0].sign_agreement.unwrap() - agree).abs() < 1e-12);
}

#[test]
fn sgd_updates_are_the_negative_gradient() {
    let cfg = regression(r#"{"type":"sgd","lr":0.05}"#, r#","rln":1"#);
    let mut learner = Learner::new(cfg).unwrap();
    let stream = regression_stream(5, 2, 2, 4, 2);
    let (run, _) = analyze_stream(&mut learner, &stream, 1).unwrap();
    for s in &run.steps {
        for l in &s.layers {
            if l.gradient_norm > 0.0 {
                assert!((l.alignment.unwrap() - 1.0).abs() < 1e-9);
                assert!((l.update_norm - 0.05 * l.gradient_norm).abs() < 1e-9 * l.update_norm.max(1.0));
            }
        }
    }
}

/// One linear layer C → C, Hebb, output clamped to the one-hot target; class c's input is 2·e_c.
fn clamped_case(classes: usize, per: usize) -> (Learner, AnalysisStream) {
    let c = classes as i64;
    let cfg = config(&format!(
        r#"{{"inputShape":[{c}],"layers":[{{"type":"linear","units":{c}}}],"task":"classification","rule":{{"type":"hebb"}},"rln":0,
            "plasticity":{{"init":0.1}},"dtype":"float64","device":"cpu","seed":5}}"#
    ));
    let learner = Learner::new(cfg).unwrap();
    let input = |k: usize| -> Vec<f64> { (0..classes).map(|j| if j == k { 2.0 } else { 0.0 }).collect() };
    let step_task: Vec<usize> = (0..classes).flat_map(|k| std::iter::repeat_n(k, per)).collect();
    let x: Vec<f64> = step_task.iter().flat_map(|&k| input(k)).collect();
    let y: Vec<i64> = step_task.iter().map(|&k| k as i64).collect();
    let steps = step_task.len() as i64;
    let probes = (0..classes).map(|k| (t(&input(k), &[1, c]), Tensor::from_slice(&[k as i64]))).collect();
    let stream = AnalysisStream {
        features: t(&x, &[steps, 1, c]),
        ys: Tensor::from_slice(&y).reshape([steps, 1]),
        step_task,
        probes,
    };
    (learner, stream)
}

#[test]
fn orthogonal_classes_do_not_overlap_in_the_clamped_output_layer() {
    let (mut learner, stream) = clamped_case(4, 3);
    let (run, _) = analyze_stream(&mut learner, &stream, 1).unwrap();
    // ΔW = P·e_y (2 e_y)ᵀ: one row per update, the same update within a class, disjoint rows across classes.
    assert_eq!(run.overlap_across[0], Some(0.0));
    assert!((run.overlap_within[0].unwrap() - 1.0).abs() < 1e-12);
    for a in 0..4 {
        for b in 0..4 {
            let v = run.overlap[0][a][b].unwrap();
            assert!((v - if a == b { 1.0 } else { 0.0 }).abs() < 1e-12);
        }
    }
    for s in &run.steps {
        assert_eq!(s.layers[0].rows_changed, 0.25);
        // Earlier classes' probes are orthogonal to the updated row: their loss does not move at all.
        for (j, c) in s.loss_change.iter().enumerate() {
            if j < s.task {
                assert_eq!(*c, Some(0.0));
            } else if j > s.task {
                assert_eq!(*c, None);
            } else {
                assert!(c.unwrap() < 0.0, "learning a class lowers its own loss");
            }
        }
    }
    // Each class's accumulated update is 3 copies of one outer product: effective rank 1.
    for r in &run.effective_rank[0] {
        assert!((r.unwrap() - 1.0).abs() < 1e-9);
    }
}

#[test]
fn forgetting_per_update_matches_hand_computed_sgd() {
    // 2 → 1 linear, SGD on ½-free MSE mean: W ← W + lr·(2/B) Σ_b (y_b − ŷ_b) x_b, biases fixed at 0.
    let cfg = config(
        r#"{"inputShape":[2],"layers":[{"type":"linear","units":1}],"task":"regression","rule":{"type":"sgd","lr":0.1,"biases":false},"rln":0,
            "dtype":"float64","device":"cpu","seed":9}"#,
    );
    let mut learner = Learner::new(cfg).unwrap();
    let mut w = vals(&learner.params.at(learner.params.index_of("forward.0.weight").unwrap()).detach());
    let xs = [[1.0, 0.5], [0.2, -1.0], [-0.7, 0.3]];
    let ys = [1.5, -0.4, 0.9];
    let probe = [([1.0, 1.0], 0.3), ([-1.0, 2.0], 1.0)];
    let stream = AnalysisStream {
        features: t(&xs.concat(), &[3, 1, 2]),
        ys: t(&ys, &[3, 1, 1]),
        step_task: vec![0, 1, 1],
        probes: probe.iter().map(|(x, y)| (t(x, &[1, 2]), t(&[*y], &[1, 1]))).collect(),
    };
    let (run, fast) = analyze_stream(&mut learner, &stream, 1).unwrap();
    let loss = |w: &[f64], (x, y): ([f64; 2], f64)| (w[0] * x[0] + w[1] * x[1] - y).powi(2);
    for (s, rec) in run.steps.iter().enumerate() {
        let before: Vec<f64> = probe.iter().map(|&p| loss(&w, p)).collect();
        let err = ys[s] - (w[0] * xs[s][0] + w[1] * xs[s][1]);
        w = vec![w[0] + 0.1 * 2.0 * err * xs[s][0], w[1] + 0.1 * 2.0 * err * xs[s][1]];
        let after: Vec<f64> = probe.iter().map(|&p| loss(&w, p)).collect();
        for j in 0..2 {
            match rec.loss_change[j] {
                Some(c) => assert!((c - (after[j] - before[j])).abs() < 1e-12, "step {s} task {j}"),
                None => assert!(j > rec.task),
            }
        }
    }
    assert!(max_abs_diff(&fast.w[0].reshape([-1]), &t(&w, &[2])) < 1e-12);
    // Curve points after each half of the stream (2 tasks): losses at those weights.
    assert_eq!(run.curve_steps, vec![2]);
}

#[test]
fn analysis_leaves_the_trajectory_unchanged() {
    for rule in [r#"{"type":"oja"}"#, r#"{"type":"sgd","lr":0.05}"#] {
        let cfg = regression(rule, r#","rln":1,"plasticity":{"init":0.02}"#);
        let mut learner = Learner::new(cfg).unwrap();
        let b = batch(&learner, 1, 6, 3, 2, 4);
        let features = learner.features_with(&b.support_x, false).unwrap();
        let stream = AnalysisStream {
            features: features.get(0),
            ys: b.support_y.get(0),
            step_task: vec![0, 0, 0, 1, 1, 1],
            probes: (0..2).map(|k| (features.get(0).get(k), b.support_y.get(0).get(k))).collect(),
        };
        let plain = tch::no_grad(|| {
            let fast = learner.start(1, &[vec![]], false).unwrap();
            learner.adapt_frozen(fast, &b.support_x, &b.support_y).unwrap()
        });
        for every in [1, 4] {
            let (_, fast) = analyze_stream(&mut learner, &stream, every).unwrap();
            for (a, p) in fast.w.iter().zip(&plain.w) {
                assert_eq!(max_abs_diff(a, p), 0.0, "{rule}, every {every}");
            }
        }
    }
}

#[test]
fn subsampling_measures_fewer_steps_but_the_same_stream() {
    let cfg = regression(r#"{"type":"oja"}"#, r#","rln":0,"plasticity":{"init":0.02}"#);
    let mut learner = Learner::new(cfg).unwrap();
    let streams = vec![regression_stream(4, 3, 4, 2, 7)];
    let all =
        analyze_streams(&mut learner, "x", "custom", &streams, &AnalysisOptions { every: 1, ..Default::default() })
            .unwrap();
    let some =
        analyze_streams(&mut learner, "x", "custom", &streams, &AnalysisOptions { every: 5, ..Default::default() })
            .unwrap();
    assert_eq!(all.runs[0].steps.len(), 12);
    assert_eq!(some.runs[0].steps.iter().map(|s| s.step).collect::<Vec<_>>(), vec![0, 5, 10]);
    assert_eq!(all.runs[0].curve, some.runs[0].curve);
    assert_eq!(all.runs[0].effective_rank, some.runs[0].effective_rank);
    for (a, s) in all.runs[0].steps.iter().step_by(5).zip(&some.runs[0].steps) {
        assert_eq!(a.layers[0].alignment, s.layers[0].alignment);
    }
    let err =
        analyze_streams(&mut learner, "x", "custom", &streams, &AnalysisOptions { every: 0, ..Default::default() })
            .err()
            .unwrap();
    assert_eq!(err.code(), "E_CONFIG");
}
