//! metaplastic-core: plastic networks with learned feedback and local rules, the OML gradient rule,
//! exact meta-gradients, benchmark tasks, evaluation and checkpoints, on libtorch.
pub mod episode;
pub mod error;
pub mod rng;
pub mod tasks;
pub mod runtime;
pub mod tensor_io;

pub use error::{Error, Result};
