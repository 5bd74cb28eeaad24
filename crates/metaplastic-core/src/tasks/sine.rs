//! Incremental sine regression, the OML/FLP protocol (docs/method.md §5.1).
//!
//! y = A·sin(x + φ), A ~ U[0.1, 5.1], φ ~ U[0, π], x ~ U[−5, 5]. Input: a one-hot of the function's slot
//! within the episode (10 slots), then x. A fixed pool of 400 functions for meta-training (drawn once
//! from the seed); fresh functions for evaluation. An episode streams 10 functions × 40 minibatches × 32
//! points, function after function (continual) or with its 400 minibatches shuffled (i.i.d.).
use super::Order;
use crate::episode::{Episode, EpisodeSampler};
use crate::rng::{self, Rng};
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tch::Tensor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SineConfig {
    /// Functions in the fixed meta-training pool.
    pub pool_size: usize,
    /// Functions per episode.
    pub functions: usize,
    /// Width of the slot one-hot (input size is `slots + 1`); at least `functions`.
    pub slots: usize,
    /// Minibatches (inner steps) per function.
    pub batches_per_function: usize,
    /// Points per minibatch.
    pub batch_size: usize,
    /// Fresh query points per function.
    pub query_per_function: usize,
    /// y = A·sin(x + φ) with A ~ U[amplitude].
    pub amplitude: [f64; 2],
    /// φ ~ U[phase].
    pub phase: [f64; 2],
    /// x ~ U[xRange].
    pub x_range: [f64; 2],
}

impl Default for SineConfig {
    fn default() -> Self {
        Self {
            pool_size: 400,
            functions: 10,
            slots: 10,
            batches_per_function: 40,
            batch_size: 32,
            query_per_function: 32,
            amplitude: [0.1, 5.1],
            phase: [0.0, std::f64::consts::PI],
            x_range: [-5.0, 5.0],
        }
    }
}

impl SineConfig {
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("poolSize", self.pool_size),
            ("functions", self.functions),
            ("slots", self.slots),
            ("batchesPerFunction", self.batches_per_function),
            ("batchSize", self.batch_size),
            ("queryPerFunction", self.query_per_function),
        ] {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if self.functions > self.slots {
            return Err(Error::config(
                "functions",
                format!("{} functions need at least as many slots (slots = {})", self.functions, self.slots),
            ));
        }
        if self.functions > self.pool_size {
            return Err(Error::config(
                "functions",
                format!(
                    "an episode draws {} distinct functions from a pool of only {}",
                    self.functions, self.pool_size
                ),
            ));
        }
        let steps =
            self.functions as u64 * self.batches_per_function as u64 * self.batch_size as u64 * (self.slots as u64 + 1);
        if steps > (1 << 31) {
            return Err(Error::config("batchesPerFunction", "episode would exceed 2^31 values"));
        }
        for (field, [lo, hi]) in [("amplitude", self.amplitude), ("phase", self.phase), ("xRange", self.x_range)] {
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                return Err(Error::config(
                    field,
                    format!("expected a finite range [lo, hi] with lo <= hi, got [{lo}, {hi}]"),
                ));
            }
        }
        Ok(())
    }

    pub fn input_size(&self) -> usize {
        self.slots + 1
    }

    pub fn steps(&self) -> usize {
        self.functions * self.batches_per_function
    }
}

/// One sine function's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SineFn {
    pub amplitude: f64,
    pub phase: f64,
}

impl SineFn {
    pub fn eval(&self, x: f64) -> f64 {
        self.amplitude * (x + self.phase).sin()
    }
}

fn uniform(rng: &mut Rng, [lo, hi]: [f64; 2]) -> f64 {
    if lo == hi {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

/// One lifetime's worth of sine data, with the bookkeeping that evaluation needs.
#[derive(Debug)]
pub struct SineEvalRun {
    pub functions: Vec<SineFn>,
    /// [T, B, slots + 1]
    pub support_x: Tensor,
    /// [T, B, 1]
    pub support_y: Tensor,
    /// Index (slot) of the function that each step's minibatch comes from, length T.
    pub step_function: Vec<usize>,
    /// [F, Q, slots + 1]
    pub query_x: Tensor,
    /// [F, Q, 1]
    pub query_y: Tensor,
}

impl SineEvalRun {
    /// The same data as an `Episode` (query sets flattened to [F·Q, ...], function by function).
    pub fn into_episode(self) -> Result<Episode> {
        let i = self.query_x.size()[2];
        Ok(Episode {
            support_x: self.support_x,
            support_y: self.support_y,
            query_x: self.query_x.f_reshape([-1, i])?,
            query_y: self.query_y.f_reshape([-1, 1])?,
            classes: Vec::new(),
        })
    }
}

/// The task: configuration plus the meta-training pool, which is fixed by the seed.
#[derive(Debug, Clone)]
pub struct SineTask {
    cfg: SineConfig,
    pool: Arc<Vec<SineFn>>,
}

impl SineTask {
    pub fn new(cfg: SineConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        // The pool has its own stream: function id i has the same parameters whatever else is drawn.
        let mut r = rng::stream(seed, "sine-pool");
        let pool = (0..cfg.pool_size).map(|_| draw_fn(&cfg, &mut r)).collect();
        Ok(Self { cfg, pool: Arc::new(pool) })
    }

    pub fn config(&self) -> &SineConfig {
        &self.cfg
    }

    pub fn pool(&self) -> &[SineFn] {
        &self.pool
    }

    /// Episodes over the fixed pool: `functions` distinct pool functions, in random order, per episode.
    pub fn meta_train_sampler(&self, order: Order) -> SineSampler {
        SineSampler { cfg: self.cfg.clone(), pool: self.pool.clone(), order }
    }

    /// An evaluation lifetime over fresh functions (never from the pool).
    pub fn eval_run(&self, rng: &mut Rng, order: Order) -> Result<SineEvalRun> {
        let fns: Vec<SineFn> = (0..self.cfg.functions).map(|_| draw_fn(&self.cfg, rng)).collect();
        build(&self.cfg, fns, rng, order)
    }

    /// A lifetime over functions of one's choosing (slot i = `functions[i]`).
    pub fn run_for(&self, functions: Vec<SineFn>, rng: &mut Rng, order: Order) -> Result<SineEvalRun> {
        if functions.is_empty() || functions.len() > self.cfg.slots {
            return Err(Error::config(
                "functions",
                format!("expected 1..={} functions, got {}", self.cfg.slots, functions.len()),
            ));
        }
        build(&self.cfg, functions, rng, order)
    }
}

fn draw_fn(cfg: &SineConfig, rng: &mut Rng) -> SineFn {
    let amplitude = uniform(rng, cfg.amplitude);
    let phase = uniform(rng, cfg.phase);
    SineFn { amplitude, phase }
}

/// Writes `n` points of function `f` in slot `slot` into x (n × width) and y (n).
fn points(cfg: &SineConfig, f: &SineFn, slot: usize, n: usize, rng: &mut Rng, x: &mut Vec<f32>, y: &mut Vec<f32>) {
    let width = cfg.input_size();
    for _ in 0..n {
        let v = uniform(rng, cfg.x_range);
        let start = x.len();
        x.resize(start + width, 0.0);
        x[start + slot] = 1.0;
        x[start + width - 1] = v as f32;
        y.push(f.eval(v) as f32);
    }
}

fn build(cfg: &SineConfig, fns: Vec<SineFn>, rng: &mut Rng, order: Order) -> Result<SineEvalRun> {
    let (f, nb, b, q, w) =
        (fns.len(), cfg.batches_per_function, cfg.batch_size, cfg.query_per_function, cfg.input_size());
    // Minibatches are drawn function by function; i.i.d. order then permutes whole minibatches.
    let mut bx = Vec::with_capacity(f * nb * b * w);
    let mut by = Vec::with_capacity(f * nb * b);
    for (slot, func) in fns.iter().enumerate() {
        points(cfg, func, slot, nb * b, rng, &mut bx, &mut by);
    }
    let mut step_function: Vec<usize> = (0..f * nb).map(|s| s / nb).collect();
    let (support_x, support_y) = match order {
        Order::Continual => (bx, by),
        Order::Iid => {
            let mut perm: Vec<usize> = (0..f * nb).collect();
            perm.shuffle(rng);
            let (mut sx, mut sy) = (Vec::with_capacity(bx.len()), Vec::with_capacity(by.len()));
            for &p in &perm {
                sx.extend_from_slice(&bx[p * b * w..(p + 1) * b * w]);
                sy.extend_from_slice(&by[p * b..(p + 1) * b]);
            }
            step_function = perm.iter().map(|&p| p / nb).collect();
            (sx, sy)
        }
    };
    let (mut qx, mut qy) = (Vec::with_capacity(f * q * w), Vec::with_capacity(f * q));
    for (slot, func) in fns.iter().enumerate() {
        points(cfg, func, slot, q, rng, &mut qx, &mut qy);
    }
    let t = (f * nb) as i64;
    Ok(SineEvalRun {
        functions: fns,
        support_x: Tensor::f_from_slice(&support_x)?.f_reshape([t, b as i64, w as i64])?,
        support_y: Tensor::f_from_slice(&support_y)?.f_reshape([t, b as i64, 1])?,
        step_function,
        query_x: Tensor::f_from_slice(&qx)?.f_reshape([f as i64, q as i64, w as i64])?,
        query_y: Tensor::f_from_slice(&qy)?.f_reshape([f as i64, q as i64, 1])?,
    })
}

/// Meta-training episodes over the fixed pool.
#[derive(Debug, Clone)]
pub struct SineSampler {
    cfg: SineConfig,
    pool: Arc<Vec<SineFn>>,
    order: Order,
}

impl SineSampler {
    /// Like `sample`, keeping the pool ids of the episode's functions (slot i = ids[i]).
    pub fn sample_run(&mut self, rng: &mut Rng) -> Result<(Vec<usize>, SineEvalRun)> {
        let ids = rand::seq::index::sample(rng, self.pool.len(), self.cfg.functions).into_vec();
        let fns = ids.iter().map(|&i| self.pool[i]).collect();
        Ok((ids, build(&self.cfg, fns, rng, self.order)?))
    }
}

impl EpisodeSampler for SineSampler {
    fn sample(&mut self, rng: &mut Rng) -> Result<Episode> {
        self.sample_run(rng)?.1.into_episode()
    }
}
