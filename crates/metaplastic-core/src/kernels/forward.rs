//! The local rules' step, fused: W' = W + m c P ⊙ (ãᵀa − d ⊙ W) in one pass over the weights.
use super::simd::{load, multiversion, prefetch, store, BLOCK, LANES};
use super::threads::parallel_rows;
use super::views::{check, coefficient, rate, row_scale, Activity, Ptr, RateRow, Real, Strided};
use super::Decay;
use crate::{Error, Result};
use tch::{Kind, Tensor};

/// W' = W + m c P ⊙ (ãᵀa − d ⊙ W) with d = r = Σ_b ã² (Oja), γ ⊙ r (a learned decay coefficient) or
/// without d (Hebb, `decay` false); c per row (1 when absent). The outer product ãᵀa is formed in
/// registers, never as a weight-sized tensor.
#[allow(clippy::too_many_arguments)]
pub fn local_step<'a>(
    w: &Tensor,
    post: &Tensor,
    pre: &Tensor,
    p: &Tensor,
    decay: impl Into<Decay<'a>>,
    m: f64,
    c: Option<&Tensor>,
) -> Result<Tensor> {
    let decay = decay.into();
    match w.kind() {
        Kind::Float => step_typed::<f32>(w, post, pre, p, decay, m, c, false),
        Kind::Double => step_typed::<f64>(w, post, pre, p, decay, m, c, false),
        k => Err(Error::Internal(format!("fused kernel: unsupported kind {k:?}"))),
    }
}

/// `local_step` writing W' over W (evaluation: no one reads W afterwards). Writing into the rows just
/// read spares the memory traffic of a new tensor's first writes.
pub fn local_step_in_place<'a>(
    w: &mut Tensor,
    post: &Tensor,
    pre: &Tensor,
    p: &Tensor,
    decay: impl Into<Decay<'a>>,
    m: f64,
    c: Option<&Tensor>,
) -> Result<()> {
    let decay = decay.into();
    match w.kind() {
        Kind::Float => step_typed::<f32>(w, post, pre, p, decay, m, c, true).map(drop),
        Kind::Double => step_typed::<f64>(w, post, pre, p, decay, m, c, true).map(drop),
        k => Err(Error::Internal(format!("fused kernel: unsupported kind {k:?}"))),
    }
}

struct StepArgs<T> {
    w: Ptr<T>,
    out: Ptr<T>,
    act: Activity<T>,
    rate: Strided<T>,
    oja: bool,
    /// The learned decay coefficient γ of each row, where the step has one.
    gamma: Option<Strided<T>>,
    scale: Option<Strided<T>>,
    m: T,
}

/// R rows of one episode starting at output o0: W' = W + m P ⊙ (H − d W).
#[inline(always)]
fn step_block<T: Real, const R: usize>(a: &StepArgs<T>, ep: usize, o0: usize) {
    let (cols, outputs) = (a.act.inputs, a.act.outputs);
    let first = ep * outputs + o0;
    let d = if a.oja { a.act.scaled_decay::<R>(ep, o0, a.gamma.as_ref()) } else { [T::ZERO; R] };
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
    decay: Decay<'_>,
    m: f64,
    c: Option<&Tensor>,
    in_place: bool,
) -> Result<Tensor> {
    let kind = w.kind();
    let [e, o, i] = w.size()[..] else { return Err(Error::Internal("fused kernel: W must be [E, O, I]".into())) };
    check(w, kind, "W")?;
    let out = if in_place { w.shallow_clone() } else { w.f_empty_like()? };
    let (_keep, rate) = rate::<T>(p, kind, o, i)?;
    let (_keep_gamma, gamma) = coefficient::<T>(decay, kind, o)?;
    let args = StepArgs {
        w: Ptr::of(w),
        out: Ptr::of(&out),
        act: Activity::of(post, pre, kind, e, o, i)?,
        rate,
        oja: decay.is_on(),
        gamma,
        scale: row_scale::<T>(c, kind, e, o)?,
        m: T::of(m),
    };
    parallel_rows((e * o) as usize, |lo, hi| step_dispatch(&args, lo, hi));
    Ok(out)
}
