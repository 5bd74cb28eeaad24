//! Fused CPU loops for the local rules' weight-sized work: one pass over memory per layer and step,
//! where the same arithmetic in libtorch operations makes 4–12 passes and as many weight-sized
//! temporaries. Rows are split over libtorch's own threads. The libtorch-operation forms (adjoint/)
//! stay for other devices and are tested against these.
//!
//! Shapes (contiguous, float32 or float64, on the CPU): W, G, Q [E, O, I]; the teaching activity ã
//! [E, B, O] and the presynaptic activity a [E, B, I], whose outer product ãᵀa and Oja's decay
//! r = Σ_b ã² are formed here, row block by row block, never stored; the rate P is
//! broadcast from [O, I], [O, 1] or [] and read through its strides; an optional per-row factor c [E, O]
//! (the update normalisation) scales each row's update; the rate gradient accumulates into a full
//! [O, I] (summed over episodes) and is reduced to P's shape once at the end.
use crate::{Error, Result};
use std::ops::{Add, Div, Mul, Sub};
use tch::{Device, Kind, Tensor};

trait Real:
    Copy + Send + Sync + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + 'static
{
    fn to_f64(self) -> f64;
    fn of(x: f64) -> Self;
    /// self · a + b in one rounding: one instruction where the loop is compiled with FMA (x86 with
    /// AVX2, every ARM64); only the outer products use it, where it halves the instruction count.
    fn mul_add(self, a: Self, b: Self) -> Self;
    const ZERO: Self;
}
impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
    }
    const ZERO: Self = 0.0;
}
impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
    }
    const ZERO: Self = 0.0;
}

/// Whether the fused loops can serve tensors of this kind on this device.
pub fn applies(kind: Kind, device: Device) -> bool {
    device == Device::Cpu && matches!(kind, Kind::Float | Kind::Double)
}

/// A matrix read by row and column strides (0 where broadcast): the rate P as [O, I], the row factor c as
/// [E, O].
#[derive(Clone, Copy)]
struct Strided<T> {
    ptr: *const T,
    row: usize,
    col: usize,
}
// Only read, by every thread.
unsafe impl<T> Send for Strided<T> {}
unsafe impl<T> Sync for Strided<T> {}
/// One row of P: its own values, or one value for the whole row (neuron, layer, global rates).
enum RateRow<'a, T> {
    Values(&'a [T]),
    Scalar(T),
}

impl<T: Copy> Strided<T> {
    /// `t`, a 2-D CPU tensor of `kind` (`what` names it in the error), read in place by its strides.
    fn of(t: &Tensor, kind: Kind, what: &str) -> Result<Self> {
        let stride = t.stride();
        if !on_cpu_as(t, kind) || stride.len() != 2 || stride.iter().any(|&s| s < 0) {
            return Err(Error::Internal(format!(
                "fused kernel: {what} must be a 2-D CPU tensor of {kind:?}, got {:?} {:?} with strides {stride:?}",
                t.kind(),
                t.device()
            )));
        }
        Ok(Strided { ptr: t.data_ptr() as *const T, row: stride[0] as usize, col: stride[1] as usize })
    }

    /// The element at (row, col).
    #[inline(always)]
    fn at(&self, row: usize, col: usize) -> T {
        // SAFETY: the shape and non-negative strides were checked where the view was made.
        unsafe { *self.ptr.add(row * self.row + col * self.col) }
    }

    /// Prefetches the chunk of row `row` at column `base` (nothing for a rate broadcast along rows).
    #[inline(always)]
    fn prefetch(&self, row: usize, base: usize) {
        if self.col != 0 {
            prefetch(self.ptr.wrapping_add(row * self.row + base * self.col));
        }
    }

    fn row(&self, row: usize, cols: usize) -> RateRow<'_, T> {
        unsafe {
            let base = self.ptr.add(row * self.row);
            if self.col == 0 {
                RateRow::Scalar(*base)
            } else {
                RateRow::Values(std::slice::from_raw_parts(base, cols))
            }
        }
    }
}

/// P broadcast to [O, I] (kept alive by the caller while the view is read).
fn rate<T: Copy>(p: &Tensor, kind: Kind, o: i64, i: i64) -> Result<(Tensor, Strided<T>)> {
    let expanded = p.f_expand([o, i], false)?;
    let r = Strided::of(&expanded, kind, "the rate")?;
    Ok((expanded, r))
}

fn on_cpu_as(t: &Tensor, kind: Kind) -> bool {
    t.device() == Device::Cpu && t.kind() == kind
}

fn check(t: &Tensor, kind: Kind, what: &str) -> Result<()> {
    if !on_cpu_as(t, kind) || !t.is_contiguous() {
        return Err(Error::Internal(format!(
            "fused kernel: {what} must be a contiguous CPU tensor of {kind:?}, got {:?} {:?}",
            t.kind(),
            t.device()
        )));
    }
    Ok(())
}

/// What the adjoint loop returns besides the updated G.
pub struct StepAdjoint {
    /// Q = c P ⊙ G [E, O, I].
    pub q: Tensor,
    /// rowsum(Q ⊙ W) [E, O] (Oja).
    pub rowsum: Option<Tensor>,
    /// ∂L/∂c of each row's factor [E, O] (when a factor was given).
    pub scale_grad: Option<Tensor>,
}

/// The per-row factor c [E, O], read by its strides: one value per episode broadcast along the rows (the
/// presynaptic normalisation, row stride 0) is read in place, without a copy at the weights' row count.
fn row_scale<T: Copy>(c: Option<&Tensor>, kind: Kind, e: i64, o: i64) -> Result<Option<Strided<T>>> {
    let Some(c) = c else { return Ok(None) };
    if c.size() != [e, o] {
        return Err(Error::Internal(format!("fused kernel: row factor {:?} is not [{e}, {o}]", c.size())));
    }
    Strided::of(c, kind, "row factor").map(Some)
}

/// The step's activities: teaching ã [E, B, O] and presynaptic a [E, B, I], read in place.
struct Activity<T> {
    post: Ptr<T>,
    pre: Ptr<T>,
    batch: usize,
    outputs: usize,
    inputs: usize,
    /// The last I mod LANES columns of a, zero-padded to one whole chunk [E, B, LANES]: a row's
    /// remainder then runs as one more vector chunk (column by column, each a serial chain of B
    /// multiply-adds, it took a quarter of the loops' time on rows of 300).
    tail: Vec<T>,
}

impl<T: Real> Activity<T> {
    fn of(post: &Tensor, pre: &Tensor, kind: Kind, e: i64, o: i64, i: i64) -> Result<Self> {
        check(post, kind, "teaching activity")?;
        check(pre, kind, "presynaptic activity")?;
        let (sp, sa) = (post.size(), pre.size());
        if sp.len() != 3 || sp[0] != e || sp[2] != o || sa.len() != 3 || sa[0] != e || sa[1] != sp[1] || sa[2] != i {
            return Err(Error::Internal(format!(
                "fused kernel: activities {sp:?} and {sa:?} do not fit [{e}, B, {o}] and [{e}, B, {i}]"
            )));
        }
        let (rows, inputs) = ((e * sp[1]) as usize, i as usize);
        let whole = inputs - inputs % LANES;
        // SAFETY: checked above: contiguous, of this kind, [E, B, I].
        let a = unsafe { std::slice::from_raw_parts(pre.data_ptr() as *const T, rows * inputs) };
        let mut tail = vec![T::ZERO; if whole < inputs { rows * LANES } else { 0 }];
        for (padded, row) in tail.chunks_exact_mut(LANES).zip(a.chunks_exact(inputs)) {
            padded[..inputs - whole].copy_from_slice(&row[whole..]);
        }
        Ok(Activity {
            post: Ptr::of(post),
            pre: Ptr::of(pre),
            batch: sp[1] as usize,
            outputs: o as usize,
            inputs,
            tail,
        })
    }

    /// ã[ep, b, o0 .. o0 + R].
    #[inline(always)]
    fn post_at<const R: usize>(&self, ep: usize, b: usize, o0: usize) -> &[T; R] {
        unsafe { &*(self.post.0.add((ep * self.batch + b) * self.outputs + o0) as *const [T; R]) }
    }

    /// Oja's decay factors r = Σ_b ã[ep, b, o]² of rows o0 .. o0 + R.
    #[inline(always)]
    fn decay<const R: usize>(&self, ep: usize, o0: usize) -> [T; R] {
        let mut r = [T::ZERO; R];
        for b in 0..self.batch {
            let u = self.post_at::<R>(ep, b, o0);
            for k in 0..R {
                r[k] = r[k] + u[k] * u[k];
            }
        }
        r
    }

    /// The outer product ãᵀa of rows o0 .. o0 + R at columns base .. base + LANES, kept in registers:
    /// each presynaptic chunk loaded once serves all R rows. The chunk past the last whole one is the
    /// padded remainder (zero beyond the row's end).
    #[inline(always)]
    fn outer<const R: usize>(&self, ep: usize, o0: usize, base: usize) -> [[T; LANES]; R] {
        let (first, stride) = if base + LANES <= self.inputs {
            (self.pre.0.wrapping_add(ep * self.batch * self.inputs + base) as *const T, self.inputs)
        } else {
            (self.tail[ep * self.batch * LANES..].as_ptr(), LANES)
        };
        let mut h = [[T::ZERO; LANES]; R];
        // Raw strides over b: the rows and columns were checked against the shapes when the loop began.
        unsafe {
            let mut a = first as *const [T; LANES];
            let mut u = self.post.0.add(ep * self.batch * self.outputs + o0) as *const [T; R];
            for _ in 0..self.batch {
                let (av, uv) = (&*a, &*u);
                for k in 0..R {
                    for l in 0..LANES {
                        h[k][l] = uv[k].mul_add(av[l], h[k][l]);
                    }
                }
                a = (a as *const T).add(stride) as *const [T; LANES];
                u = (u as *const T).add(self.outputs) as *const [T; R];
            }
        }
        h
    }
}

/// Asks the CPU to bring the chunk at `p` (LANES elements) into its caches ahead of use. The loops walk
/// BLOCK rows at once, column chunk by column chunk: many short interleaved streams that the hardware
/// prefetchers follow poorly, so each chunk fetches the same chunk of the next row block itself.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of::<T>() * LANES;
        let mut at = 0;
        while at < bytes {
            // SAFETY: a prefetch is only a hint; it never faults, even past the end of a buffer.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((p as *const i8).wrapping_add(at))
            };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Rows per register block of the outer product (then 1 for what is left of a row range). Four rows
/// of accumulators stay in registers; eight were spilled to memory and ran 3× slower.
const BLOCK: usize = 4;

/// Raw row pointers: each thread gets disjoint rows, so the writes never overlap.
#[derive(Clone, Copy)]
struct Ptr<T>(*mut T);
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}
impl<T> Ptr<T> {
    fn of(t: &Tensor) -> Self {
        Ptr(t.data_ptr() as *mut T)
    }
    /// Row `row` of length `len`.
    unsafe fn row<'a>(self, row: usize, len: usize) -> &'a mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(row * len), len) }
    }
}

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
fn parallel_rows<F: Fn(usize, usize) + Sync>(rows: usize, f: F) {
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

/// The widest vector instructions this CPU has, detected once (the loops below are compiled for each).
#[derive(Clone, Copy, PartialEq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // one build of the loops elsewhere
enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

/// 0: the widest the CPU has; otherwise a cap set by `limit_vector_width` (1 baseline, 2 AVX2).
static ISA_CAP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Caps the vector instructions the fused loops use ("baseline", "avx2", or anything else for the
/// widest): lets tests run every compiled variant on one machine, and a user rule out a suspect one.
#[doc(hidden)]
pub fn limit_vector_width(cap: &str) {
    let v = match cap {
        "baseline" => 1,
        "avx2" => 2,
        _ => 0,
    };
    ISA_CAP.store(v, std::sync::atomic::Ordering::Relaxed);
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn isa() -> Isa {
    static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    let widest = *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    });
    match (ISA_CAP.load(std::sync::atomic::Ordering::Relaxed), widest) {
        (1, _) => Isa::Baseline,
        (2, Isa::Avx512) => Isa::Avx2,
        _ => widest,
    }
}

/// Defines `$name(args, lo, hi)`: the `#[inline(always)]` loop `$body` compiled for the CPU's widest
/// vectors (AVX-512, AVX2 with FMA) and for the baseline, chosen at run time.
macro_rules! multiversion {
    ($name:ident, $body:ident, $args:ident) => {
        fn $name<T: Real>(a: &$args<T>, lo: usize, hi: usize) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn wide<T: Real>(a: &$args<T>, lo: usize, hi: usize) {
                    $body(a, lo, hi)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn mid<T: Real>(a: &$args<T>, lo: usize, hi: usize) {
                    $body(a, lo, hi)
                }
                match isa() {
                    Isa::Avx512 => return unsafe { wide(a, lo, hi) },
                    Isa::Avx2 => return unsafe { mid(a, lo, hi) },
                    Isa::Baseline => {}
                }
            }
            $body(a, lo, hi)
        }
    };
}

#[inline(always)]
fn lanes<T>(s: &[T], base: usize) -> &[T; LANES] {
    s[base..base + LANES].try_into().expect("a whole chunk")
}

#[inline(always)]
fn lanes_mut<T>(s: &mut [T], base: usize) -> &mut [T; LANES] {
    (&mut s[base..base + LANES]).try_into().expect("a whole chunk")
}

/// The chunk of `s` at `base`: a whole one (`FULL`), or the row's remainder zero-padded.
#[inline(always)]
fn load<T: Real, const FULL: bool>(s: &[T], base: usize) -> [T; LANES] {
    if FULL {
        return *lanes(s, base);
    }
    let mut v = [T::ZERO; LANES];
    v[..s.len() - base].copy_from_slice(&s[base..]);
    v
}

/// Writes a chunk back: whole, or only the lanes within the row.
#[inline(always)]
fn store<T: Real, const FULL: bool>(s: &mut [T], base: usize, v: &[T; LANES]) {
    if FULL {
        *lanes_mut(s, base) = *v;
    } else {
        let n = s.len() - base;
        s[base..].copy_from_slice(&v[..n]);
    }
}

/// Elements per unrolled chunk: independent partial sums (a single running sum would serialize the loop,
/// since the compiler may not reassociate) and one vector of f32 lanes on AVX-512.
const LANES: usize = 16;

/// W' = W + m c P ⊙ (ãᵀa − r ⊙ W) with r = Σ_b ã² (Oja) or without r (Hebb); c per row (1 when
/// absent). The outer product ãᵀa is formed in registers, never as a weight-sized tensor.
#[allow(clippy::too_many_arguments)]
pub fn local_step(
    w: &Tensor,
    post: &Tensor,
    pre: &Tensor,
    p: &Tensor,
    oja: bool,
    m: f64,
    c: Option<&Tensor>,
) -> Result<Tensor> {
    match w.kind() {
        Kind::Float => step_typed::<f32>(w, post, pre, p, oja, m, c, false),
        Kind::Double => step_typed::<f64>(w, post, pre, p, oja, m, c, false),
        k => Err(Error::Internal(format!("fused kernel: unsupported kind {k:?}"))),
    }
}

/// `local_step` writing W' over W (evaluation: no one reads W afterwards). Writing into the rows just
/// read spares the memory traffic of a new tensor's first writes.
pub fn local_step_in_place(
    w: &mut Tensor,
    post: &Tensor,
    pre: &Tensor,
    p: &Tensor,
    oja: bool,
    m: f64,
    c: Option<&Tensor>,
) -> Result<()> {
    match w.kind() {
        Kind::Float => step_typed::<f32>(w, post, pre, p, oja, m, c, true).map(drop),
        Kind::Double => step_typed::<f64>(w, post, pre, p, oja, m, c, true).map(drop),
        k => Err(Error::Internal(format!("fused kernel: unsupported kind {k:?}"))),
    }
}

struct StepArgs<T> {
    w: Ptr<T>,
    out: Ptr<T>,
    act: Activity<T>,
    rate: Strided<T>,
    oja: bool,
    scale: Option<Strided<T>>,
    m: T,
}

/// One row of P as a source of chunks: its own values, or one value broadcast.
impl<T: Real> RateRow<'_, T> {
    #[inline(always)]
    fn chunk<const FULL: bool>(&self, base: usize) -> [T; LANES] {
        match self {
            RateRow::Values(p) => load::<T, FULL>(p, base),
            RateRow::Scalar(p) => [*p; LANES],
        }
    }
}

/// R rows of one episode starting at output o0: W' = W + m P ⊙ (H − d W).
#[inline(always)]
fn step_block<T: Real, const R: usize>(a: &StepArgs<T>, ep: usize, o0: usize) {
    let (cols, outputs) = (a.act.inputs, a.act.outputs);
    let first = ep * outputs + o0;
    let d = if a.oja { a.act.decay::<R>(ep, o0) } else { [T::ZERO; R] };
    let m: [T; R] = std::array::from_fn(|k| a.scale.map_or(a.m, |c| a.m * c.at(ep, o0 + k)));
    let p: [RateRow<'_, T>; R] = std::array::from_fn(|k| a.rate.row(o0 + k, cols));
    let mut out: [&mut [T]; R] = std::array::from_fn(|k| unsafe { a.out.row(first + k, cols) });
    // In place, W is read from the output rows themselves (never through a second reference).
    let w: Option<[&[T]; R]> =
        (a.w.0 != a.out.0).then(|| std::array::from_fn(|k| unsafe { &*(a.w.row(first + k, cols) as *const [T]) }));
    let rows = StepRows { m, d, p, w };
    let whole = cols - cols % LANES;
    for base in (0..whole).step_by(LANES) {
        for k in 0..R {
            prefetch(a.w.0.wrapping_add((first + R + k) * cols + base));
            a.rate.prefetch(o0 + R + k, base);
        }
        step_chunk::<T, R, true>(&a.act, ep, o0, base, &rows, &mut out);
    }
    if whole < cols {
        step_chunk::<T, R, false>(&a.act, ep, o0, whole, &rows, &mut out);
    }
}

/// What a block of R rows reads in every chunk of a step (W: None where the step runs in place).
struct StepRows<'a, T, const R: usize> {
    m: [T; R],
    d: [T; R],
    p: [RateRow<'a, T>; R],
    w: Option<[&'a [T]; R]>,
}

/// One chunk of R rows of a step (`FULL`: a whole one; otherwise the rows' padded remainder).
#[inline(always)]
fn step_chunk<T: Real, const R: usize, const FULL: bool>(
    act: &Activity<T>,
    ep: usize,
    o0: usize,
    base: usize,
    rows: &StepRows<'_, T, R>,
    out: &mut [&mut [T]; R],
) {
    let h = act.outer::<R>(ep, o0, base);
    for k in 0..R {
        // On local copies: rows reached through arrays of references carry no no-alias promise,
        // and the compiler would not vectorize the loop on the rows in place.
        let wk = match &rows.w {
            Some(w) => load::<T, FULL>(w[k], base),
            None => load::<T, FULL>(out[k], base),
        };
        let pk = rows.p[k].chunk::<FULL>(base);
        let (m, d) = (rows.m[k], rows.d[k]);
        let mut ok = [T::ZERO; LANES];
        for l in 0..LANES {
            ok[l] = wk[l] + m * pk[l] * (h[k][l] - d * wk[l]);
        }
        store::<T, FULL>(out[k], base, &ok);
    }
}

/// Rows lo..hi (of E·O), in blocks of BLOCK rows of one episode where they fit.
#[inline(always)]
fn step_rows<T: Real>(a: &StepArgs<T>, lo: usize, hi: usize) {
    let outputs = a.act.outputs;
    let mut row = lo;
    while row < hi {
        let (ep, o) = (row / outputs, row % outputs);
        let room = (outputs - o).min(hi - row);
        if room >= BLOCK {
            step_block::<T, BLOCK>(a, ep, o);
            row += BLOCK;
        } else {
            step_block::<T, 1>(a, ep, o);
            row += 1;
        }
    }
}
multiversion!(step_dispatch, step_rows, StepArgs);

#[allow(clippy::too_many_arguments)]
fn step_typed<T: Real>(
    w: &Tensor,
    post: &Tensor,
    pre: &Tensor,
    p: &Tensor,
    oja: bool,
    m: f64,
    c: Option<&Tensor>,
    in_place: bool,
) -> Result<Tensor> {
    let kind = w.kind();
    let [e, o, i] = w.size()[..] else { return Err(Error::Internal("fused kernel: W must be [E, O, I]".into())) };
    check(w, kind, "W")?;
    let out = if in_place { w.shallow_clone() } else { w.f_empty_like()? };
    let (_keep, rate) = rate::<T>(p, kind, o, i)?;
    let args = StepArgs {
        w: Ptr::of(w),
        out: Ptr::of(&out),
        act: Activity::of(post, pre, kind, e, o, i)?,
        rate,
        oja,
        scale: row_scale::<T>(c, kind, e, o)?,
        m: T::of(m),
    };
    parallel_rows((e * o) as usize, |lo, hi| step_dispatch(&args, lo, hi));
    Ok(out)
}

/// The adjoint of `local_step` for G = ∂L/∂W' (with `update`, overwritten in place by G − m Q ⊙ r, the
/// direct part of ∂L/∂W; first-order steps leave it). Accumulates m G ⊙ (ãᵀa − r ⊙ W) into
/// `grad_rate` [O, I]; returns Q = c P ⊙ G and, with Oja, rowsum(Q ⊙ W) [E, O].
///
/// `pending` = (d [E, B, O], x [E, B, I]) is a low-rank part of G not yet added to it: the loop uses
/// G + dᵀx throughout, formed in registers like ãᵀa, and writes it back (so afterwards G holds it). The
/// step after this one in the reverse pass hands its forward pass's dzᵀa over this way instead of a
/// weight-sized read and write of its own.
///
/// With `unstep`, `w` holds the weights after the step, W'. The loop runs the step backwards,
/// W = (W' − s ãᵀa) / (1 − s r) with s = m c P, uses that W throughout and writes it over W' in place:
/// the reverse pass then needs neither the weights of every step nor their recomputation.
#[allow(clippy::too_many_arguments)]
pub fn local_step_adjoint(
    g: &mut Tensor,
    update: bool,
    w: &Tensor,
    unstep: bool,
    post: &Tensor,
    pre: &Tensor,
    p: &Tensor,
    oja: bool,
    m: f64,
    c: Option<&Tensor>,
    grad_rate: &mut Tensor,
    pending: Option<(&Tensor, &Tensor)>,
) -> Result<StepAdjoint> {
    match w.kind() {
        Kind::Float => adjoint_typed::<f32>(g, update, w, unstep, post, pre, p, oja, m, c, grad_rate, pending),
        Kind::Double => adjoint_typed::<f64>(g, update, w, unstep, post, pre, p, oja, m, c, grad_rate, pending),
        k => Err(Error::Internal(format!("fused kernel: unsupported kind {k:?}"))),
    }
}

struct AdjointArgs<T> {
    g: Ptr<T>,
    w: Ptr<T>,
    q: Ptr<T>,
    grad_rate: Ptr<T>,
    act: Activity<T>,
    /// The part of G still to add, as (d, x) whose outer product dᵀx it is.
    pending: Option<Activity<T>>,
    rate: Strided<T>,
    oja: bool,
    scale: Option<Strided<T>>,
    rowsum: Option<Ptr<T>>,
    scale_grad: Option<Ptr<T>>,
    m: T,
    update: bool,
    /// W holds the weights after the step: run it backwards in place first (`local_step_adjoint`).
    unstep: bool,
    episodes: usize,
}

/// One synapse: e = ∂L/∂(row factor · P) = m G (H − d W) into the rate gradient, Q = c P G,
/// Σ Q W and Σ P e into the row sums, and G ← G − m d Q. Hebb's rule (no `OJA`) has no decay d: its
/// terms in W, the row sum Σ Q W and the division are compiled out.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn synapse<T: Real, const OJA: bool>(
    g: &mut T,
    gr: &mut T,
    q: &mut T,
    w: T,
    h: T,
    p: T,
    (m, d, cr, shrink): (T, T, T, T),
    acc: &mut T,
    cacc: &mut T,
) {
    let e = if OJA { m * *g * (h - d * w) } else { m * *g * h };
    *gr = *gr + cr * e;
    let qj = cr * p * *g;
    *q = qj;
    *cacc = *cacc + p * e;
    if OJA {
        *acc = *acc + qj * w;
        *g = *g - shrink * qj;
    }
}

/// One synapse's weight before the step, from W' = W + s (h − d W): W = (W' − s h) / (1 − s d).
#[inline(always)]
fn unstep<T: Real, const OJA: bool>(after: T, s: T, h: T, d: T) -> T {
    if OJA {
        (after - s * h) / (T::of(1.0) - s * d)
    } else {
        after - s * h
    }
}

/// Output rows o0 .. o0 + R of the rate gradient, over every episode.
#[inline(always)]
fn adjoint_block<T: Real, const R: usize, const OJA: bool>(a: &AdjointArgs<T>, o0: usize) {
    let (cols, outputs, m) = (a.act.inputs, a.act.outputs, a.m);
    let p: [RateRow<'_, T>; R] = std::array::from_fn(|k| a.rate.row(o0 + k, cols));
    for ep in 0..a.episodes {
        let first = ep * outputs + o0;
        let d = if OJA { a.act.decay::<R>(ep, o0) } else { [T::ZERO; R] };
        let factors: [(T, T, T, T); R] = std::array::from_fn(|k| {
            let cr = a.scale.map_or(T::of(1.0), |c| c.at(ep, o0 + k));
            (m, d[k], cr, if a.update { m * d[k] } else { T::ZERO })
        });
        let mut rows = AdjointRows {
            factors,
            p: &p,
            w: std::array::from_fn(|k| unsafe { a.w.row(first + k, cols) }),
            g: std::array::from_fn(|k| unsafe { a.g.row(first + k, cols) }),
            q: std::array::from_fn(|k| unsafe { a.q.row(first + k, cols) }),
            grad_rate: std::array::from_fn(|k| unsafe { a.grad_rate.row(o0 + k, cols) }),
            acc: [[T::ZERO; LANES]; R],
            cacc: [[T::ZERO; LANES]; R],
        };
        let whole = cols - cols % LANES;
        for base in (0..whole).step_by(LANES) {
            for k in 0..R {
                let next = (first + R + k) * cols + base;
                prefetch(a.w.0.wrapping_add(next));
                prefetch(a.g.0.wrapping_add(next));
                prefetch(a.grad_rate.0.wrapping_add((o0 + R + k) * cols + base));
                a.rate.prefetch(o0 + R + k, base);
            }
            adjoint_chunk::<T, R, true, OJA>(a, ep, o0, base, &mut rows);
        }
        if whole < cols {
            adjoint_chunk::<T, R, false, OJA>(a, ep, o0, whole, &mut rows);
        }
        let total = |v: &[T; LANES]| v.iter().fold(T::ZERO, |x, &y| x + y);
        for k in 0..R {
            if let Some(sp) = a.rowsum {
                unsafe { *sp.0.add(first + k) = total(&rows.acc[k]) };
            }
            if let Some(cg) = a.scale_grad {
                unsafe { *cg.0.add(first + k) = total(&rows.cacc[k]) };
            }
        }
    }
}

/// A block of R rows of one episode in the adjoint loop: per row its factors (m, d, c, shrink), rate,
/// W, G, Q and rate-gradient rows, and the lane sums of rowsum(Q ⊙ W) and of the row factor's gradient.
struct AdjointRows<'a, T, const R: usize> {
    factors: [(T, T, T, T); R],
    p: &'a [RateRow<'a, T>; R],
    w: [&'a mut [T]; R],
    g: [&'a mut [T]; R],
    q: [&'a mut [T]; R],
    grad_rate: [&'a mut [T]; R],
    acc: [[T; LANES]; R],
    cacc: [[T; LANES]; R],
}

/// One chunk of R rows of the adjoint loop (`FULL`: a whole one; otherwise the rows' padded remainder,
/// whose zero lanes add nothing to the row sums).
#[inline(always)]
fn adjoint_chunk<T: Real, const R: usize, const FULL: bool, const OJA: bool>(
    a: &AdjointArgs<T>,
    ep: usize,
    o0: usize,
    base: usize,
    rows: &mut AdjointRows<'_, T, R>,
) {
    let h = a.act.outer::<R>(ep, o0, base);
    let owed = a.pending.as_ref().map(|d| d.outer::<R>(ep, o0, base));
    for k in 0..R {
        // On local copies, as in step_chunk.
        let (mut gk, mut grk, mut qk) =
            (load::<T, FULL>(rows.g[k], base), load::<T, FULL>(rows.grad_rate[k], base), [T::ZERO; LANES]);
        if let Some(owed) = &owed {
            for l in 0..LANES {
                gk[l] = gk[l] + owed[k][l];
            }
        }
        let (mut wk, pk) = (load::<T, FULL>(rows.w[k], base), rows.p[k].chunk::<FULL>(base));
        let f = rows.factors[k];
        if a.unstep {
            let (s, d) = (f.0 * f.2, f.1);
            for l in 0..LANES {
                wk[l] = unstep::<T, OJA>(wk[l], s * pk[l], h[k][l], d);
            }
            if !FULL {
                // Past the row's end: zeros, not whatever 0 / (1 − s d) gives, for the row sums.
                wk[rows.w[k].len() - base..].iter_mut().for_each(|x| *x = T::ZERO);
            }
            store::<T, FULL>(rows.w[k], base, &wk);
        }
        for l in 0..LANES {
            synapse::<T, OJA>(
                &mut gk[l],
                &mut grk[l],
                &mut qk[l],
                wk[l],
                h[k][l],
                pk[l],
                f,
                &mut rows.acc[k][l],
                &mut rows.cacc[k][l],
            );
        }
        store::<T, FULL>(rows.g[k], base, &gk);
        store::<T, FULL>(rows.grad_rate[k], base, &grk);
        store::<T, FULL>(rows.q[k], base, &qk);
    }
}

/// Output rows lo..hi, in blocks of BLOCK where they fit.
#[inline(always)]
fn adjoint_rows<T: Real>(a: &AdjointArgs<T>, lo: usize, hi: usize) {
    let mut o = lo;
    while o < hi {
        match (o + BLOCK <= hi, a.oja) {
            (true, true) => adjoint_block::<T, BLOCK, true>(a, o),
            (true, false) => adjoint_block::<T, BLOCK, false>(a, o),
            (false, true) => adjoint_block::<T, 1, true>(a, o),
            (false, false) => adjoint_block::<T, 1, false>(a, o),
        }
        o += if o + BLOCK <= hi { BLOCK } else { 1 };
    }
}
multiversion!(adjoint_dispatch, adjoint_rows, AdjointArgs);

#[allow(clippy::too_many_arguments)]
fn adjoint_typed<T: Real>(
    g: &mut Tensor,
    update: bool,
    w: &Tensor,
    unstep: bool,
    post: &Tensor,
    pre: &Tensor,
    p: &Tensor,
    oja: bool,
    m: f64,
    c: Option<&Tensor>,
    grad_rate: &mut Tensor,
    pending: Option<(&Tensor, &Tensor)>,
) -> Result<StepAdjoint> {
    let kind = w.kind();
    let [e, o, i] = w.size()[..] else { return Err(Error::Internal("fused kernel: W must be [E, O, I]".into())) };
    for (t, name) in [(&*g, "G"), (w, "W"), (&*grad_rate, "rate gradient")] {
        check(t, kind, name)?;
    }
    let scale = row_scale::<T>(c, kind, e, o)?;
    let q = w.f_empty_like()?;
    let per_row = |on: bool| -> Result<Option<Tensor>> {
        Ok(if on { Some(Tensor::f_empty([e, o], (kind, Device::Cpu))?) } else { None })
    };
    let rowsum = per_row(oja)?;
    let scale_grad = per_row(scale.is_some())?;
    let (_keep, rate) = rate::<T>(p, kind, o, i)?;
    let args = AdjointArgs {
        g: Ptr::of(g),
        w: Ptr::of(w),
        q: Ptr::of(&q),
        grad_rate: Ptr::of(grad_rate),
        act: Activity::of(post, pre, kind, e, o, i)?,
        pending: pending.map(|(d, x)| Activity::of(d, x, kind, e, o, i)).transpose()?,
        rate,
        oja,
        scale,
        rowsum: rowsum.as_ref().map(Ptr::of),
        scale_grad: scale_grad.as_ref().map(Ptr::of),
        m: T::of(m),
        update,
        unstep,
        episodes: e as usize,
    };
    // Rows of the rate gradient are shared by the episodes: split over output rows, loop over episodes
    // inside, so no two threads write the same accumulator row.
    parallel_rows(o as usize, |lo, hi| adjoint_dispatch(&args, lo, hi));
    Ok(StepAdjoint { q, rowsum, scale_grad })
}

/// How much running an Oja step backwards (`local_step_adjoint` with `unstep`) can magnify an error
/// already in W': the largest 1 / |1 − s r| over the synapses, s = m c P and r = Σ_b ã² of the row
/// (never below 1: each step also adds its own rounding). Infinite where 1 − s r can vanish, or is not
/// a number. `rate_range` holds each row's least and greatest rate, or one pair for every row.
pub fn unstep_gain(post: &Tensor, m: f64, c: Option<&Tensor>, rate_range: &[(f64, f64)]) -> Result<f64> {
    match post.kind() {
        Kind::Float => gain_typed::<f32>(post, m, c, rate_range),
        Kind::Double => gain_typed::<f64>(post, m, c, rate_range),
        k => Err(Error::Internal(format!("fused kernel: unsupported kind {k:?}"))),
    }
}

fn gain_typed<T: Real>(post: &Tensor, m: f64, c: Option<&Tensor>, rate_range: &[(f64, f64)]) -> Result<f64> {
    let kind = post.kind();
    check(post, kind, "teaching activity")?;
    let [e, b, o] = post.size()[..] else { return Err(Error::Internal("fused kernel: ã must be [E, B, O]".into())) };
    let (e, b, o) = (e as usize, b as usize, o as usize);
    if rate_range.len() != 1 && rate_range.len() != o {
        return Err(Error::Internal(format!("fused kernel: {} rate ranges for {o} rows", rate_range.len())));
    }
    let scale = row_scale::<T>(c, kind, e as i64, o as i64)?;
    // SAFETY: both were checked above: contiguous, of this kind and of these shapes.
    let u = unsafe { std::slice::from_raw_parts(post.data_ptr() as *const T, e * b * o) };
    let mut worst: f64 = 1.0;
    for ep in 0..e {
        for row in 0..o {
            let r: f64 = (0..b).map(|bi| u[(ep * b + bi) * o + row].to_f64().powi(2)).sum();
            let cr = scale.map_or(1.0, |c| c.at(ep, row).to_f64());
            let (lo, hi) = rate_range[if rate_range.len() == 1 { 0 } else { row }];
            let (x0, x1) = (m * cr * r * lo, m * cr * r * hi);
            let (x_lo, x_hi) = (x0.min(x1), x0.max(x1));
            let margin = if x_lo <= 1.0 && 1.0 <= x_hi { 0.0 } else { (1.0 - x_lo).abs().min((1.0 - x_hi).abs()) };
            if margin.is_nan() || margin <= 0.0 {
                return Ok(f64::INFINITY);
            }
            worst = worst.max(1.0 / margin);
        }
    }
    Ok(worst)
}
