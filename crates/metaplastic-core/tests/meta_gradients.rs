//! Meta-gradients checked in f64: against central finite differences for every trainable parameter
//! group (second-order, the default), and against their own definitions for first-order and truncated.
mod common;
use common::*;
use metaplastic_core::config::{LearnerConfig, MetaGradient};
use metaplastic_core::inner::StepMode;
use metaplastic_core::learner::{EpisodeBatch, Learner};
use metaplastic_core::meta::meta_gradient;
use metaplastic_core::params::Group;
use std::collections::HashSet;
use tch::{Kind, Tensor};

fn h() -> f64 {
    std::env::var("FD_H").ok().and_then(|v| v.parse().ok()).unwrap_or(1e-6)
}

fn loss_of(learner: &mut Learner, batch: &EpisodeBatch) -> f64 {
    meta_gradient(learner, batch).unwrap().0
}

/// Compares analytic and finite-difference derivatives on a few entries of every trainable parameter.
/// Returns the set of groups that were checked.
fn check_fd(cfg: LearnerConfig, seed: i64) -> HashSet<Group> {
    check_fd_named(cfg, seed).0
}

/// `check_fd`, also returning the names of the parameters checked with a gradient that is not zero.
fn check_fd_named(cfg: LearnerConfig, seed: i64) -> (HashSet<Group>, HashSet<String>) {
    let mut learner = Learner::new(cfg).unwrap();
    jitter_biases(&mut learner, seed);
    jitter_decays(&mut learner, seed);
    let batch = batch(&learner, 2, 3, 2, 4, seed);
    let (_, grads) = meta_gradient(&mut learner, &batch).unwrap();
    let mut groups = HashSet::new();
    let mut names = HashSet::new();
    for (index, grad) in grads {
        let name = learner.params.iter().nth(index).unwrap().name.clone();
        let group = learner.params.iter().nth(index).unwrap().group;
        let flat = grad.view([-1]);
        let n = flat.size()[0];
        let mut worst: f64 = 0.0;
        let mut largest: f64 = 0.0;
        // Entries a thousand times smaller than the parameter's largest are compared on that scale: their
        // finite differences are at the level of rounding (about 1e-10 here).
        let floor = 1e-3 * flat.abs().max().double_value(&[]);
        for &k in [0, n / 2, n - 1].iter().collect::<HashSet<_>>() {
            let analytic = flat.double_value(&[k]);
            nudge(&mut learner, index, k, h());
            let up = loss_of(&mut learner, &batch);
            nudge(&mut learner, index, k, -2.0 * h());
            let down = loss_of(&mut learner, &batch);
            nudge(&mut learner, index, k, h());
            let numeric = (up - down) / (2.0 * h());
            let err = (analytic - numeric).abs() / (1e-6 + analytic.abs().max(numeric.abs()).max(floor));
            if std::env::var_os("FD_DEBUG").is_some() {
                eprintln!("{name}[{k}]: analytic {analytic:e} numeric {numeric:e}");
            }
            worst = worst.max(err);
            largest = largest.max(analytic.abs());
        }
        assert!(
            worst < 1e-4,
            "{name}: relative error {worst} between meta-gradient and finite differences (largest {largest})"
        );
        if largest > 1e-9 {
            groups.insert(group);
            names.insert(name);
        }
    }
    (groups, names)
}

fn flp(granularity: &str, signal: &str) -> LearnerConfig {
    regression(
        r#"{"type":"oja"}"#,
        &format!(
            r#","plasticity":{{"granularity":"{granularity}","init":0.05}},"feedback":{{"signal":"{signal}","strength":{{"init":0.5}}}}"#
        ),
    )
}

fn all_groups() -> HashSet<Group> {
    Group::ALL.into_iter().collect()
}

#[test]
fn flp_error_signal_every_granularity() {
    for g in ["synapse", "neuron", "layer", "global"] {
        assert_eq!(check_fd(flp(g, "error"), 1), all_groups(), "granularity {g}");
    }
}

#[test]
fn flp_target_signal() {
    assert_eq!(check_fd(flp("synapse", "target"), 2), all_groups());
    assert_eq!(check_fd(flp("neuron", "target"), 3), all_groups());
}

#[test]
fn flp_deeper_feedback_frozen_front_and_hebb() {
    let cfg = regression(
        r#"{"type":"hebb"}"#,
        r#","rln":1,"plasticity":{"init":0.05,"hiddenMultiplier":3},"feedback":{"layers":2}"#,
    );
    assert_eq!(check_fd(cfg, 4), all_groups());
}

#[test]
fn flp_classification_with_conv_front() {
    let cfg =
        classification(r#"{"type":"oja"}"#, r#","plasticity":{"init":0.05},"feedback":{"signal":"crossEntropy"}"#);
    assert_eq!(check_fd(cfg, 5), all_groups());
    // Clamped output, target signal, output rows reset per episode.
    let cfg = classification(r#"{"type":"oja"}"#, r#","plasticity":{"init":0.05},"outputReset":"episodeClasses""#);
    let groups = check_fd(cfg, 6);
    assert!(groups.contains(&Group::Feedback) && groups.contains(&Group::Plasticity));
}

#[test]
fn oml_fixed_and_learned_step_sizes() {
    let fixed = check_fd(regression(r#"{"type":"sgd","lr":0.1}"#, r#","rln":1"#), 7);
    assert_eq!(fixed, [Group::Forward].into_iter().collect());
    for sizes in ["perParameter", "perLayer"] {
        let cfg = regression(&format!(r#"{{"type":"sgd","lr":0.1,"stepSizes":"{sizes}"}}"#), r#","rln":1"#);
        assert_eq!(check_fd(cfg, 8), [Group::Forward, Group::Plasticity].into_iter().collect(), "{sizes}");
    }
    let cls = classification(r#"{"type":"sgd","lr":0.1,"stepSizes":"perLayer"}"#, "");
    assert_eq!(check_fd(cls, 9), [Group::Forward, Group::Plasticity].into_iter().collect());
}

fn with_gradient(mut cfg: LearnerConfig, g: MetaGradient) -> LearnerConfig {
    cfg.meta.gradient = g;
    cfg
}

fn grads_by_name(cfg: LearnerConfig, batch_seed: i64) -> Vec<(String, Tensor)> {
    let mut learner = Learner::new(cfg).unwrap();
    let batch = batch(&learner, 2, 3, 2, 4, batch_seed);
    let (_, grads) = meta_gradient(&mut learner, &batch).unwrap();
    grads.into_iter().map(|(i, g)| (learner.params.iter().nth(i).unwrap().name.clone(), g)).collect()
}

fn relative_difference(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|((_, x), (_, y))| (x - y).square().sum(Kind::Double).double_value(&[])).sum();
    let den: f64 = a.iter().map(|(_, x)| x.square().sum(Kind::Double).double_value(&[])).sum();
    (num / den).sqrt()
}

#[test]
fn first_order_and_truncated_differ_from_second_order() {
    for cfg in [flp("synapse", "error"), regression(r#"{"type":"sgd","lr":0.1,"stepSizes":"perLayer"}"#, r#","rln":1"#)]
    {
        let second = grads_by_name(cfg.clone(), 21);
        let first = grads_by_name(with_gradient(cfg.clone(), MetaGradient::FirstOrder), 21);
        let trunc1 = grads_by_name(with_gradient(cfg.clone(), MetaGradient::Truncated { steps: 1 }), 21);
        let trunc_all = grads_by_name(with_gradient(cfg.clone(), MetaGradient::Truncated { steps: 3 }), 21);
        assert!(relative_difference(&second, &first) > 1e-3, "first-order equals second-order");
        assert!(relative_difference(&second, &trunc1) > 1e-3, "truncated(1) equals second-order");
        // Truncating at the full length is no truncation at all.
        assert!(relative_difference(&second, &trunc_all) < 1e-12);
    }
}

/// First-order, by definition: every update is computed from detached state, so the meta-gradient with
/// respect to the initial plastic weights is ∂L/∂W_T summed over episodes, and with respect to
/// per-synapse rates P it is Σ_e ∂L/∂W_T ⊙ (W_T − W_0)/P (each update is P ⊙ a detached term).
#[test]
fn first_order_matches_its_definition() {
    let cfg = with_gradient(flp("synapse", "error"), MetaGradient::FirstOrder);
    let mut learner = Learner::new(cfg).unwrap();
    let batch = batch(&learner, 2, 3, 2, 4, 31);
    let (_, grads) = meta_gradient(&mut learner, &batch).unwrap();
    let by_name: Vec<(String, Tensor)> =
        grads.into_iter().map(|(i, g)| (learner.params.iter().nth(i).unwrap().name.clone(), g)).collect();
    let grad = |name: &str| by_name.iter().find(|(n, _)| n == name).unwrap().1.shallow_clone();
    // Independent computation: run the trajectory without any graph, then differentiate the query loss
    // with respect to the final weights only.
    let fast0 = learner.start(2, &batch.classes, false).unwrap();
    let w0: Vec<Tensor> = fast0.w.iter().map(|w| w.copy()).collect();
    let fast = learner.adapt(fast0, &batch.support_x, &batch.support_y, |_| StepMode::Constant).unwrap();
    let final_w: Vec<Tensor> = fast.w.iter().map(|w| w.detach().set_requires_grad(true)).collect();
    let leaf =
        metaplastic_core::inner::FastWeights { w: final_w.iter().map(|w| w.shallow_clone()).collect(), b: fast.b };
    let loss = learner.loss(&leaf, &batch.query_x, &batch.query_y).unwrap().mean(Kind::Double);
    let g_final = Tensor::run_backward(&[loss], &final_w, false, false);
    for (k, l) in learner.spec.plastic().enumerate() {
        let expected_w = g_final[k].sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
        assert!(max_abs_diff(&grad(&format!("forward.{l}.weight")), &expected_w) < 1e-10, "layer {l} weights");
        let p = learner.params.at(learner.params.index_of(&format!("plasticity.{l}")).unwrap());
        let expected_p =
            (&g_final[k] * (&final_w[k].detach() - &w0[k]) / p).sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
        assert!(max_abs_diff(&grad(&format!("plasticity.{l}")), &expected_p) < 1e-9, "layer {l} plasticity");
    }
}

/// Truncated(k), by definition: the first T−k updates are constants D computed at the current
/// parameters; the loss is then a function of θ through W_0(θ) + D and the last k steps. Checked by
/// finite differences of exactly that function.
#[test]
fn truncated_matches_its_definition() {
    for cfg in [
        flp("neuron", "error"),
        regression(r#"{"type":"sgd","lr":0.1,"stepSizes":"perParameter"}"#, r#","rln":1"#),
        decayed("layer", ""),
    ] {
        let k = 1usize;
        let cfg = with_gradient(cfg, MetaGradient::Truncated { steps: k });
        let mut learner = Learner::new(cfg).unwrap();
        jitter_biases(&mut learner, 41);
        let batch = batch(&learner, 2, 3, 2, 4, 41);
        let steps = 3usize;
        let head = |t: &Tensor| t.narrow(1, 0, (steps - k) as i64);
        let tail_of = |t: &Tensor| t.narrow(1, (steps - k) as i64, k as i64);
        // D at the unperturbed parameters.
        let fast0 = learner.start(2, &batch.classes, false).unwrap();
        let w0: Vec<Tensor> = fast0.w.iter().map(|w| w.copy()).collect();
        let b0: Vec<Tensor> = fast0.b.iter().map(|b| b.copy()).collect();
        let mid =
            learner.adapt(fast0, &head(&batch.support_x), &head(&batch.support_y), |_| StepMode::Constant).unwrap();
        let dw: Vec<Tensor> = mid.w.iter().zip(&w0).map(|(a, b)| a - b).collect();
        let db: Vec<Tensor> = mid.b.iter().zip(&b0).map(|(a, b)| a - b).collect();
        let defined_loss = |learner: &mut Learner| -> f64 {
            let start = learner.start(2, &batch.classes, false).unwrap();
            let shifted = metaplastic_core::inner::FastWeights {
                w: start.w.iter().zip(&dw).map(|(a, d)| a + d).collect(),
                b: start.b.iter().zip(&db).map(|(a, d)| a + d).collect(),
            };
            let end = learner
                .adapt(shifted, &tail_of(&batch.support_x), &tail_of(&batch.support_y), |_| StepMode::Constant)
                .unwrap();
            learner.loss(&end, &batch.query_x, &batch.query_y).unwrap().mean(Kind::Double).double_value(&[])
        };
        let (_, grads) = meta_gradient(&mut learner, &batch).unwrap();
        for (index, grad) in grads {
            let flat = grad.view([-1]);
            let n = flat.size()[0];
            for e in [0, n - 1] {
                nudge(&mut learner, index, e, h());
                let up = defined_loss(&mut learner);
                nudge(&mut learner, index, e, -2.0 * h());
                let down = defined_loss(&mut learner);
                nudge(&mut learner, index, e, h());
                let numeric = (up - down) / (2.0 * h());
                let analytic = flat.double_value(&[e]);
                let err = (analytic - numeric).abs() / (1e-6 + analytic.abs().max(numeric.abs()));
                let name = &learner.params.iter().nth(index).unwrap().name;
                assert!(err < 1e-4, "{name}[{e}]: truncated meta-gradient {analytic} vs definition {numeric}");
            }
        }
    }
}

/// The issue-8 rule options: log-space rates, a per-layer log-scale, batch and bounded normalisation and
/// the reference's Hebb-on-the-first-step, each (and together) against finite differences.
#[test]
fn flp_rate_parameterizations_and_normalizations() {
    let variants = [
        r#""parameterization":"log""#,
        r#""parameterization":"log","layerScale":true"#,
        r#""layerScale":true,"granularity":"neuron""#,
        r#""normalize":"batch""#,
        r#""normalize":"bounded""#,
        r#""normalize":"presynaptic","parameterization":"log""#,
        r#""normalize":"bounded","parameterization":"log","layerScale":true,"granularity":"layer""#,
        r#""hebbFirstStep":true"#,
    ];
    for (i, v) in variants.iter().enumerate() {
        let cfg = regression(
            r#"{"type":"oja"}"#,
            &format!(r#","plasticity":{{"init":0.05,{v}}},"feedback":{{"strength":{{"init":0.5}}}}"#),
        );
        assert_eq!(check_fd(cfg, 50 + i as i64), all_groups(), "plasticity {{{v}}}");
    }
    let hebb = regression(
        r#"{"type":"hebb"}"#,
        r#","plasticity":{"init":0.05,"normalize":"bounded","parameterization":"log"}"#,
    );
    assert_eq!(check_fd(hebb, 60), all_groups());
}

/// Log-space rates: P = exp(θ) with θ = ln(init), so the meta-gradient of θ is P ⊙ ∂L/∂P of the linear
/// parameterization at the same rates.
#[test]
fn log_rate_gradient_is_rate_times_linear_gradient() {
    let linear = regression(r#"{"type":"oja"}"#, r#","plasticity":{"init":0.05}"#);
    let mut log = linear.clone();
    log.plasticity.parameterization = metaplastic_core::config::RateParameterization::Log;
    let a = grads_by_name(linear, 61);
    let b = grads_by_name(log, 61);
    for ((name, ga), (_, gb)) in a.iter().zip(&b) {
        let expected = if name.starts_with("plasticity.") { ga * 0.05 } else { ga.shallow_clone() };
        assert!(max_abs_diff(gb, &expected) < 1e-12, "{name}");
    }
}

/// `plasticity.maxRate`: a bound above every rate changes nothing; a bound below every rate gives exactly
/// the meta-gradients of the learner whose rates start at the bound (that learner's are checked against finite
/// differences above), with none for the clamped rates; a partly binding bound clamps only the rates above it.
#[test]
fn max_rate_clamps_rates_and_their_meta_gradient() {
    let with = |init: f64, extra: &str| {
        regression(
            r#"{"type":"oja"}"#,
            &format!(r#","plasticity":{{"init":{init},"parameterization":"log","normalize":"bounded"{extra}}}"#),
        )
    };
    let plain = grads_by_name(with(0.05, ""), 62);
    let loose = grads_by_name(with(0.05, r#","maxRate":1.0"#), 62);
    assert!(relative_difference(&plain, &loose) == 0.0, "a bound above every rate changed the meta-gradient");
    let at_bound = grads_by_name(with(0.03, ""), 62);
    let clamped = grads_by_name(with(0.05, r#","maxRate":0.03"#), 62);
    for ((name, a), (_, b)) in at_bound.iter().zip(&clamped) {
        if name.starts_with("plasticity.") {
            assert_eq!(b.abs().max().double_value(&[]), 0.0, "{name}: a clamped rate got a meta-gradient");
        } else {
            assert!(max_abs_diff(a, b) < 1e-12, "{name}: the clamped learner differs from one starting at the bound");
        }
    }
    let learner = Learner::new(with(0.05, r#","maxRate":0.04"#)).unwrap();
    let rule = learner.local_rule().unwrap();
    let theta = learner.params.at(rule.rates[0]).shallow_clone();
    let _ = tch::no_grad(|| theta.view([-1]).narrow(0, 0, 3).fill_((0.02f64).ln()));
    let rate = tch::no_grad(|| rule.rate(&learner.params, 0)).unwrap().view([-1]);
    assert!((rate.double_value(&[0]) - 0.02).abs() < 1e-15, "a rate below the bound is kept");
    assert!((rate.double_value(&[5]) - 0.04).abs() < 1e-15, "a rate above the bound is clamped");
}

/// Oja's rule with a learned decay coefficient γ of `granularity`, plasticity options `extra` (after init).
fn decayed(granularity: &str, extra: &str) -> LearnerConfig {
    regression(
        &format!(r#"{{"type":"oja","decay":{{"init":0.4,"granularity":"{granularity}"}}}}"#),
        &format!(r#","plasticity":{{"init":0.05{extra}}},"feedback":{{"strength":{{"init":0.5}}}}"#),
    )
}

/// The learned decay coefficient: φ of every plastic layer (`decay.{l}`), per layer and per neuron, and every
/// other group with it, against finite differences; with the rate and normalisation options it composes
/// with, and through autograd as well as the reverse pass.
#[test]
fn flp_learned_decay_every_granularity() {
    let variants = [
        "",
        r#","granularity":"neuron","hiddenMultiplier":2"#,
        r#","normalize":"bounded","parameterization":"log""#,
        r#","normalize":"presynaptic","layerScale":true"#,
        r#","hebbFirstStep":true,"normalize":"batch""#,
    ];
    for g in ["layer", "neuron"] {
        for (i, v) in variants.iter().enumerate() {
            let (groups, names) = check_fd_named(decayed(g, v), 70 + i as i64);
            assert_eq!(groups, all_groups(), "decay {g}, plasticity {{{v}}}");
            for l in 0..3 {
                assert!(names.contains(&format!("decay.{l}")), "decay.{l} was not checked ({g}, {{{v}}}): {names:?}");
            }
        }
        let mut autograd = decayed(g, "");
        autograd.meta.backward = metaplastic_core::config::Backward::Autograd;
        let (groups, names) = check_fd_named(autograd, 80);
        assert_eq!(groups, all_groups(), "decay {g} through autograd");
        assert!(names.contains("decay.0"), "{names:?}");
    }
}

/// First-order and truncated meta-gradients reach φ too, and differ from the second-order one.
#[test]
fn learned_decay_first_order_and_truncated() {
    let cfg = decayed("neuron", "");
    let second = grads_by_name(cfg.clone(), 22);
    let decay_of = |g: &[(String, Tensor)]| {
        g.iter()
            .filter(|(n, _)| n.starts_with("decay."))
            .map(|(_, t)| t.abs().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
    };
    for other in [MetaGradient::FirstOrder, MetaGradient::Truncated { steps: 1 }] {
        let grads = grads_by_name(with_gradient(cfg.clone(), other), 22);
        assert!(decay_of(&grads) > 0.0, "{other:?}: no gradient reaches φ");
        assert!(relative_difference(&second, &grads) > 1e-3, "{other:?} equals second-order");
    }
}
