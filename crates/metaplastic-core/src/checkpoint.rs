//! Checkpoints: a safetensors file of every tensor (parameters and Adam moments) plus a JSON manifest
//! (format version, package version, full configuration, step, optimizer and RNG states, checksum).
//!
//! Writes are atomic and ordered so that a run killed at any moment leaves a usable checkpoint: the
//! tensors go to a new file named by step, then the manifest that points to it replaces the old one
//! (rename), and only then are older tensor files removed.
use crate::experiment::{Experiment, ExperimentConfig};
use crate::rng::Rng;
use crate::tasks::{cache::sha256_file, write_atomic};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Tensor};

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "checkpoint.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    pub package_version: String,
    pub config: ExperimentConfig,
    pub step: u64,
    pub skipped: u64,
    #[serde(default)]
    pub consecutive_skips: u32,
    #[serde(default)]
    pub exploded: u64,
    /// Recent applied meta-losses (the exploded-lifetime check's window).
    #[serde(default)]
    pub recent_losses: Vec<f64>,
    pub adam_steps: i64,
    /// Processes that meta-trained the run (data-parallel); a resume must use as many.
    #[serde(default = "one_process")]
    pub world_size: u32,
    pub task_rng: Rng,
    pub learner_rng: Rng,
    pub tensors_file: String,
    pub tensors_sha256: String,
}

fn one_process() -> u32 {
    1
}

fn bad(dir: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Checkpoint(format!("{}: {msg}", dir.display()))
}

pub fn save(exp: &Experiment, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (i, p) in exp.learner.params.iter().enumerate() {
        tensors.push((format!("param/{}", p.name), p.tensor.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?));
        for (kind, moments) in [("m", &exp.adam.m), ("v", &exp.adam.v)] {
            if let Some(Some(t)) = moments.get(i) {
                tensors.push((format!("adam.{kind}/{}", p.name), t.f_to_device(Device::Cpu)?.f_contiguous()?));
            }
        }
    }
    let file = format!("tensors-{:08}.safetensors", exp.step);
    let path = dir.join(&file);
    let tmp = dir.join(format!(".{file}.tmp-{}", std::process::id()));
    // tch reports a failed write as a libtorch error; it is a file problem, named as one.
    Tensor::write_safetensors(&tensors, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(
            &tmp,
            std::io::Error::other(format!(
                "cannot write the checkpoint ({e}); check that {} is writable and the disk has room",
                dir.display()
            )),
        )
    })?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        package_version: env!("CARGO_PKG_VERSION").to_string(),
        config: exp.cfg.clone(),
        step: exp.step,
        skipped: exp.skipped,
        consecutive_skips: exp.consecutive_skips,
        exploded: exp.exploded,
        recent_losses: exp.recent_losses.iter().copied().collect(),
        adam_steps: exp.adam.steps,
        world_size: exp.world_size,
        task_rng: exp.rng.clone(),
        learner_rng: exp.learner.rng.clone(),
        tensors_sha256: sha256_file(&path)?,
        tensors_file: file.clone(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(&dir.join(MANIFEST), |f| std::io::Write::write_all(f, &json))?;
    // The new manifest is in place: older tensor files are no longer referenced.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("tensors-") && name.ends_with(".safetensors") && name != file {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            bad(dir, "no checkpoint here (checkpoint.json is missing)")
        } else {
            Error::io(&path, e)
        }
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(dir, format!("checkpoint.json is not valid JSON: {e}")))?;
    let version = value.get("formatVersion").and_then(|v| v.as_u64());
    if version != Some(FORMAT_VERSION as u64) {
        return Err(bad(
            dir,
            format!(
                "checkpoint format version {} is not supported: this metaplastic ({}) reads format version {FORMAT_VERSION}",
                version.map(|v| v.to_string()).unwrap_or_else(|| "(missing)".into()),
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    serde_json::from_value(value).map_err(|e| bad(dir, format!("checkpoint.json is malformed: {e}")))
}

pub fn load(dir: &Path) -> Result<Experiment> {
    let manifest = read_manifest(dir)?;
    // A checkpoint is its folder: the manifest may name only a file inside it.
    let name = Path::new(&manifest.tensors_file);
    if name.components().count() != 1 || !matches!(name.components().next(), Some(std::path::Component::Normal(_))) {
        return Err(bad(
            dir,
            format!(
                "the manifest names the tensor file {:?}, which is not a file name inside the checkpoint folder",
                manifest.tensors_file
            ),
        ));
    }
    let path = dir.join(name);
    if !path.exists() {
        return Err(bad(dir, format!("the tensor file {} named by the manifest is missing", manifest.tensors_file)));
    }
    let sha = sha256_file(&path)?;
    if sha != manifest.tensors_sha256 {
        return Err(bad(
            dir,
            format!(
                "{} is corrupt: its sha256 is {sha}, the manifest expects {}",
                manifest.tensors_file, manifest.tensors_sha256
            ),
        ));
    }
    let mut exp = Experiment::new(manifest.config.clone())?;
    let tensors = Tensor::read_safetensors(&path)?;
    let n = exp.learner.params.len();
    exp.adam.m = (0..n).map(|_| None).collect();
    exp.adam.v = (0..n).map(|_| None).collect();
    let mut seen = 0;
    for (name, t) in tensors {
        let (kind, pname) = name.split_once('/').ok_or_else(|| bad(dir, format!("unexpected tensor {name}")))?;
        let i = exp
            .learner
            .params
            .index_of(pname)
            .map_err(|_| bad(dir, format!("tensor {name} matches no parameter of this configuration")))?;
        let t = t.f_to_device(exp.learner.device)?.f_to_kind(exp.learner.kind)?;
        match kind {
            "param" => {
                exp.learner.params.write(pname, &t).map_err(|e| bad(dir, format!("tensor {name} does not fit the configuration in checkpoint.json ({e}); the manifest was edited or belongs to other tensors")))?;
                seen += 1;
            }
            "adam.m" => exp.adam.m[i] = Some(t),
            "adam.v" => exp.adam.v[i] = Some(t),
            _ => return Err(bad(dir, format!("unexpected tensor {name}"))),
        }
    }
    if seen != n {
        return Err(bad(dir, format!("holds {seen} parameters but the configuration has {n}")));
    }
    exp.step = manifest.step;
    exp.skipped = manifest.skipped;
    exp.consecutive_skips = manifest.consecutive_skips;
    exp.exploded = manifest.exploded;
    exp.recent_losses = manifest.recent_losses.into_iter().collect();
    exp.adam.steps = manifest.adam_steps;
    exp.world_size = manifest.world_size;
    exp.rng = manifest.task_rng;
    exp.learner.rng = manifest.learner_rng;
    Ok(exp)
}
