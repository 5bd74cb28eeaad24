//! Fused CPU loops for the local rules' weight-sized work: one pass over memory per layer and step,
//! where the same arithmetic in libtorch operations makes 4–12 passes and as many weight-sized
//! temporaries. Rows are split over threads. The libtorch-operation forms (adjoint.rs) stay for other
//! devices and are tested against these.
//!
//! Shapes (contiguous, float32 or float64, on the CPU): W, H, G, Q [E, O, I]; the teaching activity ã
//! [E, B, O] (Oja's decay r = Σ_b ã², computed per row here; absent for Hebb); the rate P is
//! broadcast from [O, I], [O, 1] or [] and read through its strides; an optional per-row factor c [E, O]
//! (the update normalisation) scales each row's update; the rate gradient accumulates into a full
//! [O, I] (summed over episodes) and is reduced to P's shape once at the end.
use crate::{Error, Result};
use std::ops::{Add, Mul, Sub};
use tch::{Device, Kind, Tensor};

trait Real: Copy + Send + Sync + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + 'static {
    fn of(x: f64) -> Self;
    const ZERO: Self;
}
impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    const ZERO: Self = 0.0;
}
impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    const ZERO: Self = 0.0;
}

/// Whether the fused loops can serve tensors of this kind on this device.
pub fn applies(kind: Kind, device: Device) -> bool {
    device == Device::Cpu && matches!(kind, Kind::Float | Kind::Double)
}

/// P broadcast to [O, I], read by row and column strides (0 where broadcast).
struct Rate<T> {
    ptr: *const T,
    row: usize,
    col: usize,
}
// The rate is only read, by every thread.
unsafe impl<T> Send for Rate<T> {}
unsafe impl<T> Sync for Rate<T> {}
/// One row of P: its own values, or one value for the whole row (neuron, layer, global rates).
enum RateRow<'a, T> {
    Values(&'a [T]),
    Scalar(T),
}

impl<T: Copy> Rate<T> {
    fn row(&self, row: usize, cols: usize) -> RateRow<'_, T> {
        unsafe {
            let base = self.ptr.add(row * self.row);
            if self.col == 0 { RateRow::Scalar(*base) } else { RateRow::Values(std::slice::from_raw_parts(base, cols)) }
        }
    }
}

fn rate<T>(p: &Tensor, o: i64, i: i64) -> Result<(Tensor, Rate<T>)> {
    let expanded = p.f_expand([o, i], false)?;
    let s = expanded.stride();
    let r = Rate { ptr: expanded.data_ptr() as *const T, row: s[0] as usize, col: s[1] as usize };
    Ok((expanded, r))
}

fn check(t: &Tensor, kind: Kind, what: &str) -> Result<()> {
    if t.device() != Device::Cpu || t.kind() != kind || !t.is_contiguous() {
        return Err(Error::Internal(format!("fused kernel: {what} must be a contiguous CPU tensor of {kind:?}, got {:?} {:?}", t.kind(), t.device())));
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

/// The per-row factor c [E, O] as a raw pointer.
fn row_scale<T>(c: Option<&Tensor>, kind: Kind, e: i64, o: i64) -> Result<Option<Ptr<T>>> {
    let Some(c) = c else { return Ok(None) };
    check(c, kind, "row factor")?;
    if c.size() != [e, o] {
        return Err(Error::Internal(format!("fused kernel: row factor {:?} is not [{e}, {o}]", c.size())));
    }
    Ok(Some(Ptr::of(c)))
}

/// Oja's decay factor of each row (e, i): r = Σ_b ã[e, b, i]².
#[derive(Clone, Copy)]
struct Decay<T> {
    post: Ptr<T>,
    batch: usize,
    outputs: usize,
}

impl<T: Real> Decay<T> {
    fn of(post: Option<&Tensor>, kind: Kind, e: i64, o: i64) -> Result<Option<Self>> {
        let Some(post) = post else { return Ok(None) };
        check(post, kind, "teaching activity")?;
        let s = post.size();
        if s.len() != 3 || s[0] != e || s[2] != o {
            return Err(Error::Internal(format!("fused kernel: teaching activity {s:?} does not fit [{e}, B, {o}]")));
        }
        Ok(Some(Decay { post: Ptr::of(post), batch: s[1] as usize, outputs: o as usize }))
    }

    #[inline(always)]
    fn at(&self, row: usize) -> T {
        let (ep, i) = (row / self.outputs, row % self.outputs);
        let base = ep * self.batch * self.outputs + i;
        (0..self.batch).fold(T::ZERO, |acc, b| {
            let a = unsafe { *self.post.0.add(base + b * self.outputs) };
            acc + a * a
        })
    }
}

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

/// A pool per thread count, kept for the process: spawning threads per call costs more than a small
/// layer's whole update, and under load a fresh thread may wait a scheduler slice to start.
fn pool(threads: usize) -> std::sync::Arc<rayon::ThreadPool> {
    static POOLS: std::sync::Mutex<Vec<(usize, std::sync::Arc<rayon::ThreadPool>)>> = std::sync::Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(n, _)| *n == threads) {
        return p.clone();
    }
    let p = std::sync::Arc::new(rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("metaplastic-kernel-{i}")).build().expect("kernel thread pool"));
    pools.push((threads, p.clone()));
    p
}

/// Runs `f(first_row, last_row)` over `rows` rows in contiguous blocks, on as many threads as libtorch
/// uses (the same cores its own operations use, never at the same time).
fn parallel_rows(rows: usize, f: impl Fn(usize, usize) + Sync) {
    let threads = (tch::get_num_threads().max(1) as usize).min(rows / 32).max(1);
    if threads == 1 {
        f(0, rows);
        return;
    }
    let block = rows.div_ceil(threads);
    pool(threads).scope(|s| {
        for t in 1..threads {
            let f = &f;
            s.spawn(move |_| f(t * block, ((t + 1) * block).min(rows)));
        }
        f(0, block.min(rows));
    });
}

/// W' = W + m c P ⊙ (H − r ⊙ W) with r = Σ_b ã² from `post` (Oja), or without r (Hebb); c per row
/// (1 when absent).
pub fn local_step(w: &Tensor, h: &Tensor, p: &Tensor, post: Option<&Tensor>, m: f64, c: Option<&Tensor>) -> Result<Tensor> {
    match w.kind() {
        Kind::Float => step_typed::<f32>(w, h, p, post, m, c),
        Kind::Double => step_typed::<f64>(w, h, p, post, m, c),
        k => Err(Error::Internal(format!("fused kernel: unsupported kind {k:?}"))),
    }
}

fn step_typed<T: Real>(w: &Tensor, h: &Tensor, p: &Tensor, post: Option<&Tensor>, m: f64, c: Option<&Tensor>) -> Result<Tensor> {
    let kind = w.kind();
    let [e, o, i] = w.size()[..] else { return Err(Error::Internal("fused kernel: W must be [E, O, I]".into())) };
    for (t, name) in [(w, "W"), (h, "H")] {
        check(t, kind, name)?;
    }
    let decay = Decay::<T>::of(post, kind, e, o)?;
    let scale = row_scale::<T>(c, kind, e, o)?;
    let out = w.f_empty_like()?;
    let (_keep, pr) = rate::<T>(p, o, i)?;
    let (wp, hp, op) = (Ptr::<T>::of(w), Ptr::<T>::of(h), Ptr::<T>::of(&out));
    let (cols, orows) = (i as usize, o as usize);
    let m0 = T::of(m);
    parallel_rows((e * o) as usize, |a, b| {
        for row in a..b {
            let (wr, hr, or) = unsafe { (wp.row(row, cols), hp.row(row, cols), op.row(row, cols)) };
            let prow = pr.row(row % orows, cols);
            // W' = W(1 − m p d) + m p H, with d = 0 for Hebb and m including the row's factor.
            let d = decay.map_or(T::ZERO, |dc| dc.at(row));
            let m = scale.map_or(m0, |c| m0 * unsafe { *c.0.add(row) });
            match prow {
                RateRow::Values(p) => {
                    for (((o, &w), &h), &p) in or.iter_mut().zip(wr.iter()).zip(hr.iter()).zip(p.iter()) {
                        *o = w + m * p * (h - d * w);
                    }
                }
                RateRow::Scalar(p) => {
                    let mp = m * p;
                    for ((o, &w), &h) in or.iter_mut().zip(wr.iter()).zip(hr.iter()) {
                        *o = w + mp * (h - d * w);
                    }
                }
            }
        }
    });
    Ok(out)
}

/// The adjoint of `local_step` for G = ∂L/∂W' (with `update`, overwritten in place by G − m Q ⊙ r, the
/// direct part of ∂L/∂W; first-order steps leave it). Accumulates m G ⊙ (H − r ⊙ W) into `grad_rate` [O, I]; returns Q = P ⊙ G and, with r,
/// rowsum(Q ⊙ W) [E, O].
#[allow(clippy::too_many_arguments)]
pub fn local_step_adjoint(g: &mut Tensor, update: bool, w: &Tensor, h: &Tensor, p: &Tensor, post: Option<&Tensor>, m: f64, c: Option<&Tensor>, grad_rate: &mut Tensor) -> Result<StepAdjoint> {
    match w.kind() {
        Kind::Float => adjoint_typed::<f32>(g, update, w, h, p, post, m, c, grad_rate),
        Kind::Double => adjoint_typed::<f64>(g, update, w, h, p, post, m, c, grad_rate),
        k => Err(Error::Internal(format!("fused kernel: unsupported kind {k:?}"))),
    }
}

#[allow(clippy::too_many_arguments)]
fn adjoint_typed<T: Real>(g: &mut Tensor, update: bool, w: &Tensor, h: &Tensor, p: &Tensor, post: Option<&Tensor>, m: f64, c: Option<&Tensor>, grad_rate: &mut Tensor) -> Result<StepAdjoint> {
    let kind = w.kind();
    let [e, o, i] = w.size()[..] else { return Err(Error::Internal("fused kernel: W must be [E, O, I]".into())) };
    for (t, name) in [(&*g, "G"), (w, "W"), (h, "H"), (&*grad_rate, "rate gradient")] {
        check(t, kind, name)?;
    }
    let decay = Decay::<T>::of(post, kind, e, o)?;
    let scale = row_scale::<T>(c, kind, e, o)?;
    let q = w.f_empty_like()?;
    let per_row = |on: bool| -> Result<Option<Tensor>> { Ok(if on { Some(Tensor::f_empty([e, o], (kind, Device::Cpu))?) } else { None }) };
    let rowsum = per_row(decay.is_some())?;
    let scale_grad = per_row(scale.is_some())?;
    let (_keep, pr) = rate::<T>(p, o, i)?;
    let (gp, wp, hp, qp, gr) = (Ptr::<T>::of(g), Ptr::<T>::of(w), Ptr::<T>::of(h), Ptr::<T>::of(&q), Ptr::<T>::of(grad_rate));
    let sp = rowsum.as_ref().map(Ptr::<T>::of);
    let cg = scale_grad.as_ref().map(Ptr::<T>::of);
    let (cols, orows) = (i as usize, o as usize);
    let m = T::of(m);
    // Rows of the rate gradient are shared by the episodes: split over output rows, loop over episodes
    // inside, so no two threads write the same accumulator row.
    parallel_rows(orows, |a, b| {
        for oi in a..b {
            let grow = unsafe { gr.row(oi, cols) };
            for ep in 0..e as usize {
                let row = ep * orows + oi;
                let (gw, wr, hr, qr) = unsafe { (gp.row(row, cols), wp.row(row, cols), hp.row(row, cols), qp.row(row, cols)) };
                let prow = pr.row(oi, cols);
                let d = decay.map_or(T::ZERO, |dc| dc.at(row));
                let cr = scale.map_or(T::of(1.0), |c| unsafe { *c.0.add(row) });
                let shrink = if update { m * d } else { T::ZERO };
                // Eight partial sums: a single running sum would serialize the loop (no reassociation).
                let mut acc = [T::ZERO; 8];
                let mut cacc = [T::ZERO; 8];
                let mut lane = 0;
                let mut body = |gw: &mut T, gr: &mut T, q: &mut T, w: T, h: T, p: T| {
                    let g = *gw;
                    let e = m * g * (h - d * w); // ∂L/∂(row factor · P), per synapse
                    *gr = *gr + cr * e;
                    let qj = cr * p * g;
                    *q = qj;
                    acc[lane & 7] = acc[lane & 7] + qj * w;
                    cacc[lane & 7] = cacc[lane & 7] + p * e;
                    lane += 1;
                    *gw = g - shrink * qj;
                };
                match prow {
                    RateRow::Values(p) => {
                        for ((((gw, gr), q), (&w, &h)), &p) in gw.iter_mut().zip(grow.iter_mut()).zip(qr.iter_mut()).zip(wr.iter().zip(hr.iter())).zip(p.iter()) {
                            body(gw, gr, q, w, h, p);
                        }
                    }
                    RateRow::Scalar(p) => {
                        for (((gw, gr), q), (&w, &h)) in gw.iter_mut().zip(grow.iter_mut()).zip(qr.iter_mut()).zip(wr.iter().zip(hr.iter())) {
                            body(gw, gr, q, w, h, p);
                        }
                    }
                }
                let total = |a: &[T; 8]| a.iter().fold(T::ZERO, |x, &y| x + y);
                if let Some(sp) = sp {
                    unsafe { *sp.0.add(row) = total(&acc) };
                }
                if let Some(cg) = cg {
                    unsafe { *cg.0.add(row) = total(&cacc) };
                }
            }
        }
    });
    Ok(StepAdjoint { q, rowsum, scale_grad })
}
