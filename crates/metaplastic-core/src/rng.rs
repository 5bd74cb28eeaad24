//! The engine's only source of randomness: a seeded, serialisable ChaCha generator, so that sampling
//! and initialisation are reproducible across machines and a checkpoint can store the exact state.
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

pub type Rng = rand_chacha::ChaCha8Rng;

pub fn seeded(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Derives an independent stream for a named purpose (e.g. "init", "tasks"), so adding draws to one
/// purpose never shifts the numbers of another.
pub fn stream(seed: u64, purpose: &str) -> Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut r = Rng::seed_from_u64(seed ^ h);
    r.set_stream(h);
    r
}

/// `n` draws from N(0, std²) as f32.
pub fn normal_vec(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    let dist = Normal::new(0.0, std.max(0.0)).expect("std is finite and non-negative");
    (0..n).map(|_| dist.sample(rng) as f32).collect()
}
