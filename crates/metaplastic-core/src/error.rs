//! One error type for the engine. Every variant has a stable `code` that the Node binding exposes as
//! `error.code`, and a message that names the cause (the field, the file, the shape).
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid configuration: {field}: {message}")]
    Config { field: String, message: String },
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("data error: {0}")]
    Data(String),
    #[error("checkpoint error: {0}")]
    Checkpoint(String),
    #[error("i/o error: {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("libtorch error: {0}")]
    Torch(#[from] tch::TchError),
    #[error("busy: {0}")]
    Busy(String),
    /// A process group failed: a peer exited, hung or was unreachable, or rendezvous failed.
    #[error("distributed training error: {0}")]
    Distributed(String),
    #[error("operation cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Stable machine-readable code, part of the public API.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config { .. } => "E_CONFIG",
            Error::Shape(_) => "E_SHAPE",
            Error::Data(_) => "E_DATA",
            Error::Checkpoint(_) => "E_CHECKPOINT",
            Error::Io { .. } => "E_IO",
            Error::Torch(_) => "E_TORCH",
            Error::Busy(_) => "E_BUSY",
            Error::Distributed(_) => "E_DIST",
            Error::Cancelled => "E_CANCELLED",
            Error::Internal(_) => "E_INTERNAL",
        }
    }

    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { field: field.into(), message: message.into() }
    }

    /// A configuration error of a nested object, with its field named from the enclosing one
    /// (`rln` inside `learner` becomes `learner.rln`); other errors are unchanged.
    pub fn within(self, path: &str) -> Self {
        match self {
            Error::Config { field, message } => Error::config(format!("{path}.{field}"), message),
            other => other,
        }
    }

    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
