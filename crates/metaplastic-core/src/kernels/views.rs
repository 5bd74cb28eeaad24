//! The tensors the fused loops read and write, as raw views checked once per call: the element types,
//! row pointers, matrices read by their strides (broadcast rates and row factors), and a step's
//! activities with their outer product formed in registers.
use super::simd::{load, prefetch, LANES};
use super::Decay;
use crate::{Error, Result};
use std::ops::{Add, Div, Mul, Sub};
use tch::{Device, Kind, Tensor};

pub(super) trait Real:
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

/// A matrix read by row and column strides (0 where broadcast): the rate P as [O, I], the row factor c as
/// [E, O].
#[derive(Clone, Copy)]
pub(super) struct Strided<T> {
    ptr: *const T,
    row: usize,
    col: usize,
}
// Only read, by every thread.
unsafe impl<T> Send for Strided<T> {}
unsafe impl<T> Sync for Strided<T> {}
/// One row of P: its own values, or one value for the whole row (neuron, layer, global rates).
pub(super) enum RateRow<'a, T> {
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
    pub(super) fn at(&self, row: usize, col: usize) -> T {
        // SAFETY: the shape and non-negative strides were checked where the view was made.
        unsafe { *self.ptr.add(row * self.row + col * self.col) }
    }

    /// Prefetches the chunk of row `row` at column `base` (nothing for a rate broadcast along rows).
    #[inline(always)]
    pub(super) fn prefetch(&self, row: usize, base: usize) {
        if self.col != 0 {
            prefetch(self.ptr.wrapping_add(row * self.row + base * self.col));
        }
    }

    pub(super) fn row(&self, row: usize, cols: usize) -> RateRow<'_, T> {
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
pub(super) fn rate<T: Copy>(p: &Tensor, kind: Kind, o: i64, i: i64) -> Result<(Tensor, Strided<T>)> {
    let expanded = p.f_expand([o, i], false)?;
    let r = Strided::of(&expanded, kind, "the rate")?;
    Ok((expanded, r))
}

/// The learned decay coefficient γ of a step broadcast to [O, 1] (kept alive by the caller while the view is
/// read); none where the step's decay is Oja's own (d = r) or absent.
pub(super) fn coefficient<T: Copy>(
    decay: Decay<'_>,
    kind: Kind,
    o: i64,
) -> Result<(Option<Tensor>, Option<Strided<T>>)> {
    let Some(g) = decay.coefficient() else { return Ok((None, None)) };
    let expanded = g.f_expand([o, 1], false)?;
    let view = Strided::of(&expanded, kind, "the decay coefficient")?;
    Ok((Some(expanded), Some(view)))
}

fn on_cpu_as(t: &Tensor, kind: Kind) -> bool {
    t.device() == Device::Cpu && t.kind() == kind
}

pub(super) fn check(t: &Tensor, kind: Kind, what: &str) -> Result<()> {
    if !on_cpu_as(t, kind) || !t.is_contiguous() {
        return Err(Error::Internal(format!(
            "fused kernel: {what} must be a contiguous CPU tensor of {kind:?}, got {:?} {:?}",
            t.kind(),
            t.device()
        )));
    }
    Ok(())
}

/// The per-row factor c [E, O], read by its strides: one value per episode broadcast along the rows (the
/// presynaptic normalisation, row stride 0) is read in place, without a copy at the weights' row count.
pub(super) fn row_scale<T: Copy>(c: Option<&Tensor>, kind: Kind, e: i64, o: i64) -> Result<Option<Strided<T>>> {
    let Some(c) = c else { return Ok(None) };
    if c.size() != [e, o] {
        return Err(Error::Internal(format!("fused kernel: row factor {:?} is not [{e}, {o}]", c.size())));
    }
    Strided::of(c, kind, "row factor").map(Some)
}

/// The step's activities: teaching ã [E, B, O] and presynaptic a [E, B, I], read in place.
pub(super) struct Activity<T> {
    post: Ptr<T>,
    pre: Ptr<T>,
    batch: usize,
    pub(super) outputs: usize,
    pub(super) inputs: usize,
    /// The last I mod LANES columns of a, zero-padded to one whole chunk [E, B, LANES]: a row's
    /// remainder then runs as one more vector chunk (column by column, each a serial chain of B
    /// multiply-adds, it took a quarter of the loops' time on rows of 300).
    tail: Vec<T>,
}

impl<T: Real> Activity<T> {
    pub(super) fn of(post: &Tensor, pre: &Tensor, kind: Kind, e: i64, o: i64, i: i64) -> Result<Self> {
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
    pub(super) fn decay<const R: usize>(&self, ep: usize, o0: usize) -> [T; R] {
        let mut r = [T::ZERO; R];
        for b in 0..self.batch {
            let u = self.post_at::<R>(ep, b, o0);
            for k in 0..R {
                r[k] = r[k] + u[k] * u[k];
            }
        }
        r
    }

    /// The decay d of rows o0 .. o0 + R: Oja's r, times each row's γ where the rule has one.
    #[inline(always)]
    pub(super) fn scaled_decay<const R: usize>(&self, ep: usize, o0: usize, gamma: Option<&Strided<T>>) -> [T; R] {
        let mut d = self.decay::<R>(ep, o0);
        if let Some(g) = gamma {
            for (k, dk) in d.iter_mut().enumerate() {
                *dk = g.at(o0 + k, 0) * *dk;
            }
        }
        d
    }

    /// The outer product ãᵀa of rows o0 .. o0 + R at columns base .. base + LANES, kept in registers:
    /// each presynaptic chunk loaded once serves all R rows. The chunk past the last whole one is the
    /// padded remainder (zero beyond the row's end).
    #[inline(always)]
    pub(super) fn outer<const R: usize>(&self, ep: usize, o0: usize, base: usize) -> [[T; LANES]; R] {
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

/// Raw row pointers: each thread gets disjoint rows, so the writes never overlap.
#[derive(Clone, Copy)]
pub(super) struct Ptr<T>(pub(super) *mut T);
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}
impl<T> Ptr<T> {
    pub(super) fn of(t: &Tensor) -> Self {
        Ptr(t.data_ptr() as *mut T)
    }
    /// Row `row` of length `len`.
    pub(super) unsafe fn row<'a>(self, row: usize, len: usize) -> &'a mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(row * len), len) }
    }
}

/// One row of P as a source of chunks: its own values, or one value broadcast.
impl<T: Real> RateRow<'_, T> {
    #[inline(always)]
    pub(super) fn chunk<const FULL: bool>(&self, base: usize) -> [T; LANES] {
        match self {
            RateRow::Values(p) => load::<T, FULL>(p, base),
            RateRow::Scalar(p) => [*p; LANES],
        }
    }
}
