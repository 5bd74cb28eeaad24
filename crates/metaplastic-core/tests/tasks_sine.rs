//! Incremental sine regression: the protocol facts of docs/method.md §5.1.
use metaplastic_core::episode::EpisodeSampler;
use metaplastic_core::rng::seeded;
use metaplastic_core::tasks::{Order, SineConfig, SineEvalRun, SineTask};
use metaplastic_core::Error;
use tch::Tensor;

fn vals(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.contiguous().view([-1])).unwrap()
}

/// Checks every row of a run: slot one-hot, x range, y = A sin(x + φ); returns the slot of each step.
fn check_rows(run: &SineEvalRun, cfg: &SineConfig) -> Vec<usize> {
    let w = cfg.slots + 1;
    let (sx, sy) = (vals(&run.support_x), vals(&run.support_y));
    let b = cfg.batch_size;
    let mut step_slots = Vec::new();
    for step in 0..sx.len() / (b * w) {
        let mut slot_of_step = None;
        for i in 0..b {
            let row = &sx[(step * b + i) * w..(step * b + i + 1) * w];
            let ones: Vec<usize> = (0..cfg.slots).filter(|&k| row[k] == 1.0).collect();
            assert_eq!(ones.len(), 1, "exactly one slot bit per row");
            assert_eq!(row[..cfg.slots].iter().filter(|&&v| v == 0.0).count(), cfg.slots - 1);
            let slot = ones[0];
            assert!(slot_of_step.is_none_or(|s| s == slot), "a minibatch holds one function");
            slot_of_step = Some(slot);
            let x = row[w - 1] as f64;
            assert!((-5.0..=5.0).contains(&x));
            let want = run.functions[slot].eval(x) as f32;
            assert!((sy[step * b + i] - want).abs() < 1e-5);
        }
        step_slots.push(slot_of_step.unwrap());
    }
    step_slots
}

#[test]
fn default_protocol_shapes_and_ranges() {
    let cfg = SineConfig::default();
    assert_eq!(
        (cfg.pool_size, cfg.functions, cfg.batches_per_function, cfg.batch_size, cfg.query_per_function),
        (400, 10, 40, 32, 32)
    );
    let task = SineTask::new(cfg.clone(), 7).unwrap();
    assert_eq!(task.pool().len(), 400);
    for f in task.pool() {
        assert!((0.1..=5.1).contains(&f.amplitude) && (0.0..=std::f64::consts::PI).contains(&f.phase));
    }
    let run = task.eval_run(&mut seeded(1), Order::Continual).unwrap();
    assert_eq!(run.support_x.size(), [400, 32, 11]);
    assert_eq!(run.support_y.size(), [400, 32, 1]);
    assert_eq!(run.query_x.size(), [10, 32, 11]);
    assert_eq!(run.query_y.size(), [10, 32, 1]);
    let slots = check_rows(&run, &cfg);
    // Continual: function 0 for 40 steps, then function 1, ...
    assert_eq!(slots, (0..400).map(|s| s / 40).collect::<Vec<_>>());
    assert_eq!(run.step_function, slots);
    // Query rows: function f's 32 points carry slot f and its values.
    let (qx, qy) = (vals(&run.query_x), vals(&run.query_y));
    for f in 0..10 {
        for p in 0..32 {
            let row = &qx[(f * 32 + p) * 11..(f * 32 + p + 1) * 11];
            assert_eq!(row[f], 1.0);
            assert!((qy[f * 32 + p] - run.functions[f].eval(row[10] as f64) as f32).abs() < 1e-5);
        }
    }
    let ep = run.into_episode().unwrap();
    assert_eq!(ep.query_x.size(), [320, 11]);
    assert_eq!(ep.query_y.size(), [320, 1]);
    ep.validate(&[11], false, 1).unwrap();
}

#[test]
fn iid_order_shuffles_whole_minibatches() {
    let cfg = SineConfig::default();
    let task = SineTask::new(cfg.clone(), 7).unwrap();
    let run = task.eval_run(&mut seeded(2), Order::Iid).unwrap();
    let slots = check_rows(&run, &cfg);
    assert_eq!(run.step_function, slots);
    let mut counts = [0usize; 10];
    slots.iter().for_each(|&s| counts[s] += 1);
    assert_eq!(counts, [40; 10]);
    assert_ne!(slots, (0..400).map(|s| s / 40).collect::<Vec<_>>(), "i.i.d. order must not be continual");
}

#[test]
fn meta_training_draws_distinct_pool_functions() {
    let task = SineTask::new(SineConfig::default(), 11).unwrap();
    let mut sampler = task.meta_train_sampler(Order::Continual);
    let mut rng = seeded(3);
    let (ids, run) = sampler.sample_run(&mut rng).unwrap();
    assert_eq!(ids.len(), 10);
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 10, "functions in an episode are distinct");
    for (slot, &id) in ids.iter().enumerate() {
        assert_eq!(run.functions[slot], task.pool()[id]);
    }
    let ep = sampler.sample(&mut rng).unwrap();
    ep.validate(&[11], false, 1).unwrap();
    assert_eq!(ep.support_x.size(), [400, 32, 11]);
}

#[test]
fn pool_and_episodes_are_determined_by_the_seed() {
    let a = SineTask::new(SineConfig::default(), 5).unwrap();
    let b = SineTask::new(SineConfig::default(), 5).unwrap();
    let c = SineTask::new(SineConfig::default(), 6).unwrap();
    assert_eq!(a.pool(), b.pool());
    assert_ne!(a.pool(), c.pool());
    let e1 = a.meta_train_sampler(Order::Iid).sample(&mut seeded(9)).unwrap();
    let e2 = b.meta_train_sampler(Order::Iid).sample(&mut seeded(9)).unwrap();
    let e3 = a.meta_train_sampler(Order::Iid).sample(&mut seeded(10)).unwrap();
    assert_eq!(vals(&e1.support_x), vals(&e2.support_x));
    assert_eq!(vals(&e1.query_y), vals(&e2.query_y));
    assert_ne!(vals(&e1.support_x), vals(&e3.support_x));
    // Evaluation functions are fresh, not pool members.
    let run = a.eval_run(&mut seeded(4), Order::Continual).unwrap();
    assert!(run.functions.iter().all(|f| !a.pool().contains(f)));
}

#[test]
fn sizes_are_configurable() {
    let cfg = SineConfig {
        pool_size: 20,
        functions: 3,
        slots: 5,
        batches_per_function: 2,
        batch_size: 4,
        query_per_function: 7,
        ..Default::default()
    };
    let task = SineTask::new(cfg.clone(), 1).unwrap();
    let run = task.eval_run(&mut seeded(0), Order::Continual).unwrap();
    assert_eq!(run.support_x.size(), [6, 4, 6]);
    assert_eq!(run.query_x.size(), [3, 7, 6]);
    assert_eq!(check_rows(&run, &cfg), vec![0, 0, 1, 1, 2, 2]);
}

fn config_field(cfg: SineConfig) -> String {
    match SineTask::new(cfg, 0) {
        Err(Error::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn impossible_sizes_name_the_field() {
    assert_eq!(config_field(SineConfig { functions: 11, ..Default::default() }), "functions");
    assert_eq!(config_field(SineConfig { pool_size: 5, ..Default::default() }), "functions");
    assert_eq!(config_field(SineConfig { batch_size: 0, ..Default::default() }), "batchSize");
    assert_eq!(config_field(SineConfig { amplitude: [2.0, 1.0], ..Default::default() }), "amplitude");
    assert_eq!(config_field(SineConfig { x_range: [f64::NAN, 1.0], ..Default::default() }), "xRange");
}

#[test]
fn json_config_errors_name_the_field() {
    let cfg: SineConfig = metaplastic_core::tasks::config_from_json(serde_json::json!({ "batchSize": 8 })).unwrap();
    assert_eq!((cfg.batch_size, cfg.functions), (8, 10));
    match metaplastic_core::tasks::config_from_json::<SineConfig>(serde_json::json!({ "batchSize": "x" })) {
        Err(Error::Config { field, .. }) => assert_eq!(field, "batchSize"),
        other => panic!("{other:?}"),
    }
    assert!(metaplastic_core::tasks::config_from_json::<SineConfig>(serde_json::json!({ "nope": 1 })).is_err());
}
