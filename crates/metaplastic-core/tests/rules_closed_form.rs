//! Local rules, the feedback blend, derivative control and OML's inner step on hand-computable cases.
mod common;
use common::*;
use metaplastic_core::config::LearnerConfig;
use metaplastic_core::config::UpdateNormalization::{self, None as Plain};
use metaplastic_core::feedback::{teaching_activity, LayerFeedback};
use metaplastic_core::inner::StepMode;
use metaplastic_core::net::functional::tail;
use metaplastic_core::rules::local::local_delta;
use tch::{Device, Kind, Tensor};

fn t(values: &[f64], shape: &[i64]) -> Tensor {
    Tensor::from_slice(values).reshape(shape).to_kind(Kind::Double)
}

fn close(a: &Tensor, b: &Tensor, tol: f64) {
    let d = max_abs_diff(a, b);
    assert!(d < tol, "difference {d}\n{a}\nvs\n{b}");
}

// One episode, batch of 2, 2 post units, 3 pre units.
fn example() -> (Tensor, Tensor, Tensor) {
    let post = t(&[1.0, 2.0, 0.5, -1.0], &[1, 2, 2]); // ã[b][i]
    let pre = t(&[1.0, 0.0, 2.0, 3.0, 1.0, -1.0], &[1, 2, 3]); // a[b][j]
    let w = t(&[0.1, 0.2, 0.3, -0.4, 0.5, 0.6], &[1, 2, 3]);
    (post, pre, w)
}

#[test]
fn hebb_is_the_batch_summed_outer_product() {
    let (post, pre, w) = example();
    // Σ_b ã_bi a_bj, by hand: row0 = 1·[1,0,2] + 0.5·[3,1,−1] = [2.5, 0.5, 1.5]
    //                         row1 = 2·[1,0,2] − 1·[3,1,−1]  = [−1, −1, 5]
    let expected = t(&[2.5, 0.5, 1.5, -1.0, -1.0, 5.0], &[1, 2, 3]).g_mul_scalar(0.1);
    let rate = Tensor::from(0.1f64);
    close(&local_delta(&post, &pre, &w, &rate, false, 1.0, Plain).unwrap(), &expected, 1e-12);
}

#[test]
fn oja_subtracts_the_decay_term_per_synapse() {
    let (post, pre, w) = example();
    // Σ_b ã² : row0 = 1 + 0.25 = 1.25, row1 = 4 + 1 = 5.
    let hebb = [2.5, 0.5, 1.5, -1.0, -1.0, 5.0];
    let wv = [0.1, 0.2, 0.3, -0.4, 0.5, 0.6];
    let sq = [1.25, 1.25, 1.25, 5.0, 5.0, 5.0];
    let p = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]; // per-synapse rates
    let expected: Vec<f64> = (0..6).map(|i| p[i] * (hebb[i] - sq[i] * wv[i])).collect();
    let rate = t(&p, &[2, 3]);
    close(&local_delta(&post, &pre, &w, &rate, true, 1.0, Plain).unwrap(), &t(&expected, &[1, 2, 3]), 1e-12);
    // The hidden-layer multiplier scales the whole update.
    let scaled: Vec<f64> = expected.iter().map(|v| v * 100.0).collect();
    close(&local_delta(&post, &pre, &w, &rate, true, 100.0, Plain).unwrap(), &t(&scaled, &[1, 2, 3]), 1e-10);
    // Per-neuron rates broadcast along each row.
    let neuron = t(&[0.5, 2.0], &[2, 1]);
    let expected_n: Vec<f64> = (0..6).map(|i| [0.5, 2.0][i / 3] * (hebb[i] - sq[i] * wv[i])).collect();
    close(&local_delta(&post, &pre, &w, &neuron, true, 1.0, Plain).unwrap(), &t(&expected_n, &[1, 2, 3]), 1e-12);
}

#[test]
fn batch_and_bounded_normalizations() {
    let (post, pre, w) = example();
    let hebb = [2.5, 0.5, 1.5, -1.0, -1.0, 5.0];
    let wv = [0.1, 0.2, 0.3, -0.4, 0.5, 0.6];
    let sq = [1.25, 1.25, 1.25, 5.0, 5.0, 5.0];
    let rate = Tensor::from(0.1f64);
    let oja: Vec<f64> = (0..6).map(|i| 0.1 * (hebb[i] - sq[i] * wv[i])).collect();
    // Batch: the minibatch mean (B = 2) instead of the sum.
    let batch: Vec<f64> = oja.iter().map(|v| v / 2.0).collect();
    close(
        &local_delta(&post, &pre, &w, &rate, true, 1.0, UpdateNormalization::Batch).unwrap(),
        &t(&batch, &[1, 2, 3]),
        1e-12,
    );
    // Presynaptic: divided by 1 + Σ_b ‖a_b‖² = 1 + (1 + 4) + (9 + 1 + 1) = 17.
    let pre_norm: Vec<f64> = oja.iter().map(|v| v / 17.0).collect();
    close(
        &local_delta(&post, &pre, &w, &rate, true, 1.0, UpdateNormalization::Presynaptic).unwrap(),
        &t(&pre_norm, &[1, 2, 3]),
        1e-12,
    );
    // Bounded: row i divided by 1 + Σ_b ã_bi² (2.25 and 6), for Oja and for Hebb.
    let bounded: Vec<f64> = (0..6).map(|i| oja[i] / (1.0 + sq[i])).collect();
    close(
        &local_delta(&post, &pre, &w, &rate, true, 1.0, UpdateNormalization::Bounded).unwrap(),
        &t(&bounded, &[1, 2, 3]),
        1e-12,
    );
    let bounded_hebb: Vec<f64> = (0..6).map(|i| 0.1 * hebb[i] / (1.0 + sq[i])).collect();
    close(
        &local_delta(&post, &pre, &w, &rate, false, 1.0, UpdateNormalization::Bounded).unwrap(),
        &t(&bounded_hebb, &[1, 2, 3]),
        1e-12,
    );
}

/// With 0 < P < 1 the bounded Oja update keeps every weight's decay factor 1 − P·q/(1+q) in (0, 1]:
/// a huge post-synaptic activity cannot flip or blow up the weights (the unnormalised rule does).
#[test]
fn bounded_oja_is_stable_for_huge_activity() {
    let (post, pre, w) = example();
    let post = post * 1e4;
    let rate = Tensor::from(0.9f64);
    let after = &w + local_delta(&post, &pre, &w, &rate, true, 1.0, UpdateNormalization::Bounded).unwrap();
    let plain = &w + local_delta(&post, &pre, &w, &rate, true, 1.0, Plain).unwrap();
    // |ΔW_ij| ≤ P(|W_ij| + |Σ ã a|/(1+q)) ≤ P(|W_ij| + ‖a_j‖/2): bounded by the presynaptic norms (≤ 3.2).
    assert!(after.abs().max().double_value(&[]) < 3.0, "{after}");
    assert!(plain.abs().max().double_value(&[]) > 1e6);
}

/// hebbFirstStep: the first inner step is plain Hebb, the second Oja (the reference's --hebb).
#[test]
fn hebb_first_step_then_oja() {
    let base = r#","plasticity":{"init":0.05,"hebbFirstStep":HF},"feedback":{"strength":{"init":0.5}}"#;
    let mk = |rule: &str, hf: bool| {
        let mut l = metaplastic_core::learner::Learner::new(regression(
            &format!(r#"{{"type":"{rule}"}}"#),
            &base.replace("HF", if hf { "true" } else { "false" }),
        ))
        .unwrap();
        jitter_biases(&mut l, 3);
        l
    };
    let (mut mixed, mut hebb, mut oja) = (mk("oja", true), mk("hebb", false), mk("oja", false));
    let batch = batch(&mixed, 1, 2, 3, 1, 13);
    let one = |l: &mut metaplastic_core::learner::Learner, steps: i64| {
        let fast = l.start(1, &batch.classes, false).unwrap();
        l.adapt(fast, &batch.support_x.narrow(1, 0, steps), &batch.support_y.narrow(1, 0, steps), |_| {
            StepMode::Constant
        })
        .unwrap()
    };
    let (m1, h1) = (one(&mut mixed, 1), one(&mut hebb, 1));
    for k in 0..m1.w.len() {
        close(&m1.w[k], &h1.w[k], 1e-15);
    }
    // Step 2 from the Hebb-updated weights is Oja's: run Oja's rule alone on the second minibatch from there.
    let m2 = one(&mut mixed, 2);
    let shifted = metaplastic_core::inner::FastWeights {
        w: h1.w.iter().map(|w| w.copy()).collect(),
        b: h1.b.iter().map(|b| b.copy()).collect(),
    };
    let o2 = oja
        .adapt(shifted, &batch.support_x.narrow(1, 1, 1), &batch.support_y.narrow(1, 1, 1), |_| StepMode::Constant)
        .unwrap();
    for k in 0..m2.w.len() {
        close(&m2.w[k], &o2.w[k], 1e-12);
    }
    // Different from Oja on both steps.
    let o_both = one(&mut oja, 2);
    assert!(max_abs_diff(&m2.w[0], &o_both.w[0]) > 1e-6);
}

fn one_layer_regression(feedback: &str) -> LearnerConfig {
    config(&format!(
        r#"{{"inputShape":[3],"layers":[{{"type":"linear","units":2}},{{"type":"linear","units":1}}],"task":"regression",
            "rule":{{"type":"oja"}},"feedback":{feedback},"dtype":"float64","device":"cpu"}}"#
    ))
}

#[test]
fn blend_mixes_feedback_and_forward_activity() {
    let cfg = one_layer_regression(r#"{"type":"learned","strength":{"init":0.25}}"#);
    // Hidden layer: 2 units from 3 inputs; output 1 unit.
    let x = t(&[1.0, -1.0, 0.5], &[1, 1, 3]);
    let w = vec![t(&[0.2, 0.1, 0.0, -0.3, 0.4, 0.2], &[1, 2, 3]), t(&[0.5, -1.0], &[1, 1, 2])];
    let b =
        vec![Tensor::zeros([1, 2], (Kind::Double, Device::Cpu)), Tensor::zeros([1, 1], (Kind::Double, Device::Cpu))];
    let acts = tail(&x, &w, &b).unwrap();
    // z1 = [0.2−0.1, −0.3−0.4+0.1] = [0.1, −0.6] → a1 = [0.1, 0]; ŷ = 0.05.
    let y = t(&[1.05], &[1, 1, 1]); // e = y − ŷ = 1.0
    let (b0, c0) = (t(&[2.0, -3.0], &[2, 1]), t(&[0.5, 0.0], &[2]));
    let (b1, c1) = (t(&[0.7], &[1, 1]), t(&[0.0], &[1]));
    let s = Tensor::from(0.25f64);
    let fb = vec![
        LayerFeedback { layers: vec![(&b0, &c0)], strength: &s },
        LayerFeedback { layers: vec![(&b1, &c1)], strength: &s },
    ];
    let post = teaching_activity(&cfg, &acts, &w, &y, &fb).unwrap();
    // f1 = relu([2·1+0.5, −3·1]) = [2.5, 0] → ã1 = 0.25·[2.5, 0] + 0.75·[0.1, 0] = [0.7, 0]
    close(&post[0], &t(&[0.7, 0.0], &[1, 1, 2]), 1e-12);
    // f2 = relu(0.7·1) = 0.7 → ã2 = 0.25·0.7 + 0.75·0.05 = 0.2125
    close(&post[1], &t(&[0.2125], &[1, 1, 1]), 1e-12);
}

#[test]
fn target_signal_and_linear_feedback() {
    let cfg =
        one_layer_regression(r#"{"type":"learned","signal":"target","activation":"linear","strength":{"init":1.0}}"#);
    let x = t(&[1.0, -1.0, 0.5], &[1, 1, 3]);
    let w = vec![t(&[0.2, 0.1, 0.0, -0.3, 0.4, 0.2], &[1, 2, 3]), t(&[0.5, -1.0], &[1, 1, 2])];
    let b =
        vec![Tensor::zeros([1, 2], (Kind::Double, Device::Cpu)), Tensor::zeros([1, 1], (Kind::Double, Device::Cpu))];
    let acts = tail(&x, &w, &b).unwrap();
    let y = t(&[2.0], &[1, 1, 1]); // e = y = 2
    let (b0, c0) = (t(&[2.0, -3.0], &[2, 1]), t(&[0.5, 0.0], &[2]));
    let (b1, c1) = (t(&[0.7], &[1, 1]), t(&[0.0], &[1]));
    let s = Tensor::from(1.0f64);
    let fb = vec![
        LayerFeedback { layers: vec![(&b0, &c0)], strength: &s },
        LayerFeedback { layers: vec![(&b1, &c1)], strength: &s },
    ];
    let post = teaching_activity(&cfg, &acts, &w, &y, &fb).unwrap();
    // Linear feedback keeps the negative value: [2·2+0.5, −3·2] = [4.5, −6].
    close(&post[0], &t(&[4.5, -6.0], &[1, 1, 2]), 1e-12);
    close(&post[1], &t(&[1.4], &[1, 1, 1]), 1e-12);
}

#[test]
fn classification_output_is_clamped_to_one_hot() {
    let cfg = classification(r#"{"type":"oja"}"#, r#","feedback":{"strength":{"init":1.0,"learned":false}}"#);
    let mut learner = metaplastic_core::learner::Learner::new(cfg).unwrap();
    let batch = batch(&learner, 1, 1, 2, 2, 3);
    let fast = learner.start(1, &batch.classes, false).unwrap();
    let features = learner.features(&batch.support_x).unwrap().select(1, 0);
    let acts = tail(&features, &fast.w, &fast.b).unwrap();
    let y = batch.support_y.select(1, 0);
    let s = Tensor::from(1.0f64);
    let zeros6 = Tensor::zeros([6, 3], (Kind::Double, Device::Cpu));
    let zeros = Tensor::zeros([6], (Kind::Double, Device::Cpu));
    let zeros3 = Tensor::zeros([3, 3], (Kind::Double, Device::Cpu));
    let zeros_b3 = Tensor::zeros([3], (Kind::Double, Device::Cpu));
    let fb = vec![
        LayerFeedback { layers: vec![(&zeros6, &zeros)], strength: &s },
        LayerFeedback { layers: vec![(&zeros3, &zeros_b3)], strength: &s },
    ];
    let post = teaching_activity(&learner.cfg, &acts, &fast.w, &y, &fb).unwrap();
    close(&post[1], &y.one_hot(3).to_kind(Kind::Double), 0.0 + 1e-15);
}

/// Loss whose negative gradient the derivative control uses: Σ_b ½‖y − ŷ‖².
fn half_sse(y_hat: &Tensor, y: &Tensor) -> Tensor {
    (y_hat - y).square().sum(Kind::Double) * 0.5
}

#[test]
fn derivative_control_with_hebb_is_an_sgd_step() {
    let cfg = regression(r#"{"type":"hebb"}"#, r#","feedback":{"type":"derivative"},"plasticity":{"init":0.05}"#);
    let mut learner = metaplastic_core::learner::Learner::new(cfg).unwrap();
    let batch = batch(&learner, 2, 1, 3, 1, 5);
    let fast = learner.start(2, &batch.classes, false).unwrap();
    let leaves: Vec<Tensor> = fast.w.iter().map(|w| w.detach().copy().set_requires_grad(true)).collect(); // copies: evaluation updates in place
    let features = learner.features(&batch.support_x).unwrap().select(1, 0);
    let acts = tail(&features, &leaves, &fast.b).unwrap();
    let y = batch.support_y.select(1, 0);
    let grads = Tensor::run_backward(&[half_sse(acts.output(), &y)], &leaves, false, false);
    let after = learner.adapt(fast, &batch.support_x, &batch.support_y, |_| StepMode::Constant).unwrap();
    for k in 0..leaves.len() {
        let delta = &after.w[k] - leaves[k].detach();
        close(&delta, &(grads[k].g_mul_scalar(-0.05)), 1e-12);
    }
}

#[test]
fn oml_inner_step_equals_an_autograd_sgd_step() {
    let cfg = regression(r#"{"type":"sgd","lr":0.03}"#, r#","rln":1"#);
    let mut learner = metaplastic_core::learner::Learner::new(cfg).unwrap();
    let batch = batch(&learner, 1, 1, 4, 1, 9);
    let fast = learner.start(1, &batch.classes, false).unwrap();
    let w: Vec<Tensor> = fast.w.iter().map(|t| t.detach().copy().set_requires_grad(true)).collect();
    let b: Vec<Tensor> = fast.b.iter().map(|t| t.detach().copy().set_requires_grad(true)).collect();
    let features = learner.features(&batch.support_x).unwrap().select(1, 0);
    let acts = tail(&features, &w, &b).unwrap();
    let y = batch.support_y.select(1, 0);
    let mse = (acts.output() - &y).square().mean(Kind::Double);
    let inputs: Vec<&Tensor> = w.iter().chain(b.iter()).collect();
    let grads = Tensor::run_backward(&[mse], &inputs, false, false);
    let after = learner.adapt(fast, &batch.support_x, &batch.support_y, |_| StepMode::Constant).unwrap();
    for k in 0..w.len() {
        close(&after.w[k], &(w[k].detach() - grads[k].g_mul_scalar(0.03)), 1e-12);
        close(&after.b[k], &(b[k].detach() - grads[w.len() + k].g_mul_scalar(0.03)), 1e-12);
    }
}

/// Every rate parameterisation starts at P = init: log (θ = ln init), a layer scale (σ = ln init with θ = 1
/// linear or 0 log) and the plain linear one adapt identically before any meta-training.
#[test]
fn rate_parameterizations_start_at_init() {
    let run = |extra: &str| {
        let mut l = metaplastic_core::learner::Learner::new(regression(
            r#"{"type":"oja"}"#,
            &format!(r#","plasticity":{{"init":0.05{extra}}}"#),
        ))
        .unwrap();
        jitter_biases(&mut l, 4);
        let batch = batch(&l, 2, 3, 4, 1, 17);
        let fast = l.start(2, &batch.classes, false).unwrap();
        l.adapt(fast, &batch.support_x, &batch.support_y, |_| StepMode::Constant).unwrap()
    };
    let plain = run("");
    for extra in
        [r#","parameterization":"log""#, r#","layerScale":true"#, r#","layerScale":true,"parameterization":"log""#]
    {
        let other = run(extra);
        for k in 0..plain.w.len() {
            close(&plain.w[k], &other.w[k], 1e-8); // exp(ln init) rounds differently from init
        }
    }
}

/// feedback.outputIdentity: the output layer's feedback starts at the identity (here 1×1: b = 1), the hidden
/// layers' stay random; the draws of every other parameter are unchanged.
#[test]
fn output_feedback_can_start_at_the_identity() {
    let mk = |id: bool| {
        metaplastic_core::learner::Learner::new(regression(
            r#"{"type":"oja"}"#,
            &format!(r#","feedback":{{"outputIdentity":{id}}}"#),
        ))
        .unwrap()
    };
    let (a, b) = (mk(false), mk(true));
    let last = a.spec.len() - 1;
    let get = |l: &metaplastic_core::learner::Learner, name: &str| {
        l.params.at(l.params.index_of(name).unwrap()).shallow_clone()
    };
    assert_eq!(get(&b, &format!("feedback.{last}.0.weight")).double_value(&[0, 0]), 1.0);
    for p in a.params.iter() {
        if p.name != format!("feedback.{last}.0.weight") {
            close(&get(&a, &p.name), &get(&b, &p.name), 0.0 + 1e-15);
        }
    }
}

/// A learned decay coefficient γ scales Oja's decay term, ΔW = P ⊙ (ãᵀa − γ q ⊙ W), by hand on one
/// episode of one example, ã = (1, 2), a = (3, −1), W = [[0.5, 1], [−1, 0.25]], P = 0.1: ãᵀa =
/// [[3, −1], [6, −2]] and q = (1, 4). Through libtorch operations and the fused step alike; γ = 0 is
/// Hebb's update exactly and γ = 1 Oja's.
#[test]
fn learned_decay_scales_ojas_term_on_a_hand_example() {
    use metaplastic_core::kernels::{local_step, Decay};
    let post = t(&[1.0, 2.0], &[1, 1, 2]);
    let pre = t(&[3.0, -1.0], &[1, 1, 2]);
    let w = t(&[0.5, 1.0, -1.0, 0.25], &[1, 2, 2]);
    let rate = Tensor::from(0.1f64);
    let both = |decay: Decay<'_>| {
        let ops = local_delta(&post, &pre, &w, &rate, decay, 1.0, Plain).unwrap();
        let fused = local_step(&w, &post, &pre, &rate, decay, 1.0, None).unwrap() - &w;
        (ops, fused)
    };
    let half = Tensor::from(0.5f64);
    let per_row = t(&[0.25, 0.75], &[2, 1]);
    let cases = [
        // γ q = (0.5, 2): γ q ⊙ W = [[0.25, 0.5], [−2, 0.5]], term [[2.75, −1.5], [8, −2.5]].
        (Decay::Scaled(&half), [0.275, -0.15, 0.8, -0.25]),
        // γ q = (0.25, 3): γ q ⊙ W = [[0.125, 0.25], [−3, 0.75]], term [[2.875, −1.25], [9, −2.75]].
        (Decay::Scaled(&per_row), [0.2875, -0.125, 0.9, -0.275]),
        // Hebb: 0.1 ãᵀa; Oja: q ⊙ W = [[0.5, 1], [−4, 1]], term [[2.5, −2], [10, −3]].
        (Decay::None, [0.3, -0.1, 0.6, -0.2]),
        (Decay::Oja, [0.25, -0.2, 1.0, -0.3]),
    ];
    for (decay, expected) in cases {
        let (ops, fused) = both(decay);
        close(&ops, &t(&expected, &[1, 2, 2]), 1e-15);
        close(&fused, &t(&expected, &[1, 2, 2]), 1e-15);
    }
    let (zero, one) = (Tensor::from(0.0f64), Tensor::from(1.0f64));
    for ((a_ops, a_fused), (b_ops, b_fused)) in
        [(both(Decay::Scaled(&zero)), both(Decay::None)), (both(Decay::Scaled(&one)), both(Decay::Oja))]
    {
        assert_eq!(max_abs_diff(&a_ops, &b_ops), 0.0);
        assert_eq!(max_abs_diff(&a_fused, &b_fused), 0.0);
    }
}

/// `rule.decay` adds φ = logit(init) per plastic layer ("decay.{l}", [] or [out, 1]) to the plasticity
/// group, trainable as `learned` says, and draws nothing: every other parameter is Oja's own. The learned
/// arrays show γ. Without it there is no such parameter.
#[test]
fn learned_decay_parameters() {
    use metaplastic_core::analysis::learned::learned_arrays;
    use metaplastic_core::learner::Learner;
    use metaplastic_core::params::Group;
    let oja = Learner::new(regression(r#"{"type":"oja"}"#, "")).unwrap();
    assert!(oja.params.iter().all(|p| !p.name.starts_with("decay.")));
    assert!(learned_arrays(&oja).unwrap().iter().all(|(n, _)| !n.starts_with("decayCoefficient.")));
    for (granularity, learned) in [("layer", true), ("neuron", false)] {
        let per_neuron = granularity == "neuron";
        let rule =
            format!(r#"{{"type":"oja","decay":{{"init":0.8,"granularity":"{granularity}","learned":{learned}}}}}"#);
        let l = Learner::new(regression(&rule, "")).unwrap();
        let arrays = learned_arrays(&l).unwrap();
        for (layer, units) in [(0, 5), (1, 5), (2, 1)] {
            let p = l.params.iter().find(|p| p.name == format!("decay.{layer}")).expect("a decay parameter");
            let want: Vec<i64> = if per_neuron { vec![units, 1] } else { vec![] };
            assert_eq!(p.tensor.size(), want, "{}", p.name);
            assert_eq!((p.group, p.trainable, p.tensor.requires_grad()), (Group::Plasticity, learned, learned));
            close(&p.tensor, &Tensor::from(4.0f64.ln()).expand(p.tensor.size(), false), 1e-15); // logit(0.8)
            let (_, gamma) = arrays.iter().find(|(n, _)| *n == format!("decayCoefficient.{layer}")).expect("γ shown");
            close(&gamma.to_kind(Kind::Double), &Tensor::from(0.8f64).expand(p.tensor.size(), false), 1e-7);
        }
        for p in oja.params.iter() {
            assert_eq!(max_abs_diff(l.params.at(l.params.index_of(&p.name).unwrap()), &p.tensor), 0.0, "{}", p.name);
        }
        assert_eq!(l.params.len(), oja.params.len() + 3);
    }
}

/// Learners whose γ starts next to 0 or 1 adapt like Hebb's and Oja's rules.
#[test]
fn learned_decay_at_its_limits_is_hebb_and_oja() {
    use metaplastic_core::learner::Learner;
    let adapt = |rule: &str| {
        let mut l = Learner::new(regression(rule, r#","plasticity":{"init":0.05}"#)).unwrap();
        jitter_biases(&mut l, 4);
        let batch = batch(&l, 2, 3, 4, 1, 19);
        let fast = l.start(2, &batch.classes, false).unwrap();
        l.adapt(fast, &batch.support_x, &batch.support_y, |_| StepMode::Constant).unwrap()
    };
    let (hebb, oja) = (adapt(r#"{"type":"hebb"}"#), adapt(r#"{"type":"oja"}"#));
    let near_hebb = adapt(r#"{"type":"oja","decay":{"init":1e-12}}"#);
    let near_oja = adapt(r#"{"type":"oja","decay":{"init":0.999999999999,"granularity":"neuron"}}"#);
    let middle = adapt(r#"{"type":"oja","decay":{"init":0.5}}"#);
    for k in 0..hebb.w.len() {
        close(&near_hebb.w[k], &hebb.w[k], 1e-9);
        close(&near_oja.w[k], &oja.w[k], 1e-9);
        assert!(max_abs_diff(&middle.w[k], &hebb.w[k]) > 1e-6 && max_abs_diff(&middle.w[k], &oja.w[k]) > 1e-6);
    }
}
