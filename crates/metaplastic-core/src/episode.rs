//! What a task hands the learner: one lifetime's inner-loop stream and the query set that scores it.
//!
//! Shapes (one episode): `support_x` [T, B, ...input], `support_y` [T, B, out] (regression, float) or
//! [T, B] (classification, int64 labels); `query_x` [Q, ...input], `query_y` [Q, out] or [Q].
//! T inner steps of B examples each. All tensors live on the CPU; the learner moves them.
use crate::{Error, Result};
use tch::{Kind, Tensor};

#[derive(Debug)]
pub struct Episode {
    pub support_x: Tensor,
    pub support_y: Tensor,
    pub query_x: Tensor,
    pub query_y: Tensor,
    /// Class labels used in this episode (classification), e.g. for resetting their output rows.
    pub classes: Vec<i64>,
}

impl Episode {
    pub fn steps(&self) -> i64 {
        self.support_x.size()[0]
    }

    /// Checks the documented shapes and dtypes; `classification` selects the label form of y.
    pub fn validate(&self, input_shape: &[i64], classification: bool, outputs: i64) -> Result<()> {
        let sx = self.support_x.size();
        let qx = self.query_x.size();
        if sx.len() != 2 + input_shape.len() || sx[2..] != *input_shape {
            return Err(Error::Shape(format!("episode support x has shape {sx:?}, expected [T, B, {input_shape:?}]")));
        }
        if qx.len() != 1 + input_shape.len() || qx[1..] != *input_shape {
            return Err(Error::Shape(format!("episode query x has shape {qx:?}, expected [Q, {input_shape:?}]")));
        }
        // An empty stream or query set would make a meta-step that learns nothing or a loss of 0/0.
        if sx[0] == 0 || sx[1] == 0 {
            return Err(Error::Shape(format!(
                "episode support x has shape {sx:?}: the support set is empty (T and B must be at least 1)"
            )));
        }
        if qx[0] == 0 {
            return Err(Error::Shape(format!(
                "episode query x has shape {qx:?}: the query set is empty (Q must be at least 1)"
            )));
        }
        let (sy, qy) = (self.support_y.size(), self.query_y.size());
        let (want_s, want_q) = if classification {
            (vec![sx[0], sx[1]], vec![qx[0]])
        } else {
            (vec![sx[0], sx[1], outputs], vec![qx[0], outputs])
        };
        if sy != want_s {
            return Err(Error::Shape(format!("episode support y has shape {sy:?}, expected {want_s:?}")));
        }
        if qy != want_q {
            return Err(Error::Shape(format!("episode query y has shape {qy:?}, expected {want_q:?}")));
        }
        if classification {
            for (name, y) in [("support y", &self.support_y), ("query y", &self.query_y)] {
                if y.numel() > 0 {
                    let (lo, hi) = (y.f_min()?.int64_value(&[]), y.f_max()?.int64_value(&[]));
                    if lo < 0 || hi >= outputs {
                        return Err(Error::Data(format!(
                            "episode {name} has labels in [{lo}, {hi}], outside [0, {outputs})"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Labels as int64 (callers may hand float labels across the JS boundary).
    pub fn labels_to_int(mut self) -> Result<Self> {
        self.support_y = self.support_y.f_to_kind(Kind::Int64)?;
        self.query_y = self.query_y.f_to_kind(Kind::Int64)?;
        Ok(self)
    }
}

/// A source of episodes for meta-training.
pub trait EpisodeSampler: Send {
    fn sample(&mut self, rng: &mut crate::rng::Rng) -> Result<Episode>;
}
