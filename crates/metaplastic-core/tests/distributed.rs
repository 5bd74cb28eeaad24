//! Data-parallel meta-training over c10d/Gloo on loopback: ranks run as threads of this test (each with
//! its own process group and TCP connections, exactly as separate processes would have), and are checked
//! against one process holding the whole meta-batch.
use metaplastic_core::checkpoint;
use metaplastic_core::distributed::GroupSettings;
use metaplastic_core::experiment::{Experiment, ExperimentConfig};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

fn config(meta_batch: usize, plastic_init: &str) -> ExperimentConfig {
    ExperimentConfig::from_json(&format!(
        r#"{{"name":"dist","seed":11,"metaBatch":{meta_batch},
            "learner":{{"inputShape":[4],"layers":[{{"type":"linear","units":8}},{{"type":"linear","units":8}},{{"type":"linear","units":1}}],
              "task":"regression","rule":{{"type":"oja"}},"plasticInit":"{plastic_init}","plasticity":{{"init":0.001}},
              "meta":{{"lr":{{"forward":1e-3,"plasticity":1e-4}}}},"seed":5}},
            "task":{{"type":"sine","sine":{{"poolSize":20,"functions":3,"slots":3,"batchesPerFunction":2,"batchSize":4,"queryPerFunction":5}}}}}}"#
    ))
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn settings(port: u16, rank: u32, world: u32, timeout: f64) -> GroupSettings {
    GroupSettings {
        master_addr: "127.0.0.1".into(),
        master_port: port,
        rank,
        world_size: world,
        timeout_seconds: timeout,
        ifname: None,
    }
}

fn params(exp: &Experiment) -> Vec<(String, Vec<f32>)> {
    exp.learner.params.iter().map(|p| (p.name.clone(), exp.learner.params.read(&p.name).unwrap().data)).collect()
}

fn assert_close(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], what: &str) {
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        let scale = va.iter().map(|x| x.abs()).fold(1e-3f32, f32::max);
        let worst = va.iter().zip(vb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        // float32 sums in another order: a few ulps of the parameter's scale after 5 Adam steps.
        assert!(worst <= 2e-5 * scale, "{what}: {na} differs by {worst} (scale {scale})");
    }
}

/// Runs `world` ranks as threads, each training `steps` meta-steps; returns each rank's experiment.
fn run_group(world: u32, meta_batch: usize, plastic_init: &'static str, steps: u64) -> Vec<Experiment> {
    let port = free_port();
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            std::thread::spawn(move || {
                let mut exp = Experiment::new(config(meta_batch, plastic_init)).unwrap();
                exp.join(&settings(port, rank, world, 60.0)).unwrap();
                exp.train(steps, &AtomicBool::new(false)).unwrap();
                exp
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn two_ranks_match_one_process_with_the_whole_meta_batch() {
    for plastic_init in ["metaLearned", "reinit"] {
        let mut single = Experiment::new(config(4, plastic_init)).unwrap();
        let records = single.train(5, &AtomicBool::new(false)).unwrap();
        let ranks = run_group(2, 4, plastic_init, 5);
        for (rank, exp) in ranks.iter().enumerate() {
            assert_eq!(exp.step, 5);
            assert_close(&params(&single), &params(exp), &format!("{plastic_init}, rank {rank}"));
        }
        // Every rank holds the same parameters and optimizer state, bit for bit.
        assert_eq!(params(&ranks[0]), params(&ranks[1]));
        for (m0, m1) in ranks[0].adam.m.iter().zip(&ranks[1].adam.m) {
            if let (Some(a), Some(b)) = (m0, m1) {
                assert!(a.equal(b));
            }
        }
        // The reported meta-loss is the mean over the whole meta-batch, as in one process.
        let last = single.train(1, &AtomicBool::new(false)).unwrap();
        assert!(records.len() == 5 && last.len() == 1);
    }
}

#[test]
fn checkpoints_of_a_group_resume_only_with_the_same_world_size() {
    let ranks = run_group(2, 4, "metaLearned", 2);
    let dir = std::env::temp_dir().join(format!("metaplastic-test-dist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    checkpoint::save(&ranks[0], &dir).unwrap();
    let mut alone = checkpoint::load(&dir).unwrap();
    assert_eq!(alone.world_size, 2);
    let err = alone.train(1, &AtomicBool::new(false)).err().unwrap();
    assert_eq!(err.code(), "E_CONFIG");
    assert!(
        err.to_string().contains("meta-trained by 2 process(es)") && err.to_string().contains("--nproc 2"),
        "{err}"
    );
    let err = alone.join(&settings(free_port(), 0, 4, 5.0)).err().unwrap();
    assert!(err.to_string().contains("now runs with 4"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_meta_batch_that_does_not_split_evenly_is_refused() {
    let mut exp = Experiment::new(config(3, "metaLearned")).unwrap();
    let err = exp.join(&settings(free_port(), 0, 2, 5.0)).err().unwrap();
    assert_eq!(err.code(), "E_CONFIG");
    assert!(err.to_string().contains("metaBatch") && err.to_string().contains("multiple of 2"), "{err}");
}

#[test]
fn bad_rendezvous_settings_are_named() {
    let mut exp = Experiment::new(config(2, "metaLearned")).unwrap();
    let cases = [
        (settings(free_port(), 2, 2, 5.0), "rank"),
        (settings(0, 0, 2, 5.0), "masterPort"),
        (settings(free_port(), 0, 2, -1.0), "timeoutSeconds"),
        (GroupSettings { master_addr: " ".into(), ..settings(free_port(), 0, 2, 5.0) }, "masterAddr"),
    ];
    for (s, field) in cases {
        let err = exp.join(&s).err().unwrap();
        assert_eq!(err.code(), "E_CONFIG", "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    // Nobody listens for rank 1: rendezvous gives up after the timeout, naming the address.
    let port = free_port();
    let t0 = Instant::now();
    let err = exp.join(&settings(port, 1, 2, 2.0)).err().unwrap();
    assert_eq!(err.code(), "E_DIST");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
}

#[test]
fn ranks_that_start_from_different_states_are_refused() {
    let port = free_port();
    let handles: Vec<_> = (0..2u32)
        .map(|rank| {
            std::thread::spawn(move || {
                let mut cfg = config(2, "metaLearned");
                cfg.seed += rank as u64; // rank 1 was given another seed
                let mut exp = Experiment::new(cfg).unwrap();
                exp.join(&settings(port, rank, 2, 30.0)).err().unwrap()
            })
        })
        .collect();
    for h in handles {
        let err = h.join().unwrap();
        assert_eq!(err.code(), "E_DIST");
        assert!(err.to_string().contains("rank(s) 1 start from another state"), "{err}");
    }
}

#[test]
fn a_rank_that_exits_stops_the_others_with_its_name() {
    let port = free_port();
    let survivor = std::thread::spawn(move || {
        let mut exp = Experiment::new(config(2, "metaLearned")).unwrap();
        exp.join(&settings(port, 0, 2, 20.0)).unwrap();
        let t0 = Instant::now();
        let err = exp.train(50, &AtomicBool::new(false)).err().unwrap();
        (err, t0.elapsed())
    });
    let mut quitter = Experiment::new(config(2, "metaLearned")).unwrap();
    quitter.join(&settings(port, 1, 2, 20.0)).unwrap();
    quitter.train(2, &AtomicBool::new(false)).unwrap();
    drop(quitter); // its connections close, as when a process dies
    let (err, waited) = survivor.join().unwrap();
    assert_eq!(err.code(), "E_DIST");
    assert!(err.to_string().contains("rank 1 (last reached meta-step 2)"), "{err}");
    assert!(waited < Duration::from_secs(20), "the survivor waited {waited:?}");
}

/// Many groups in one process, their ranks starting collectives at the same moments: libtorch's
/// per-process flight recorder registers each group on its first collective without a lock, which
/// crashed the process (one run of this file in five) before the engine started collectives one at a time
/// (cpp/c10d.cpp).
#[test]
fn groups_in_one_process_run_collectives_at_once() {
    use metaplastic_core::distributed::ProcessGroup;
    let (groups, world, rounds) = (6u32, 2u32, 8);
    for round in 0..rounds {
        let start = std::sync::Arc::new(std::sync::Barrier::new((groups * world) as usize));
        let handles: Vec<_> = (0..groups)
            .flat_map(|g| {
                let port = free_port();
                let start = start.clone();
                (0..world).map(move |rank| {
                    let start = start.clone();
                    std::thread::spawn(move || {
                        let pg = ProcessGroup::join(&settings(port, rank, world, 60.0)).unwrap();
                        start.wait();
                        (0..5u64)
                            .map(|step| {
                                let mut t = tch::Tensor::from_slice(&[(g * 100 + rank) as f32 + step as f32]);
                                pg.all_reduce_sum(&mut t, step).unwrap();
                                t.double_value(&[0])
                            })
                            .sum::<f64>()
                    })
                })
            })
            .collect();
        for (k, h) in handles.into_iter().enumerate() {
            let g = k as u32 / world;
            // Each step sums the two ranks' values: 2·(100 g + step) + (0 + 1).
            let expected: f64 = (0..5).map(|step| 2.0 * (g * 100) as f64 + 2.0 * step as f64 + 1.0).sum();
            assert_eq!(h.join().unwrap(), expected, "round {round}, group {g}");
        }
    }
}
