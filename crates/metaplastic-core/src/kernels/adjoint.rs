//! The step's reverse, fused: G back through it (running the step backwards in place where asked), the
//! rate gradient accumulated over the episodes, and how much running a step backwards can magnify an error.
use super::simd::{load, multiversion, prefetch, store, BLOCK, LANES};
use super::threads::parallel_rows;
use super::views::{check, coefficient, rate, row_scale, Activity, Ptr, RateRow, Real, Strided};
use super::Decay;
use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// What the adjoint loop returns besides the updated G.
pub struct StepAdjoint {
    /// Q = c P ⊙ G [E, O, I].
    pub q: Tensor,
    /// rowsum(Q ⊙ W) [E, O] (Oja).
    pub rowsum: Option<Tensor>,
    /// ∂L/∂c of each row's factor [E, O] (when a factor was given).
    pub scale_grad: Option<Tensor>,
}

/// The adjoint of `local_step` for G = ∂L/∂W' (with `update`, overwritten in place by G − m Q ⊙ d, the
/// direct part of ∂L/∂W; first-order steps leave it), d the row's decay (`Decay`: r = Σ_b ã², or γ ⊙ r).
/// Accumulates m G ⊙ (ãᵀa − d ⊙ W) into `grad_rate` [O, I]; returns Q = c P ⊙ G and, with a decay,
/// rowsum(Q ⊙ W) [E, O] (so ∂L/∂d = −m rowsum).
///
/// `pending` = (d [E, B, O], x [E, B, I]) is a low-rank part of G not yet added to it: the loop uses
/// G + dᵀx throughout, formed in registers like ãᵀa, and writes it back (so afterwards G holds it). The
/// step after this one in the reverse pass hands its forward pass's dzᵀa over this way instead of a
/// weight-sized read and write of its own.
///
/// With `unstep`, `w` holds the weights after the step, W'. The loop runs the step backwards,
/// W = (W' − s ãᵀa) / (1 − s d) with s = m c P, uses that W throughout and writes it over W' in place:
/// the reverse pass then needs neither the weights of every step nor their recomputation.
#[allow(clippy::too_many_arguments)]
pub fn local_step_adjoint<'a>(
    g: &mut Tensor,
    update: bool,
    w: &Tensor,
    unstep: bool,
    post: &Tensor,
    pre: &Tensor,
    p: &Tensor,
    decay: impl Into<Decay<'a>>,
    m: f64,
    c: Option<&Tensor>,
    grad_rate: &mut Tensor,
    pending: Option<(&Tensor, &Tensor)>,
) -> Result<StepAdjoint> {
    let decay = decay.into();
    match w.kind() {
        Kind::Float => adjoint_typed::<f32>(g, update, w, unstep, post, pre, p, decay, m, c, grad_rate, pending),
        Kind::Double => adjoint_typed::<f64>(g, update, w, unstep, post, pre, p, decay, m, c, grad_rate, pending),
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
    /// The learned decay coefficient γ of each row, where the step has one.
    gamma: Option<Strided<T>>,
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
        let d = if OJA { a.act.scaled_decay::<R>(ep, o0, a.gamma.as_ref()) } else { [T::ZERO; R] };
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
    decay: Decay<'_>,
    m: f64,
    c: Option<&Tensor>,
    grad_rate: &mut Tensor,
    pending: Option<(&Tensor, &Tensor)>,
) -> Result<StepAdjoint> {
    let kind = w.kind();
    let oja = decay.is_on();
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
    let (_keep_gamma, gamma) = coefficient::<T>(decay, kind, o)?;
    let args = AdjointArgs {
        g: Ptr::of(g),
        w: Ptr::of(w),
        q: Ptr::of(&q),
        grad_rate: Ptr::of(grad_rate),
        act: Activity::of(post, pre, kind, e, o, i)?,
        pending: pending.map(|(d, x)| Activity::of(d, x, kind, e, o, i)).transpose()?,
        rate,
        oja,
        gamma,
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
/// a number. `rate_range` holds each row's least and greatest rate, or one pair for every row (with a
/// learned decay coefficient γ, the rates times γ: the step's decay is then s γ r).
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
