//! Scheduling on libtorch's own intra-op threads: row ranges of one loop, whole tasks (the layers of a
//! step, groups of episodes) shared out by size, and a producer pipelined with the tasks it releases.
use crate::{Error, Result};
use tch::Device;

extern "C" {
    fn mp_parallel_for(
        begin: i64,
        end: i64,
        grain: i64,
        body: extern "C" fn(*mut std::ffi::c_void, i64, i64),
        ctx: *mut std::ffi::c_void,
    ) -> i32;
}

extern "C" fn run_block<F: Fn(usize, usize) + Sync>(ctx: *mut std::ffi::c_void, begin: i64, end: i64) {
    // A panic must not unwind into C++: the blocks only index rows checked before the split.
    let f = unsafe { &*(ctx as *const F) };
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(begin as usize, end as usize))).is_err() {
        std::process::abort();
    }
}

/// Runs `f(begin, end)` over 0..n in blocks of at least `grain` on libtorch's own intra-op threads
/// (cpp/parallel.cpp): the same team as its operations and MKL, so no second set of threads competes
/// with that team's spin-waiting for the cores. If libtorch cannot start its threads, the whole range
/// runs here, in order.
fn on_torch_threads<F: Fn(usize, usize) + Sync>(n: usize, grain: usize, f: &F) {
    let ctx = f as *const F as *mut std::ffi::c_void;
    if unsafe { mp_parallel_for(0, n as i64, grain as i64, run_block::<F>, ctx) } != 0 {
        f(0, n);
    }
}

/// Runs `f(first_row, last_row)` over `rows` rows in contiguous blocks on libtorch's threads.
pub(super) fn parallel_rows<F: Fn(usize, usize) + Sync>(rows: usize, f: F) {
    let grain = 16;
    if rows <= grain || tch::get_num_threads() <= 1 {
        f(0, rows);
        return;
    }
    on_torch_threads(rows, grain, &f);
}

/// Runs `task(k)` for every task k (layers of a step, or groups of episodes), shared out over libtorch's
/// intra-op threads (largest first, each to the least loaded thread; `sizes` are the tasks' sizes).
/// Within a task everything runs on one thread: libtorch's operations and MKL stay serial inside a
/// parallel region. A CPU step's per-layer work is many small operations between the weight-sized ones;
/// split this way, both cores work through all of it instead of one core through the small ones.
/// Tasks run without a graph unless they turn it on (`tch::with_grad`): grad mode is per thread.
///
/// `task` may read tensors that every task shares (activations, tapes, parameters) but must write only
/// task k's own: libtorch tensors may be read from several threads at once (tch just does not mark them
/// `Sync`).
pub fn parallel_tasks<T: Send>(sizes: &[usize], task: impl Fn(usize) -> Result<T>) -> Result<Vec<T>> {
    struct Shared<F>(F);
    // SAFETY: see above; the closure only reads what the tasks share.
    unsafe impl<F> Sync for Shared<F> {}
    impl<F> Shared<F> {
        fn call<T>(&self, k: usize) -> Result<T>
        where
            F: Fn(usize) -> Result<T>,
        {
            (self.0)(k)
        }
    }
    let shared = Shared(task);
    let task = |k: usize| shared.call(k);
    let threads = (tch::get_num_threads().max(1) as usize).min(sizes.len());
    if threads <= 1 {
        return (0..sizes.len()).map(&task).collect();
    }
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(sizes[k]));
    let mut bins: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); threads];
    for k in order {
        let lightest = bins.iter_mut().min_by_key(|(load, _)| *load).expect("threads > 1");
        lightest.0 += sizes[k];
        lightest.1.push(k);
    }
    let slots: Vec<std::sync::Mutex<Option<Result<T>>>> =
        (0..sizes.len()).map(|_| std::sync::Mutex::new(None)).collect();
    let work = |lo: usize, hi: usize| {
        let _no_grad = tch::no_grad_guard(); // grad mode is per thread; these threads never had it set
        for (_, ks) in &bins[lo..hi] {
            for &k in ks {
                let result = guarded(format_args!("task {k}"), || task(k));
                *slots[k].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            }
        }
    };
    on_torch_threads(threads, 1, &work);
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Err(Error::Internal("a task did not run".into())))
        })
        .collect()
}

/// `work()`, a panic in it becoming `what`'s error: it must not unwind through OpenMP, and the caller
/// reports it like any other failure.
fn guarded<T>(what: impl std::fmt::Display, work: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|p| {
        let message = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(Error::Internal(format!("{what} failed: {message}")))
    })
}

/// Runs `produce(release)` on one of libtorch's threads while the others run `task(k)` for every k, each
/// as soon as `produce` has called `release(k)`; the producer's thread joins them once it is done. A
/// step's backward chain through the layers, top-down, releases each layer to the next step's adjoint
/// loop as it passes it: the two overlap on two cores instead of taking turns. With one thread, `produce`
/// runs first and the tasks after it, in release order. `produce` must release every k once; tasks it
/// never released (it failed first) report that they did not run. Results in k order; the producer's
/// error comes first. Shared tensors as in `parallel_tasks`; tasks run without a graph.
pub fn pipelined_tasks<T: Send>(
    n: usize,
    produce: impl FnOnce(&dyn Fn(usize)) -> Result<()>,
    task: impl Fn(usize) -> Result<T>,
) -> Result<Vec<T>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    struct Shared<P, F>(Mutex<Option<P>>, F);
    // SAFETY: as in `parallel_tasks`: the task closure only reads what the tasks share, and the producer
    // runs on exactly one thread (taken out of its mutex once).
    unsafe impl<P, F> Sync for Shared<P, F> {}
    impl<P, F> Shared<P, F> {
        fn producer(&self) -> Option<P> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
        }
        fn task(&self) -> &F {
            &self.1
        }
    }
    let shared = Shared(Mutex::new(Some(produce)), task);
    let released: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(usize::MAX)).collect();
    let (count, next, done) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicBool::new(false));
    let produced: Mutex<Option<Result<()>>> = Mutex::new(None);
    let slots: Vec<Mutex<Option<Result<T>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let release = |k: usize| {
        let c = count.load(Ordering::Relaxed);
        if c < n {
            released[c].store(k, Ordering::Relaxed);
            count.store(c + 1, Ordering::Release);
        }
    };
    let consume = || {
        let mut idle = 0u32;
        loop {
            let c = next.load(Ordering::Acquire);
            if c < count.load(Ordering::Acquire) {
                if next.compare_exchange(c, c + 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    let k = released[c].load(Ordering::Relaxed);
                    let result = guarded(format_args!("task {k}"), || (shared.task())(k));
                    *slots[k].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                    idle = 0;
                }
            } else if done.load(Ordering::Acquire) {
                if next.load(Ordering::Acquire) >= count.load(Ordering::Acquire) {
                    return;
                }
            } else if idle < 4096 {
                // A waiting thread spins briefly (a layer of the chain takes tens of microseconds), then
                // gives its core away: on a busy machine the producer may be the one waiting for it.
                idle += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    };
    let work = |lo: usize, hi: usize| {
        let _no_grad = tch::no_grad_guard();
        for index in lo..hi {
            let producer = if index == 0 { shared.producer() } else { None };
            if let Some(produce) = producer {
                let result = guarded("the producer", || produce(&release));
                *produced.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                done.store(true, Ordering::Release);
            }
            consume();
        }
    };
    let threads = (tch::get_num_threads().max(1) as usize).min(n + 1).max(1);
    if threads <= 1 {
        work(0, 1);
    } else {
        on_torch_threads(threads, 1, &work);
    }
    produced
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_else(|| Err(Error::Internal("the producer did not run".into())))?;
    slots
        .into_iter()
        .enumerate()
        .map(|(k, s)| {
            s.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Err(Error::Internal(format!("task {k} was never released"))))
        })
        .collect()
}

/// The most groups `episode_groups` makes by default (0: one per thread); `limit_episode_groups`.
static EPISODE_GROUPS_CAP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Caps how many groups of episodes run side by side on the CPU where the caller does not say (1: the
/// whole meta-batch as one, its work shared over the threads step by step): lets the bench measure both
/// ways, and a user rule one out.
#[doc(hidden)]
pub fn limit_episode_groups(cap: usize) {
    EPISODE_GROUPS_CAP.store(cap, std::sync::atomic::Ordering::Relaxed);
}

/// E episodes as contiguous groups (first, count): `wanted` of them, or by default one per CPU thread
/// (at most `limit_episode_groups`). A lifetime's steps must run in order, and a paper-size step's work
/// split over two cores keeps them only 1.3–1.7× busy (its chain of small products through the layers,
/// and the layers' uneven split); separate episodes share nothing until their results are summed, so
/// from two episodes on, each thread takes whole ones (`in_episode_groups`). On a GPU the episodes stay
/// together by default: there the batch is what fills the device.
pub fn episode_groups(e: i64, device: Device, wanted: Option<usize>) -> Vec<(i64, i64)> {
    let threads = tch::get_num_threads().max(1) as usize;
    let groups = match wanted {
        Some(n) => n,
        None if device != Device::Cpu => 1,
        None => match EPISODE_GROUPS_CAP.load(std::sync::atomic::Ordering::Relaxed) {
            0 => threads,
            cap => cap.min(threads),
        },
    };
    let groups = (groups as i64).clamp(1, e.max(1));
    (0..groups).map(|g| (e * g / groups, e * (g + 1) / groups - e * g / groups)).collect()
}

/// `group(first, count)` for every group, each on one of libtorch's threads (`parallel_tasks`; a single
/// group runs here): results in group order.
pub fn in_episode_groups<T: Send>(groups: &[(i64, i64)], group: impl Fn(i64, i64) -> Result<T>) -> Result<Vec<T>> {
    if let [(first, count)] = groups {
        return Ok(vec![group(*first, *count)?]);
    }
    let sizes: Vec<usize> = groups.iter().map(|&(_, count)| count as usize).collect();
    parallel_tasks(&sizes, |g| group(groups[g].0, groups[g].1))
}
