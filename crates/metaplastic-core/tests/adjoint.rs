//! The hand-derived reverse pass against autograd through the unrolled lifetime, in float64, for every
//! option the local rules have, every meta-gradient mode and several checkpoint intervals; plus finite
//! differences on the reverse pass itself.
mod common;
use common::*;
use metaplastic_core::adjoint::{self, AdjointOptions, PassStats};
use metaplastic_core::config::{Backward, LearnerConfig, MetaGradient};
use metaplastic_core::inner::step_mode;
use metaplastic_core::learner::Learner;
use metaplastic_core::meta::{autograd_meta_gradient, meta_gradient, uses_adjoint};
use tch::{Device, Kind, Tensor};

/// Compares the reverse pass to autograd: on the CPU with the fused loops running steps backwards (the
/// meta-batch whole, and its two episodes side by side), with the fused loops recomputing every
/// segment, and with libtorch operations (episodes side by side); on another test device with libtorch
/// operations only. Returns how the first variant went through the steps.
fn compare(cfg: LearnerConfig, seed: i64, interval: Option<usize>) -> PassStats {
    compare_batch(cfg, seed, interval, 3)
}

/// `compare` with `points` points per inner step.
fn compare_batch(cfg: LearnerConfig, seed: i64, interval: Option<usize>, points: i64) -> PassStats {
    let variants: &[(bool, bool, usize)] = if test_device() == "cpu" {
        &[(true, true, 2), (true, true, 1), (true, false, 1), (false, false, 2)]
    } else {
        &[(false, false, 1)]
    };
    let mut stats = None;
    for &(fused, unstep, groups) in variants {
        compare_one(
            cfg.clone(),
            seed,
            AdjointOptions {
                interval,
                fused: Some(fused),
                unstep: Some(unstep),
                episode_groups: Some(groups),
                ..Default::default()
            },
            points,
        );
        let pass = adjoint::last_pass();
        assert_eq!(pass.groups, groups, "{pass:?}");
        assert_eq!(pass.unstepped + pass.recomputed + pass.skipped, 5, "every step accounted for: {pass:?}");
        if !unstep {
            assert_eq!(pass.unstepped, 0, "no step run backwards when told not to: {pass:?}");
        }
        stats.get_or_insert(pass);
    }
    stats.expect("at least one variant")
}

/// Worst relative difference between the two meta-gradients over all parameters, with `points`
/// points per inner step (2 episodes of 5 steps, 4 query points).
fn compare_one(cfg: LearnerConfig, seed: i64, opts: AdjointOptions, points: i64) -> f64 {
    compare_episodes(cfg, seed, opts, points, 2)
}

/// `compare_one` with `episodes` episodes.
fn compare_episodes(mut cfg: LearnerConfig, seed: i64, opts: AdjointOptions, points: i64, episodes: i64) -> f64 {
    cfg.meta.backward = Backward::Adjoint;
    let gradient = cfg.meta.gradient;
    let described = cfg.to_json();
    let mut learner = Learner::new(cfg).unwrap();
    jitter_biases(&mut learner, seed);
    jitter_decays(&mut learner, seed);
    assert!(uses_adjoint(&learner));
    let batch = batch(&learner, episodes, 5, points, 4, seed);
    // Re-initialised plastic weights draw from the learner's generator: both paths must see the same draw.
    let rng = learner.rng.clone();
    let (loss_a, fast) = adjoint::meta_gradient(&mut learner, &batch, opts, |t| step_mode(gradient, t, 5)).unwrap();
    learner.rng = rng;
    let (loss_b, reference) = autograd_meta_gradient(&mut learner, &batch).unwrap();
    assert!((loss_a - loss_b).abs() <= 1e-12 * loss_b.abs().max(1.0), "loss {loss_a} vs {loss_b} for {described}");
    assert_eq!(fast.len(), reference.len());
    let mut worst: f64 = 0.0;
    let mut nonzero = 0;
    for ((i, a), (j, b)) in fast.iter().zip(&reference) {
        assert_eq!(i, j);
        let name = &learner.params.iter().nth(*i).unwrap().name;
        let scale = b.abs().max().double_value(&[]);
        let diff = max_abs_diff(a, b);
        let rel = diff / scale.max(1e-300);
        if scale > 0.0 {
            nonzero += 1;
            worst = worst.max(rel);
        } else {
            assert_eq!(diff, 0.0, "{name}: autograd gives zero, the reverse pass {diff}");
        }
        assert!(rel < 1e-10 || scale == 0.0, "{name}: relative difference {rel:e} (scale {scale:e}, {opts:?})");
        if name.starts_with("decay.") {
            assert!(scale > 0.0, "{name}: no gradient reaches the decay coefficient, nothing is compared");
        }
    }
    assert!(nonzero > 0, "every gradient is zero: the comparison checks nothing");
    worst
}

fn flp(extra: &str) -> LearnerConfig {
    regression(r#"{"type":"oja"}"#, &format!(r#","plasticity":{{"init":0.05}}{extra}"#))
}

/// Oja's rule with a learned decay coefficient γ per layer or per neuron (`rule.decay`).
fn decayed(granularity: &str) -> String {
    format!(r#"{{"type":"oja","decay":{{"init":0.4,"granularity":"{granularity}"}}}}"#)
}

#[test]
fn oja_and_hebb_every_granularity_and_interval() {
    for rule in ["oja", "hebb", "decayLayer", "decayNeuron"] {
        let json = match rule {
            "decayLayer" => decayed("layer"),
            "decayNeuron" => decayed("neuron"),
            _ => format!(r#"{{"type":"{rule}"}}"#),
        };
        for g in ["synapse", "neuron", "layer", "global"] {
            for interval in [None, Some(1), Some(2), Some(5)] {
                let cfg = regression(
                    &json,
                    &format!(r#","plasticity":{{"granularity":"{g}","init":0.02,"hiddenMultiplier":1.5}}"#),
                );
                let pass = compare(cfg, 1, interval);
                if test_device() == "cpu" {
                    // Hebb's steps always run backwards here; Oja's in short segments, where the product
                    // of its decay's gains stays small.
                    let ran_back = if rule == "hebb" {
                        pass.unstepped == 5
                    } else {
                        pass.unstepped > 0 || !matches!(interval, Some(1 | 2))
                    };
                    assert!(ran_back, "{rule}, {g}, {interval:?}: {pass:?}");
                }
            }
        }
    }
}

#[test]
fn every_feedback_kind_signal_and_map() {
    for kind in ["learned", "random", "none", "derivative"] {
        for signal in ["error", "target"] {
            for detach in [false, true] {
                compare(
                    flp(&format!(r#","feedback":{{"type":"{kind}","signal":"{signal}","detachSignal":{detach}}}"#)),
                    2,
                    Some(2),
                );
            }
        }
    }
    compare(flp(r#","feedback":{"layers":2,"activation":"linear","strength":{"init":0.3}}"#), 3, None);
    compare(flp(r#","feedback":{"layers":3,"strength":{"init":0.8,"learned":false}}"#), 4, Some(3));
}

#[test]
fn frozen_front_and_reinitialised_weights() {
    compare(flp(r#","rln":1"#), 5, Some(2));
    compare(flp(r#","rln":1,"plasticInit":"reinit""#), 6, None);
}

#[test]
fn classification_options() {
    for signal in ["target", "crossEntropy", "error"] {
        for clamp in [true, false] {
            let cfg = classification(
                r#"{"type":"oja"}"#,
                &format!(
                    r#","plasticity":{{"init":0.05,"hiddenMultiplier":3}},"feedback":{{"signal":"{signal}","clampOutput":{clamp}}}"#
                ),
            );
            compare(cfg, 7, Some(2));
        }
    }
    for reset in ["episodeClasses", "all"] {
        let cfg =
            classification(r#"{"type":"hebb"}"#, &format!(r#","plasticity":{{"init":0.05}},"outputReset":"{reset}""#));
        compare(cfg, 8, None);
    }
    compare(
        classification(r#"{"type":"oja"}"#, r#","plasticity":{"init":0.05},"feedback":{"type":"derivative"}"#),
        9,
        Some(1),
    );
    for g in ["layer", "neuron"] {
        let extra = r#","plasticity":{"init":0.05,"hiddenMultiplier":3},"feedback":{"signal":"crossEntropy"}"#;
        compare(classification(&decayed(g), extra), 9, Some(2));
        let derivative = r#","plasticity":{"init":0.05},"feedback":{"type":"derivative"}"#;
        compare(classification(&decayed(g), derivative), 9, None);
    }
}

#[test]
fn first_order_and_truncated() {
    for g in [MetaGradient::FirstOrder, MetaGradient::Truncated { steps: 2 }] {
        for kind in ["learned", "derivative", "none"] {
            let mut cfg = flp(&format!(r#","rln":1,"feedback":{{"type":"{kind}"}}"#));
            cfg.meta.gradient = g;
            let pass = compare(cfg, 10, Some(2));
            // Segments [0, 1], [2, 3], [4]: truncated to the last 2 steps, the first is all constants.
            if matches!(g, MetaGradient::Truncated { .. }) {
                assert_eq!(pass.skipped, 2, "{kind}: {pass:?}");
            }
        }
        for decay in ["layer", "neuron"] {
            let mut cfg = regression(&decayed(decay), r#","rln":1,"plasticity":{"init":0.05}"#);
            cfg.meta.gradient = g;
            compare(cfg, 10, Some(2));
        }
    }
}

#[test]
fn sgd_every_step_size_and_meta_gradient_mode() {
    for sizes in ["fixed", "perParameter", "perLayer"] {
        for biases in [true, false] {
            let rule = format!(r#"{{"type":"sgd","lr":0.1,"stepSizes":"{sizes}","biases":{biases}}}"#);
            compare(regression(&rule, r#","rln":1"#), 13, Some(2));
            compare(regression(&rule, ""), 14, None);
            compare(classification(&rule, r#","outputReset":"episodeClasses""#), 15, Some(3));
        }
    }
    for g in [MetaGradient::FirstOrder, MetaGradient::Truncated { steps: 2 }] {
        let mut cfg = regression(r#"{"type":"sgd","lr":0.1,"stepSizes":"perLayer"}"#, r#","rln":1"#);
        cfg.meta.gradient = g;
        compare(cfg, 16, Some(2));
    }
}

#[test]
fn autograd_stays_available() {
    for rule in [r#"{"type":"oja"}"#, r#"{"type":"sgd","lr":0.1}"#] {
        let mut cfg = regression(rule, r#","plasticity":{"init":0.05}"#);
        assert!(uses_adjoint(&Learner::new(cfg.clone()).unwrap()), "auto takes the reverse pass for {rule}");
        cfg.meta.backward = Backward::Autograd;
        assert!(!uses_adjoint(&Learner::new(cfg).unwrap()));
    }
}

/// The reverse pass against central differences of the loss, independently of autograd.
#[test]
fn finite_differences() {
    let mut learner = Learner::new(flp(r#","rln":1,"feedback":{"layers":2}"#)).unwrap();
    jitter_biases(&mut learner, 11);
    let batch = batch(&learner, 2, 4, 3, 4, 11);
    let (_, grads) = meta_gradient(&mut learner, &batch).unwrap();
    let h = 1e-6;
    for (index, grad) in grads {
        let flat = grad.view([-1]);
        let n = flat.size()[0];
        for k in [0, n - 1] {
            let analytic = flat.double_value(&[k]);
            nudge(&mut learner, index, k, h);
            let up = meta_gradient(&mut learner, &batch).unwrap().0;
            nudge(&mut learner, index, k, -2.0 * h);
            let down = meta_gradient(&mut learner, &batch).unwrap().0;
            nudge(&mut learner, index, k, h);
            let numeric = (up - down) / (2.0 * h);
            let err = (analytic - numeric).abs() / (1e-6 + analytic.abs().max(numeric.abs()));
            let name = &learner.params.iter().nth(index).unwrap().name;
            assert!(err < 1e-4, "{name}[{k}]: reverse pass {analytic:e}, finite differences {numeric:e}");
        }
    }
}

/// Layers wide enough for the fused loops to split rows over threads.
#[test]
fn fused_loops_split_over_threads() {
    tch::set_num_threads(2);
    for (rule, g) in [("oja", "synapse"), ("oja", "neuron"), ("hebb", "global")] {
        let cfg = config(&format!(
            r#"{{"inputShape":[4],"layers":[{{"type":"linear","units":70}},{{"type":"linear","units":90}},{{"type":"linear","units":2}}],
                "task":"regression","rule":{{"type":"{rule}"}},"plasticity":{{"granularity":"{g}","init":0.01}},"dtype":"float64","device":"cpu","seed":3}}"#
        ));
        compare(cfg, 12, Some(2));
    }
}

/// Batches as wide as the paper's (32 points) or wider, not only a few points: Oja's decay and every
/// outer product sum over them.
#[test]
fn fused_loops_on_wide_batches() {
    for points in [20, 33] {
        compare_batch(wide_net(0.001), 12, Some(2), points); // a smaller rate: Oja's decay sums over the batch
    }
}

/// The fused adjoint loop's own outputs against libtorch operations in float64, its rows split over two
/// threads: with G' = G + dᵀx (the part owed to G), the decay r = Σ_b ã² (Oja) or γ ⊙ r (a learned
/// coefficient per layer or per row), the multiplier m and the row factor c (none, or one per row),
/// Q = c P ⊙ G', Oja's rowsum(Q ⊙ W), the rate gradient m c G' ⊙ (ãᵀa − r ⊙ W) summed over episodes, the
/// row factor's gradient Σ_i m P ⊙ G' ⊙ (ãᵀa − r ⊙ W), and G' − m Q ⊙ r written back.
#[test]
fn fused_adjoint_loop_outputs() {
    use metaplastic_core::kernels::Decay;
    tch::set_num_threads(2);
    let (e, b, o, i) = (2, 20, 70, 45);
    let (w, g, post, pre) = (randn(&[e, o, i], 1), randn(&[e, o, i], 2), randn(&[e, b, o], 3), randn(&[e, b, i], 4));
    let (d, x) = (randn(&[e, b, o], 5), randn(&[e, b, i], 6));
    let p = randn(&[o, i], 7).abs() * 0.01;
    let m = 0.7;
    let g_full = &g + d.transpose(1, 2).matmul(&x);
    let oja_r = post.square().sum_dim_intlist([1i64].as_slice(), false, None::<Kind>).unsqueeze(2); // [E, O, 1]
    let (per_layer, per_row) = (Tensor::from(0.3f64), randn(&[o, 1], 8).sigmoid());
    for gamma in [None, Some(&per_layer), Some(&per_row)] {
        let decay = gamma.map_or(Decay::Oja, Decay::Scaled);
        let r = gamma.map_or_else(|| oja_r.shallow_clone(), |g| &oja_r * g);
        let term = (post.transpose(1, 2).matmul(&pre) - &r * &w) * m; // m (ãᵀa − r ⊙ W)
        for c in [None, Some(randn(&[e, o], 9).abs() + 0.5)] {
            let mut g_out = g.copy();
            let mut rate_grad = Tensor::zeros([o, i], (Kind::Double, Device::Cpu));
            let out = metaplastic_core::kernels::local_step_adjoint(
                &mut g_out,
                true,
                &w,
                false,
                &post,
                &pre,
                &p,
                decay,
                m,
                c.as_ref(),
                &mut rate_grad,
                Some((&d, &x)),
            )
            .unwrap();
            let c3 = c.as_ref().map_or_else(|| Tensor::from(1.0f64), |c| c.unsqueeze(2)); // broadcast to [E, O, I]
            let q = &g_full * &p * &c3;
            let mut expected = vec![
                ("Q", out.q.shallow_clone(), q.shallow_clone()),
                ("rowsum", out.rowsum.expect("Oja"), (&q * &w).sum_dim_intlist([2i64].as_slice(), false, None::<Kind>)),
                (
                    "rate gradient",
                    rate_grad,
                    (&g_full * &term * &c3).sum_dim_intlist([0i64].as_slice(), false, None::<Kind>),
                ),
                ("G written back", g_out, &g_full - &q * &r * m),
            ];
            if c.is_some() {
                expected.push((
                    "row factor gradient",
                    out.scale_grad.expect("a row factor"),
                    (&g_full * &term * &p).sum_dim_intlist([2i64].as_slice(), false, None::<Kind>),
                ));
            }
            for (what, got, want) in expected {
                let scale = want.abs().max().double_value(&[]);
                assert!(
                    max_abs_diff(&got, &want) <= 1e-12 * scale,
                    "{what} (row factor {}, γ {:?}): {} off (scale {scale})",
                    c.is_some(),
                    gamma.map(|g| g.size()),
                    max_abs_diff(&got, &want)
                );
            }
        }
    }
}

/// Oja's rule on layers of 70 and 90 units (whole vector chunks and a remainder), plastic rate `rate`.
fn wide_net(rate: f64) -> LearnerConfig {
    wide_rule(r#"{"type":"oja"}"#, rate)
}

/// `wide_net` with the rule `rule`.
fn wide_rule(rule: &str, rate: f64) -> LearnerConfig {
    config(&format!(
        r#"{{"inputShape":[4],"layers":[{{"type":"linear","units":70}},{{"type":"linear","units":90}},{{"type":"linear","units":2}}],
            "task":"regression","rule":{rule},"plasticity":{{"granularity":"synapse","init":{rate}}},"dtype":"float64","device":"cpu","seed":3}}"#
    ))
}

/// Each compiled variant of the fused loops (AVX-512, AVX2, baseline; those this CPU runs) against
/// autograd, on rows with whole vector chunks and a remainder (70, 90 inputs per row).
#[test]
fn every_vector_width_of_the_fused_loops() {
    for cap in ["baseline", "avx2", "widest"] {
        metaplastic_core::kernels::limit_vector_width(cap);
        for (points, rate) in [(3, 0.01), (20, 0.001)] {
            compare_one(
                wide_net(rate),
                12,
                AdjointOptions { interval: Some(3), fused: Some(true), ..Default::default() },
                points,
            );
        }
    }
    metaplastic_core::kernels::limit_vector_width("widest");
}

/// 100 float32 meta-steps through each path end at the same parameters, up to float32 rounding.
#[test]
fn float32_training_tracks_autograd() {
    use metaplastic_core::meta::Adam;
    // Oja, and Hebb as the recipe that trains runs it (normalised by the presynaptic energy: without a
    // decay, plain Hebb on these activities overflows within an episode). On the CPU the reverse pass
    // runs their steps backwards (counted below).
    for (rule, plasticity) in [("oja", r#"{"init":0.01}"#), ("hebb", r#"{"init":0.01,"normalize":"presynaptic"}"#)] {
        let json = r#"{"inputShape":[4],"layers":[{"type":"linear","units":16},{"type":"linear","units":16},{"type":"linear","units":1}],
            "task":"regression","rule":{"type":"RULE"},"plasticity":PLASTICITY,"meta":{"lr":{"forward":1e-3,"feedback":1e-3,"plasticity":1e-4,"strength":1e-3}},
            "dtype":"float32","device":"DEVICE","seed":5}"#;
        let train = |backward: Backward| -> (Learner, usize) {
            let mut cfg =
                config(&json.replace("DEVICE", &test_device()).replace("RULE", rule).replace("PLASTICITY", plasticity));
            cfg.meta.backward = backward;
            let mut learner = Learner::new(cfg).unwrap();
            let mut adam = Adam::default();
            let mut unstepped = 0;
            for step in 0..100 {
                let b = batch(&learner, 2, 6, 4, 8, 100 + step);
                let report = adam.step(&mut learner, &b).unwrap();
                assert!(!report.skipped, "{rule}: step {step} was skipped ({backward:?}): {report:?}");
                if backward == Backward::Adjoint {
                    unstepped += adjoint::last_pass().unstepped;
                }
            }
            (learner, unstepped)
        };
        let (fast, unstepped) = train(Backward::Adjoint);
        if test_device() == "cpu" {
            assert!(unstepped > 0, "{rule}: no step ran backwards");
        }
        let (reference, _) = train(Backward::Autograd);
        let mut moved = 0.0f64;
        for (a, b) in fast.params.iter().zip(reference.params.iter()) {
            let scale = b.tensor.abs().max().double_value(&[]).max(1e-3);
            let diff = max_abs_diff(&a.tensor, &b.tensor);
            assert!(
                diff / scale < 1e-3,
                "{rule}, {}: differs by {diff:e} (scale {scale:e}) after 100 float32 meta-steps",
                a.name
            );
            moved = moved.max(scale);
        }
        assert!(moved > 0.0);
    }
}

/// The reverse pass stops at the next inner step once the learner's cancel flag is set.
#[test]
fn cancellation_reaches_the_reverse_pass() {
    use std::sync::{atomic::AtomicBool, Arc};
    for rule in [r#"{"type":"oja"}"#, r#"{"type":"sgd","lr":0.1}"#] {
        let mut learner = Learner::new(regression(rule, r#","plasticity":{"init":0.05}"#)).unwrap();
        assert!(uses_adjoint(&learner));
        let b = batch(&learner, 2, 5, 3, 4, 17);
        learner.cancel = Some(Arc::new(AtomicBool::new(true)));
        let err = meta_gradient(&mut learner, &b).expect_err("a cancelled meta-gradient is an error");
        assert_eq!(err.code(), "E_CANCELLED", "{rule}: {err}");
    }
}

/// The recipe options of the local rules (rates' parameterisation and scale, update normalisation, Hebb
/// on the first step): every combination through the reverse pass equals autograd.
#[test]
fn rate_parameterisations_and_update_normalisations() {
    for normalize in ["none", "batch", "presynaptic", "bounded"] {
        for rule in ["oja", "hebb"] {
            for (param, init) in [("linear", 0.05), ("log", 0.05)] {
                let extra = format!(
                    r#","rln":1,"plasticity":{{"init":{init},"parameterization":"{param}","normalize":"{normalize}","hiddenMultiplier":2}}"#
                );
                compare(regression(&format!(r#"{{"type":"{rule}"}}"#), &extra), 18, Some(2));
            }
        }
        let scaled = format!(
            r#","plasticity":{{"init":0.05,"layerScale":true,"parameterization":"log","normalize":"{normalize}","hebbFirstStep":true}},"feedback":{{"activation":"linear","outputIdentity":true}}"#
        );
        compare(regression(r#"{"type":"oja"}"#, &scaled), 19, None);
        let mut first = regression(
            r#"{"type":"oja"}"#,
            &format!(r#","rln":1,"plasticity":{{"init":0.05,"normalize":"{normalize}"}}"#),
        );
        first.meta.gradient = MetaGradient::FirstOrder;
        compare(first, 10, Some(2));
        let cls =
            classification(r#"{"type":"oja"}"#, &format!(r#","plasticity":{{"init":0.05,"normalize":"{normalize}"}}"#));
        compare(cls, 21, Some(3));
        for g in ["layer", "neuron"] {
            let extra = format!(
                r#","rln":1,"plasticity":{{"init":0.05,"parameterization":"log","normalize":"{normalize}","hiddenMultiplier":2}}"#
            );
            compare(regression(&decayed(g), &extra), 18, Some(2));
            compare(regression(&decayed(g), &scaled), 19, None);
        }
    }
}

/// Tasks shared over threads return results in task order, and a task that fails or panics on a worker
/// thread comes back as an error instead of ending the process.
#[test]
fn tasks_over_threads_keep_order_and_report_failures() {
    use metaplastic_core::kernels::parallel_tasks;
    tch::set_num_threads(2);
    let sizes = [5, 50, 500, 50];
    assert_eq!(parallel_tasks(&sizes, |k| Ok(k * 10)).unwrap(), vec![0, 10, 20, 30]);
    let panicked = parallel_tasks(&sizes, |k| if k == 2 { panic!("layer two broke") } else { Ok(k) });
    assert!(matches!(&panicked, Err(e) if e.to_string().contains("layer two broke")), "{panicked:?}");
    let failed =
        parallel_tasks(&sizes, |k| if k == 3 { Err(metaplastic_core::Error::Internal("no".into())) } else { Ok(k) });
    assert!(failed.is_err());
}

/// Pipelined tasks start only once the producer has released them, come back in task order, and a
/// failing or panicking task, or a producer that fails half-way, comes back as an error.
#[test]
fn pipelined_tasks_wait_for_their_release() {
    use metaplastic_core::kernels::pipelined_tasks;
    use std::sync::atomic::{AtomicBool, Ordering};
    tch::set_num_threads(2);
    for threads in [1, 2] {
        tch::set_num_threads(threads);
        let ready: Vec<AtomicBool> = (0..6).map(|_| AtomicBool::new(false)).collect();
        let produce = |release: &dyn Fn(usize)| {
            for k in (0..6).rev() {
                std::thread::sleep(std::time::Duration::from_millis(2));
                ready[k].store(true, Ordering::SeqCst);
                release(k);
            }
            Ok(())
        };
        let out = pipelined_tasks(6, produce, |k| Ok((k * 10, ready[k].load(Ordering::SeqCst)))).unwrap();
        assert_eq!(out, (0..6).map(|k| (k * 10, true)).collect::<Vec<_>>(), "{threads} thread(s)");
        let release_all = |release: &dyn Fn(usize)| {
            (0..3).for_each(release);
            Ok(())
        };
        let panicked = pipelined_tasks(3, release_all, |k| if k == 1 { panic!("task one broke") } else { Ok(k) });
        assert!(matches!(&panicked, Err(e) if e.to_string().contains("task one broke")), "{panicked:?}");
        let half = pipelined_tasks(
            3,
            |release| {
                release(2);
                Err(metaplastic_core::Error::Internal("producer stopped".into()))
            },
            Ok,
        );
        assert!(matches!(&half, Err(e) if e.to_string().contains("producer stopped")), "{half:?}");
        let unreleased = pipelined_tasks(
            3,
            |release| {
                release(0);
                Ok(())
            },
            Ok,
        );
        assert!(matches!(&unreleased, Err(e) if e.to_string().contains("never released")), "{unreleased:?}");
    }
    tch::set_num_threads(2);
}

/// The adjoint loop running an Oja or Hebb step backwards: from the weights after `local_step` it gets
/// back the weights before it (float64), and every output it gives is the one it gives from those.
#[test]
fn fused_adjoint_loop_runs_the_step_backwards() {
    use metaplastic_core::kernels::{local_step, local_step_adjoint, Decay};
    tch::set_num_threads(2);
    let (e, b, o, i) = (2, 20, 70, 45);
    let (w, post, pre) = (randn(&[e, o, i], 1), randn(&[e, b, o], 3) * 0.5, randn(&[e, b, i], 4));
    let c = randn(&[e, o], 8).abs() + 0.5;
    let gamma = randn(&[o, 1], 10).sigmoid();
    for (decay, m, p) in [
        (Decay::Oja, 1.0, randn(&[o, i], 7).abs() * 0.01),
        (Decay::Oja, 0.5, randn(&[o, 1], 9) * 0.01),
        (Decay::Scaled(&gamma), 1.0, randn(&[o, i], 7).abs() * 0.05),
        (Decay::None, 2.0, Tensor::from(0.003f64)),
    ] {
        let oja = decay.is_on();
        let after = local_step(&w, &post, &pre, &p, decay, m, Some(&c)).unwrap();
        let outputs = |weights: &Tensor, unstep: bool| {
            let mut g = randn(&[e, o, i], 2);
            let mut rate_grad = Tensor::zeros([o, i], (Kind::Double, Device::Cpu));
            let out = local_step_adjoint(
                &mut g,
                true,
                weights,
                unstep,
                &post,
                &pre,
                &p,
                decay,
                m,
                Some(&c),
                &mut rate_grad,
                None,
            )
            .unwrap();
            vec![
                ("Q", out.q),
                ("rowsum", out.rowsum.unwrap_or_else(|| Tensor::zeros([1], (Kind::Double, Device::Cpu)))),
                ("row factor gradient", out.scale_grad.unwrap()),
                ("G", g),
                ("rate gradient", rate_grad),
            ]
        };
        let buffer = after.copy();
        let backwards = outputs(&buffer, true);
        let scale = w.abs().max().double_value(&[]);
        assert!(max_abs_diff(&buffer, &w) <= 1e-13 * scale, "oja {oja}: W back {} off", max_abs_diff(&buffer, &w));
        assert!(max_abs_diff(&after, &w) > 1e-6 * scale, "the step changed W: nothing was run backwards");
        for ((what, got), (_, want)) in backwards.iter().zip(outputs(&w, false)) {
            let tol = 1e-12 * want.abs().max().double_value(&[]).max(1e-300);
            assert!(max_abs_diff(got, &want) <= tol, "oja {oja}, {what}: {} off", max_abs_diff(got, &want));
        }
    }
}

/// A row factor given as a view, one value per episode broadcast along the rows (stride 0, as the
/// presynaptic normalisation gives it), reads exactly what its contiguous copy reads: in the step, the
/// adjoint loop and the unstep gain.
#[test]
fn fused_loops_read_a_broadcast_row_factor_by_its_strides() {
    use metaplastic_core::kernels::{local_step, local_step_adjoint, unstep_gain};
    let (e, b, o, i) = (3, 8, 37, 21);
    let (w, post, pre) = (randn(&[e, o, i], 11), randn(&[e, b, o], 12) * 0.5, randn(&[e, b, i], 13));
    let p = randn(&[o, i], 14).abs() * 0.01;
    let per_episode = randn(&[e, 1], 15).abs() + 0.5;
    let view = per_episode.expand([e, o], false);
    assert_eq!(view.stride(), vec![1, 0], "the factor is a broadcast view");
    let copy = view.contiguous();
    for oja in [true, false] {
        let step = |c: &Tensor| local_step(&w, &post, &pre, &p, oja, 0.7, Some(c)).unwrap();
        assert_eq!(max_abs_diff(&step(&view), &step(&copy)), 0.0, "oja {oja}: step");
        let adjoint = |c: &Tensor| {
            let mut g = randn(&[e, o, i], 16);
            let mut rate_grad = Tensor::zeros([o, i], (Kind::Double, Device::Cpu));
            let out =
                local_step_adjoint(&mut g, true, &w, false, &post, &pre, &p, oja, 0.7, Some(c), &mut rate_grad, None)
                    .unwrap();
            vec![out.q, out.scale_grad.unwrap(), g, rate_grad]
        };
        for (got, want) in adjoint(&view).iter().zip(adjoint(&copy)) {
            assert_eq!(max_abs_diff(got, &want), 0.0, "oja {oja}: adjoint loop");
        }
    }
    let gain = |c: &Tensor| unstep_gain(&post, 0.7, Some(c), &[(0.0, 0.01)]).unwrap();
    assert_eq!(gain(&view), gain(&copy));
    // Changing one episode's value changes that episode's rows only: the view is read per episode.
    let other = per_episode.copy();
    let _ = other.get(1).fill_(9.0);
    let changed = local_step(&w, &post, &pre, &p, false, 0.7, Some(&other.expand([e, o], false))).unwrap();
    let base = local_step(&w, &post, &pre, &p, false, 0.7, Some(&view)).unwrap();
    assert_eq!(max_abs_diff(&changed.get(0), &base.get(0)), 0.0);
    assert!(max_abs_diff(&changed.get(1), &base.get(1)) > 0.0);
    assert_eq!(max_abs_diff(&changed.get(2), &base.get(2)), 0.0);
}

/// `unstep_gain` on a hand example: rows with r = Σ_b ã² = 1 and 4, c = 1 and 0.5, m = 2, so
/// m c r = 2 and 4; with rates in [0.05, 0.1] that is s r in [0.1, 0.2] and [0.2, 0.4], the worst
/// |1 − s r| is 0.6: gain 1/0.6. Rates reaching 1/(m c r) make it infinite, negative rates give 1.
#[test]
fn unstep_gain_on_a_hand_example() {
    use metaplastic_core::kernels::unstep_gain;
    let post = Tensor::from_slice(&[1.0f64, 2.0, 0.0, 0.0]).view([1, 2, 2]); // b = 0: (1, 2), b = 1: (0, 0)
    let c = Tensor::from_slice(&[1.0f64, 0.5]).view([1, 2]);
    let gain = unstep_gain(&post, 2.0, Some(&c), &[(0.05, 0.1)]).unwrap();
    assert!((gain - 1.0 / 0.6).abs() < 1e-12, "{gain}");
    let per_row = unstep_gain(&post, 2.0, Some(&c), &[(0.05, 0.1), (0.0, 0.05)]).unwrap(); // row 1: s r ≤ 0.2
    assert!((per_row - 1.0 / 0.8).abs() < 1e-12, "{per_row}");
    assert_eq!(unstep_gain(&post, 2.0, Some(&c), &[(0.05, 0.3)]).unwrap(), f64::INFINITY); // row 1 reaches 1.2
    assert_eq!(unstep_gain(&post, 2.0, None, &[(-0.3, -0.1)]).unwrap(), 1.0);
    let nan = Tensor::from_slice(&[f64::NAN, 2.0, 0.0, 0.0]).view([1, 2, 2]);
    assert_eq!(unstep_gain(&nan, 2.0, None, &[(0.01, 0.01)]).unwrap(), f64::INFINITY);
}

/// Rates large enough that running Oja's steps backwards could magnify rounding beyond
/// `MAX_UNSTEP_GAIN`: the reverse pass recomputes those segments instead, and still equals autograd.
#[test]
fn large_rates_recompute_instead_of_running_backwards() {
    if test_device() != "cpu" {
        return;
    }
    let small = compare_batch(wide_net(0.0001), 12, Some(2), 20);
    assert_eq!(small.unstepped, 5, "{small:?}");
    let large = compare_batch(wide_net(0.001), 12, Some(2), 20);
    assert!(large.recomputed > 0 && large.rejected == 0, "the gains alone send segments to recomputation: {large:?}");
    // A small learned decay coefficient shrinks the decay term, and with it the gain: the same rates then
    // run backwards.
    let decayed = compare_batch(
        wide_rule(r#"{"type":"oja","decay":{"init":0.05,"granularity":"neuron"}}"#, 0.001),
        12,
        Some(2),
        20,
    );
    assert_eq!(decayed.unstepped, 5, "{decayed:?}");
}

/// Updates that dwarf the weights (a classification net whose weights grow by orders of magnitude):
/// W' − s ãᵀa cancels, the weights run back miss the checkpoint, and the segment is recomputed, the
/// rule's gradients going back to where they were before it.
#[test]
fn segments_that_miss_their_checkpoint_are_recomputed() {
    if test_device() != "cpu" {
        return;
    }
    let cfg = classification(
        r#"{"type":"oja"}"#,
        r#","plasticity":{"init":0.05,"hiddenMultiplier":3},"feedback":{"signal":"error","clampOutput":true}"#,
    );
    let pass = compare(cfg, 7, Some(2));
    assert!(pass.rejected > 0, "{pass:?}");
    // With a learned decay coefficient, and the last step not kept (the budget holds 4 steps of 1 episode ×
    // 3 points × 9 units per group): it is recomputed first, then the segment of steps 2 and 3 misses its
    // checkpoint, and the rule's gradients go back to where they were after step 4, γ's included.
    let cfg = classification(
        r#"{"type":"oja","decay":{"init":0.9,"granularity":"neuron"}}"#,
        r#","plasticity":{"init":0.05,"hiddenMultiplier":8},"feedback":{"signal":"error","clampOutput":true}"#,
    );
    let opts = AdjointOptions {
        interval: Some(2),
        fused: Some(true),
        unstep: Some(true),
        keep_budget: Some(2 * 4 * 3 * 9 * 8),
        episode_groups: Some(2),
    };
    compare_one(cfg, 7, opts, 3);
    let pass = adjoint::last_pass();
    assert_eq!((pass.recomputed, pass.rejected), (5, 2), "{pass:?}");
}

/// `meta.runBackwards` decides whether the meta-step's reverse pass runs steps backwards; both ways
/// give the same meta-gradient.
#[test]
fn run_backwards_is_a_configuration_option() {
    if test_device() != "cpu" {
        return;
    }
    let mut grads = Vec::new();
    for on in [true, false] {
        let mut cfg = regression(r#"{"type":"hebb"}"#, r#","plasticity":{"init":0.005}"#);
        cfg.meta.backward = Backward::Adjoint;
        cfg.meta.run_backwards = on;
        let mut learner = Learner::new(cfg).unwrap();
        let batch = batch(&learner, 2, 5, 3, 4, 17);
        let (_, g) = meta_gradient(&mut learner, &batch).unwrap();
        let pass = adjoint::last_pass();
        assert_eq!(pass.unstepped, if on { 5 } else { 0 }, "runBackwards {on}: {pass:?}");
        grads.push(g);
    }
    for ((_, a), (_, b)) in grads[0].iter().zip(&grads[1]) {
        assert!(max_abs_diff(a, b) <= 1e-10 * b.abs().max().double_value(&[]).max(1e-300));
    }
}

/// The kept pre-activations stay within their memory budget: the steps after it are recomputed, and the
/// meta-gradient is the same. Here each step keeps 2 episodes × 3 points × 11 units of float64 (528 bytes).
#[test]
fn kept_pre_activations_stay_within_their_budget() {
    if test_device() != "cpu" {
        return;
    }
    let cfg = regression(r#"{"type":"hebb"}"#, r#","plasticity":{"init":0.01}"#);
    for (budget, unstepped) in [(1200, 2), (528 * 5, 5), (100, 0)] {
        let opts = AdjointOptions {
            interval: Some(1),
            fused: Some(true),
            unstep: Some(true),
            keep_budget: Some(budget),
            episode_groups: Some(1),
        };
        compare_one(cfg.clone(), 18, opts, 3);
        let pass = adjoint::last_pass();
        assert_eq!((pass.unstepped, pass.recomputed), (unstepped, 5 - unstepped), "budget {budget}: {pass:?}");
    }
}

/// The meta-batch in groups of episodes run side by side: each group's share of the loss, its adjoints,
/// its rule's gradients and its features' adjoints add up to the whole batch's, for groups of unequal
/// size, a learning front (features with adjoints), re-drawn plastic weights (one draw for the whole
/// batch), output resets per episode and OML's rule; and each group keeps its share of the budget.
#[test]
fn episode_groups_add_up_to_the_whole_meta_batch() {
    let configs = [
        flp(r#","rln":1,"plasticInit":"reinit""#),
        regression(r#"{"type":"hebb"}"#, r#","plasticity":{"init":0.02,"normalize":"presynaptic"}"#),
        classification(r#"{"type":"oja"}"#, r#","plasticity":{"init":0.05},"outputReset":"episodeClasses""#),
        regression(r#"{"type":"sgd","lr":0.1,"stepSizes":"perParameter"}"#, r#","rln":1"#),
    ];
    for cfg in configs {
        for groups in [1, 2, 3, 5] {
            let fused = test_device() == "cpu";
            compare_episodes(
                cfg.clone(),
                19,
                AdjointOptions {
                    interval: Some(2),
                    fused: Some(fused),
                    episode_groups: Some(groups),
                    ..Default::default()
                },
                3,
                3,
            );
            assert_eq!(adjoint::last_pass().groups, groups.min(3), "{groups} groups of 3 episodes");
        }
    }
    if test_device() == "cpu" {
        // 3 episodes in 2 groups (2 + 1): a kept step of the larger takes 2 × 3 × 11 float64 (528 bytes).
        let cfg = regression(r#"{"type":"hebb"}"#, r#","plasticity":{"init":0.01}"#);
        let opts = AdjointOptions {
            interval: Some(1),
            fused: Some(true),
            unstep: Some(true),
            keep_budget: Some(2 * 528 * 3),
            episode_groups: Some(2),
        };
        compare_episodes(cfg, 20, opts, 3, 3);
        let pass = adjoint::last_pass();
        assert_eq!((pass.unstepped, pass.recomputed), (3, 2), "the larger group keeps 3 steps in its half: {pass:?}");
    }
}
