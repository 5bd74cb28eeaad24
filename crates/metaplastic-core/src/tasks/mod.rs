//! Benchmark tasks: incremental sine regression, Omniglot, generic image folders.
//!
//! Every sampler draws from an `&mut Rng` handed in (never a global generator), so a checkpoint that
//! stores the generator resumes the same task stream. Images are held as resized `u8` pixels and turned
//! into `f32` in [0, 1] only when an episode is built (a quarter of the memory; the cache stores the
//! same bytes, so a cached load is bit-identical to a fresh decode).
pub mod cache;
pub mod decode;
pub mod image_folder;
pub mod images;
pub mod omniglot;
pub mod sampling;
pub mod sine;

pub use cache::{CacheDir, CacheStatus};
pub use decode::ResizeFilter;
pub use image_folder::{ImageFolderDataset, ImageFolderOptions};
pub use images::{Channels, DatasetInfo, ImageStore};
pub use omniglot::{OmniglotDataset, OmniglotOptions, OmniglotSplit};
pub use sampling::{ContinualStream, EpisodeConfig, ImageEpisodeSampler, LabelMode, StreamConfig};
pub use sine::{SineConfig, SineEvalRun, SineFn, SineSampler, SineTask};

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Order of an inner-loop stream: one task/class after another, or everything shuffled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Order {
    #[default]
    Continual,
    Iid,
}

impl std::str::FromStr for Order {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "continual" => Ok(Order::Continual),
            "iid" => Ok(Order::Iid),
            other => Err(Error::config("order", format!("expected \"continual\" or \"iid\", got {other:?}"))),
        }
    }
}

/// Parses a task configuration from JSON; an error names the offending field (e.g. `ways`).
pub use crate::config::from_value as config_from_json;

/// Writes a file atomically: a temporary sibling, flushed to disk, then renamed over the target.
pub fn write_atomic(
    path: &std::path::Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
