//! Self-contained engine benchmark: seconds per paper-size sine meta-step (FLP and OML), per
//! meta-batch, meta-gradient path and checkpoint interval, beside the measured float32 matmul rate of
//! the same shapes, with peak memory. Needs only libtorch at run time, so it runs on a machine with a
//! Python torch install and neither Node nor Rust (point LD_LIBRARY_PATH at `torch/lib`).
//!
//!   bench [--device cpu|cuda] [--threads N] [--steps T] [--meta-batch 1,8,64] [--nets flp,oml,flp-recipe]
//!         [--backward adjoint,recompute,autograd] [--autograd-max 8] [--intervals 20] [--repeats R] [--json FILE]
//!
//! Nets: `flp` is the paper's (Oja's rule, ReLU feedback), `flp-recipe` the one that trains, read from
//! the preset (`--recipe FILE`, written by `metaplastic presets flp-sine --json > FILE`: its rule,
//! plasticity and feedback, so the recipe is defined once), `oml` OML's. Backward: `adjoint` is the reverse pass as it runs by default (steps run backwards
//! where they can), `recompute` the same with every segment recomputed from its checkpoint instead.
//!         [--count-ops]   (also: libtorch operations per inner step of the reverse pass on libtorch
//!                          operations, the path CUDA takes: each is a kernel launch there)
//!         [--episode-groups N] (the most groups of episodes the reverse pass runs side by side on the CPU:
//!                          1 keeps the meta-batch whole; default 0, one group per thread)
//!         [--loops]       (instead: the fused CPU loops alone, kernels.rs, on the net's layers)
//!
//! Each measurement runs in a child process of its own (clean peak memory); one line of JSON each.
use metaplastic_core::adjoint::{self, AdjointOptions};
use metaplastic_core::config::LearnerConfig;
use metaplastic_core::inner::step_mode;
use metaplastic_core::learner::{EpisodeBatch, Learner};
use metaplastic_core::meta::Adam;
use metaplastic_core::runtime;
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The paper's sine network (docs/method.md §5.1); `--units` replaces it (e.g. 64,64,64,1 for the demo's).
const UNITS: [i64; 9] = [300, 300, 300, 300, 300, 900, 300, 300, 1];
const INPUT: i64 = 11;
const BATCH: i64 = 32;

struct Opts {
    device: String,
    threads: i32,
    steps: i64,
    meta_batch: Vec<i64>,
    nets: Vec<String>,
    backward: Vec<String>,
    intervals: Vec<String>,
    repeats: usize,
    /// The largest meta-batch autograd runs at (its unrolled graph: ~10 GB per paper-size FLP episode).
    autograd_max: i64,
    json: Option<String>,
    count_ops: bool,
    loops: bool,
    child: Option<String>,
    units: Vec<i64>,
    episode_groups: usize,
    /// A preset's JSON (`metaplastic presets flp-sine --json`): the `flp-recipe` net's rule, plasticity and feedback.
    recipe: Option<String>,
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or_else(|_| panic!("bad list item '{p}'")))
        .collect()
}

fn parse() -> Opts {
    let mut o = Opts {
        device: "cpu".into(),
        threads: 2,
        steps: 400,
        meta_batch: vec![1],
        nets: vec!["flp".into(), "oml".into()],
        backward: vec!["adjoint".into(), "autograd".into()],
        intervals: vec!["auto".into()],
        repeats: 3,
        autograd_max: 8,
        json: None,
        count_ops: false,
        loops: false,
        child: None,
        units: UNITS.to_vec(),
        episode_groups: 0,
        recipe: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--count-ops" || args[i] == "--loops" {
            // Flags: no value follows.
            o.count_ops |= args[i] == "--count-ops";
            o.loops |= args[i] == "--loops";
            i += 1;
            continue;
        }
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--device" => o.device = v,
            "--threads" => o.threads = v.parse().expect("--threads N"),
            "--steps" => o.steps = v.parse().expect("--steps T"),
            "--meta-batch" => o.meta_batch = list(&v),
            "--nets" => o.nets = list(&v),
            "--backward" => o.backward = list(&v),
            "--intervals" => o.intervals = list(&v),
            "--repeats" => o.repeats = v.parse().expect("--repeats R"),
            "--autograd-max" => o.autograd_max = v.parse().expect("--autograd-max E"),
            "--json" => o.json = Some(v),
            "--child" => o.child = Some(v),
            "--units" => o.units = list(&v),
            "--episode-groups" => o.episode_groups = v.parse().expect("--episode-groups N"),
            "--recipe" => o.recipe = Some(v),
            other => panic!("unknown option {other} (see the header of examples/bench.rs)"),
        }
        i += 2;
    }
    o
}

/// The rule, plasticity and feedback of a preset's learner, as JSON fields to splice into a learner.
fn recipe_fields(path: Option<&str>) -> String {
    let path = path.expect("the flp-recipe net needs --recipe FILE (metaplastic presets flp-sine --json > FILE)");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("--recipe {path}: {e}"));
    let preset: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("--recipe {path}: {e}"));
    ["rule", "plasticity", "feedback"]
        .iter()
        .map(|k| format!(r#""{k}":{}"#, preset["learner"][k]))
        .collect::<Vec<_>>()
        .join(",")
}

fn learner_config(
    units: &[i64],
    net: &str,
    device: &str,
    backward: &str,
    interval: &str,
    recipe: Option<&str>,
) -> LearnerConfig {
    let layers: Vec<String> = units.iter().map(|u| format!(r#"{{"type":"linear","units":{u}}}"#)).collect();
    let (rule, rln) = match net {
        "flp" => (r#""rule":{"type":"oja"},"plasticity":{"init":1e-4}"#.to_string(), 0),
        "flp-recipe" => (recipe_fields(recipe), 0),
        _ => (
            r#""rule":{"type":"sgd","lr":0.003},"plasticity":{"init":1e-4}"#.to_string(),
            units.len().saturating_sub(3),
        ),
    };
    let every = if interval == "auto" { "null".to_string() } else { interval.to_string() };
    let (backward, run_backwards) = if backward == "recompute" { ("adjoint", false) } else { (backward, true) };
    LearnerConfig::from_json(&format!(
        r#"{{"inputShape":[{INPUT}],"layers":[{}],"rln":{rln},"task":"regression",{rule},
            "meta":{{"backward":"{backward}","checkpointEvery":{every},"runBackwards":{run_backwards}}},"device":"{device}","seed":1}}"#,
        layers.join(",")
    ))
    .expect("bench config")
}

/// A sine-shaped batch: E episodes × T minibatches of 32 points, 320 query points.
fn batch(learner: &Learner, e: i64, steps: i64) -> EpisodeBatch {
    let opts = (Kind::Float, Device::Cpu);
    let sx = Tensor::rand([e, steps, BATCH, INPUT], opts);
    let sy = Tensor::randn([e, steps, BATCH, 1], opts);
    let qx = Tensor::rand([e, 320, INPUT], opts);
    let qy = Tensor::randn([e, 320, 1], opts);
    learner.prepare(&sx, &sy, &qx, &qy, vec![vec![]; e as usize]).expect("batch")
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Float32 rate of the nets' own product, E×[32×300]·[300×300], in GFLOP/s.
fn matmul_rate(device: Device, e: i64) -> f64 {
    let a = Tensor::randn([e, BATCH, 300], (Kind::Float, device));
    let b = Tensor::randn([e, 300, 300], (Kind::Float, device));
    let _ = a.bmm(&b);
    sync(device);
    let flops = 2.0 * (e * BATCH * 300 * 300) as f64;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let reps = 200;
        let t = Instant::now();
        for _ in 0..reps {
            let _ = a.bmm(&b);
        }
        sync(device);
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    flops / best / 1e9
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// One measurement (in a child process): "net,backward,interval,metaBatch".
fn measure(o: &Opts, spec: &str) -> String {
    let parts: Vec<&str> = spec.split(',').collect();
    let (net, backward, interval, e) = (parts[0], parts[1], parts[2], parts[3].parse::<i64>().unwrap());
    tch::set_num_threads(o.threads);
    metaplastic_core::kernels::limit_episode_groups(o.episode_groups);
    tch::manual_seed(1);
    let mut learner = Learner::new(learner_config(&o.units, net, &o.device, backward, interval, o.recipe.as_deref()))
        .expect("learner");
    let device = learner.device;
    let b = batch(&learner, e, o.steps);
    let mut adam = Adam::default();
    adam.step(&mut learner, &b).expect("warm-up step");
    sync(device);
    let mut seconds = Vec::new();
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    for _ in 0..o.repeats {
        let t = Instant::now();
        adam.step(&mut learner, &b).expect("meta-step");
        sync(device);
        seconds.push(t.elapsed().as_secs_f64());
    }
    let cpu = (cpu_seconds() - cpu0) / o.repeats as f64;
    let pass = adjoint::last_pass();
    let unstepped = pass.unstepped as f64 / (pass.unstepped + pass.recomputed + pass.skipped).max(1) as f64;
    let busy = cpu * o.repeats as f64 / wall0.elapsed().as_secs_f64();
    let peak_gpu = if device.is_cuda() { cuda_peak_mib() } else { f64::NAN };
    let rate = matmul_rate(device, e);
    let ops = if o.count_ops && backward != "autograd" {
        // After the timing (counting slows every operation down), on the libtorch-operation path.
        let (gradient, steps) = (learner.cfg.meta.gradient, o.steps as usize);
        let opts = AdjointOptions {
            interval: learner.cfg.meta.checkpoint_every,
            fused: Some(false),
            episode_groups: Some(1),
            ..Default::default()
        };
        let (run, count) =
            runtime::count_ops(|| adjoint::meta_gradient(&mut learner, &b, opts, |t| step_mode(gradient, t, steps)))
                .expect("op count");
        run.expect("meta-gradient on libtorch operations");
        format!("{:.0}", count as f64 / steps as f64)
    } else {
        "null".to_string()
    };
    format!(
        r#"{{"net":"{net}","backward":"{}","interval":"{interval}","metaBatch":{e},"steps":{},"seconds":{seconds:?},"cpuSeconds":{cpu:.3},"coresBusy":{busy:.2},"matmulGflops":{rate:.1},"peakRssMiB":{:.0},"peakGpuMiB":{},"opsPerStep":{ops},"runBack":{unstepped:.2}}}"#,
        backward,
        o.steps,
        peak_rss_mib(),
        if peak_gpu.is_nan() { "null".to_string() } else { format!("{peak_gpu:.0}") }
    )
}

fn cuda_peak_mib() -> f64 {
    // libtorch's allocator statistics are not exposed by tch; report the device's used memory instead.
    Command::new("nvidia-smi")
        .args(["--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.lines().next()?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// FLOP of one sine meta-step (forward, update and reverse of every step; matmuls only).
fn flops(units: &[i64], net: &str, e: i64, steps: i64) -> f64 {
    let mut sizes = vec![INPUT];
    sizes.extend(units);
    let weights: Vec<f64> = sizes.windows(2).map(|w| (w[0] * w[1]) as f64).collect();
    let plastic: f64 = if net.starts_with("flp") {
        weights.iter().sum()
    } else {
        weights[weights.len().saturating_sub(3)..].iter().sum()
    };
    let all: f64 = weights.iter().sum();
    let b = BATCH as f64;
    // forward 1, rule's outer product 1, reverse ≈ 4 (per plastic weight per example, ×2 FLOP).
    let per_step = if net.starts_with("flp") { 2.0 * b * plastic * 6.0 } else { 2.0 * b * (all + plastic * 5.0) };
    e as f64 * (steps as f64 * per_step + 2.0 * 320.0 * all * 3.0)
}

fn main() {
    // CUDA support must be loaded before any other libtorch call (runtime.rs).
    metaplastic_core::runtime::init();
    let o = parse();
    if o.loops {
        loops(&o);
        return;
    }
    if let Some(spec) = &o.child {
        println!("{}", measure(&o, spec));
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "metaplastic engine bench: device {}, {} thread(s), {} inner steps, units {:?}, load average {}",
        o.device,
        o.threads,
        o.steps,
        o.units,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| net | backward | interval | E | s/meta-step (median) | episodes/s | GFLOP/s | of bmm rate | CPU s/step | cores busy | peak RSS MiB | peak GPU MiB | ops/inner step | steps run back |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut lines = Vec::new();
    for net in &o.nets {
        for &e in &o.meta_batch {
            for backward in &o.backward {
                if backward == "autograd" && e > o.autograd_max {
                    println!("| {net} | autograd | - | {e} | skipped (--autograd-max {}) |", o.autograd_max);
                    continue;
                }
                let intervals: Vec<String> =
                    if backward != "autograd" { o.intervals.clone() } else { vec!["auto".into()] };
                for interval in &intervals {
                    let spec = format!("{net},{backward},{interval},{e}");
                    let mut args: Vec<String> = std::env::args().skip(1).collect();
                    args.extend(["--child".into(), spec.clone()]);
                    let out = Command::new(&exe)
                        .args(&args)
                        .env("OMP_NUM_THREADS", o.threads.to_string())
                        .output()
                        .expect("child");
                    let text = String::from_utf8_lossy(&out.stdout);
                    let Some(line) = text.lines().last().filter(|_| out.status.success()) else {
                        println!(
                            "| {net} | {backward} | {interval} | {e} | failed: {} |",
                            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
                        );
                        continue;
                    };
                    let v: serde_json::Value = serde_json::from_str(line).expect("child JSON");
                    let mut s: Vec<f64> =
                        v["seconds"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                    s.sort_by(|a, b| a.total_cmp(b));
                    let med = s[s.len() / 2];
                    let gflops = flops(&o.units, net, e, o.steps) / med / 1e9;
                    let rate = v["matmulGflops"].as_f64().unwrap();
                    println!(
                        "| {net} | {backward} | {interval} | {e} | {med:.3} | {:.2} | {gflops:.1} | {:.0}% | {} | {} | {} | {} | {} | {} |",
                        e as f64 / med,
                        100.0 * gflops / rate,
                        v["cpuSeconds"],
                        v["coresBusy"],
                        v["peakRssMiB"],
                        v["peakGpuMiB"],
                        v["opsPerStep"],
                        v["runBack"]
                    );
                    lines.push(line.to_string());
                }
            }
        }
    }
    if let Some(path) = &o.json {
        std::fs::write(path, lines.join("\n") + "\n").expect("write --json");
        println!("results: {path}");
    }
}

/// The fused CPU loops alone (kernels.rs) on the net's layers, as one inner step calls them: the rule's
/// step, and its adjoint with and without a pending dzᵀa, each reading a new W every step from a
/// 20-step segment (as the reverse pass does), at the first meta-batch size.
fn loops(o: &Opts) {
    use metaplastic_core::kernels::{local_step, local_step_adjoint};
    tch::set_num_threads(o.threads);
    let (e, opts) = (o.meta_batch[0], (Kind::Float, Device::Cpu));
    let mut sizes = vec![INPUT];
    sizes.extend(&o.units);
    let shapes: Vec<(i64, i64)> = sizes.windows(2).map(|w| (w[1], w[0])).collect();
    let weights: i64 = shapes.iter().map(|(out, inp)| out * inp).sum::<i64>() * e;
    let segment: Vec<Vec<Tensor>> =
        (0..20).map(|_| shapes.iter().map(|&(out, inp)| Tensor::randn([e, out, inp], opts)).collect()).collect();
    let per_layer =
        |f: &dyn Fn(i64, i64) -> Tensor| -> Vec<Tensor> { shapes.iter().map(|&(out, inp)| f(out, inp)).collect() };
    let rates = per_layer(&|out, inp| Tensor::rand([out, inp], opts) * 1e-4);
    let post = per_layer(&|out, _| Tensor::randn([e, BATCH, out], opts));
    let pre = per_layer(&|_, inp| Tensor::randn([e, BATCH, inp], opts));
    let mut g = per_layer(&|out, inp| Tensor::randn([e, out, inp], opts));
    let mut rate_grad = per_layer(&|out, inp| Tensor::zeros([out, inp], opts));
    println!("fused loops, {} thread(s), meta-batch {e}, layers {shapes:?} (outputs, inputs)", o.threads);
    println!("| loop | ms per inner step | ns per weight | GFLOP/s of its products |");
    println!("|---|---:|---:|---:|");
    // Each loop: its name, whether it is the adjoint, whether a dzᵀa is owed to G (one more outer
    // product), whether it runs the step backwards (writing W), whether the rule is Oja's (else Hebb's).
    let rows = [
        ("step (W' = W + P ⊙ (ãᵀa − r ⊙ W))", false, false, false, true),
        ("adjoint", true, false, false, true),
        ("adjoint with a pending dzᵀa", true, true, false, true),
        ("adjoint with a pending dzᵀa, running the step backwards", true, true, true, true),
        ("the same for Hebb's rule (no decay)", true, true, true, false),
    ];
    for (name, adjoint, owed, unstep, oja) in rows {
        let outer_products = if owed { 2.0 } else { 1.0 };
        let mut run = |t: usize| {
            for (k, w) in segment[t % segment.len()].iter().enumerate() {
                if adjoint {
                    let out = local_step_adjoint(
                        &mut g[k],
                        true,
                        w,
                        unstep,
                        &post[k],
                        &pre[k],
                        &rates[k],
                        oja,
                        1.0,
                        None,
                        &mut rate_grad[k],
                        owed.then_some((&post[k], &pre[k])),
                    );
                    drop(out.expect("adjoint"));
                } else {
                    drop(local_step(w, &post[k], &pre[k], &rates[k], true, 1.0, None).expect("step"));
                }
            }
        };
        (0..20).for_each(&mut run);
        let steps = 200;
        let start = Instant::now();
        (0..steps).for_each(&mut run);
        let per_step = start.elapsed().as_secs_f64() / steps as f64;
        println!(
            "| {name} | {:.3} | {:.2} | {:.1} |",
            per_step * 1e3,
            per_step * 1e9 / weights as f64,
            outer_products * 2.0 * BATCH as f64 * weights as f64 / per_step / 1e9
        );
    }
}
