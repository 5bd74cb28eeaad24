//! The vector width of the fused loops, chosen once at run time, and the fixed-size chunks (with their
//! prefetches) that the loops work through.
use super::views::Real;

/// The widest vector instructions this CPU has, detected once (`multiversion!` compiles the loops for each).
#[derive(Clone, Copy, PartialEq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // one build of the loops elsewhere
pub(super) enum Isa {
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
pub(super) fn isa() -> Isa {
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
/// vectors (AVX-512, AVX2 with FMA) and for the baseline, chosen at run time. Its paths start at the crate
/// root: the loops it compiles live in the sibling modules.
macro_rules! multiversion {
    ($name:ident, $body:ident, $args:ident) => {
        fn $name<T: $crate::kernels::views::Real>(a: &$args<T>, lo: usize, hi: usize) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn wide<T: $crate::kernels::views::Real>(a: &$args<T>, lo: usize, hi: usize) {
                    $body(a, lo, hi)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn mid<T: $crate::kernels::views::Real>(a: &$args<T>, lo: usize, hi: usize) {
                    $body(a, lo, hi)
                }
                match $crate::kernels::simd::isa() {
                    $crate::kernels::simd::Isa::Avx512 => return unsafe { wide(a, lo, hi) },
                    $crate::kernels::simd::Isa::Avx2 => return unsafe { mid(a, lo, hi) },
                    $crate::kernels::simd::Isa::Baseline => {}
                }
            }
            $body(a, lo, hi)
        }
    };
}
pub(super) use multiversion;

/// Elements per unrolled chunk: independent partial sums (a single running sum would serialize the loop,
/// since the compiler may not reassociate) and one vector of f32 lanes on AVX-512.
pub(super) const LANES: usize = 16;

/// Rows per register block of the outer product (then 1 for what is left of a row range). Four rows
/// of accumulators stay in registers; eight were spilled to memory and ran 3× slower.
pub(super) const BLOCK: usize = 4;

/// Asks the CPU to bring the chunk at `p` (LANES elements) into its caches ahead of use. The loops walk
/// BLOCK rows at once, column chunk by column chunk: many short interleaved streams that the hardware
/// prefetchers follow poorly, so each chunk fetches the same chunk of the next row block itself.
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
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
pub(super) fn load<T: Real, const FULL: bool>(s: &[T], base: usize) -> [T; LANES] {
    if FULL {
        return *lanes(s, base);
    }
    let mut v = [T::ZERO; LANES];
    v[..s.len() - base].copy_from_slice(&s[base..]);
    v
}

/// Writes a chunk back: whole, or only the lanes within the row.
#[inline(always)]
pub(super) fn store<T: Real, const FULL: bool>(s: &mut [T], base: usize, v: &[T; LANES]) {
    if FULL {
        *lanes_mut(s, base) = *v;
    } else {
        let n = s.len() - base;
        s[base..].copy_from_slice(&v[..n]);
    }
}
