//! metaplastic-core: plastic networks with learned feedback and local rules, the OML gradient rule,
//! exact meta-gradients, benchmark tasks, evaluation and checkpoints, on libtorch.
pub mod adjoint;
pub mod analysis;
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod distributed;
pub mod episode;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod feedback;
pub mod inner;
pub mod kernels;
pub mod learner;
pub mod loss;
pub mod meta;
pub mod net;
pub mod params;
pub mod rng;
pub mod rules;
pub mod runtime;
pub mod schema;
pub mod tasks;
pub mod tensor_io;

pub use error::{Error, Result};
