//! Task losses per episode: mean squared error (regression) or cross-entropy (classification).
use crate::config::{LearnerConfig, TaskKind};
use crate::Result;
use tch::{Kind, Tensor};

/// Mean loss of each episode: y_hat [E, N, out], y [E, N, out] or labels [E, N] → [E].
pub fn per_episode(cfg: &LearnerConfig, y_hat: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(match cfg.task {
        TaskKind::Regression => y_hat.f_sub(y)?.f_square()?.f_mean_dim([1i64, 2].as_slice(), false, None::<Kind>)?,
        TaskKind::Classification => {
            let logp = y_hat.f_log_softmax(-1, None::<Kind>)?;
            logp.f_gather(2, &y.f_unsqueeze(2)?, false)?.f_squeeze_dim(2)?.f_neg()?.f_mean_dim(
                [1i64].as_slice(),
                false,
                None::<Kind>,
            )?
        }
    })
}

/// Fraction of correct predictions per episode (classification): [E].
pub fn accuracy(y_hat: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(y_hat.f_argmax(-1, false)?.f_eq_tensor(labels)?.f_to_kind(Kind::Double)?.f_mean_dim(
        [1i64].as_slice(),
        false,
        None::<Kind>,
    )?)
}
