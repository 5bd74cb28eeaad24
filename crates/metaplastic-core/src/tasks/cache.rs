//! On-disk cache of decoded image sets, so the second load skips decoding.
//!
//! File layout: magic `MPLIMG01` | u64 LE header length | header JSON | sha256(header JSON ‖ payload)
//! | payload (the store's u8 pixels). Any mismatch (magic, key, lengths, checksum) means the file is
//! not used: it is rebuilt from the source and replaced atomically (temp file + rename).
use super::images::{Channels, ClassEntry};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MPLIMG01";
const MAX_HEADER: u64 = 256 << 20;

/// Where decoded sets are cached: `true` (the default root,
/// `${METAPLASTIC_CACHE:-${XDG_CACHE_HOME:-~/.cache}/metaplastic}`), `false` (nowhere) or a directory.
/// Checkpoints store it as "default", "off" or `{ at }`, which are read back as the same settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", try_from = "CacheOption")]
pub enum CacheDir {
    /// `${METAPLASTIC_CACHE:-${XDG_CACHE_HOME:-~/.cache}/metaplastic}`
    #[default]
    Default,
    Off,
    At(PathBuf),
}

/// The forms a configuration may give `CacheDir` in.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "CacheOption")]
pub enum CacheOption {
    Enabled(bool),
    Dir(String),
    At { at: PathBuf },
}

impl TryFrom<CacheOption> for CacheDir {
    type Error = String;
    fn try_from(o: CacheOption) -> std::result::Result<Self, String> {
        Ok(match o {
            CacheOption::Enabled(true) => CacheDir::Default,
            CacheOption::Enabled(false) => CacheDir::Off,
            CacheOption::Dir(d) if d == "default" => CacheDir::Default,
            CacheOption::Dir(d) if d == "off" => CacheDir::Off,
            CacheOption::Dir(d) if d.is_empty() => {
                return Err("expected true, false or a directory, got an empty string".into())
            }
            CacheOption::Dir(d) => CacheDir::At(PathBuf::from(d)),
            CacheOption::At { at } => CacheDir::At(at),
        })
    }
}

impl CacheDir {
    pub fn root(&self) -> Option<PathBuf> {
        match self {
            CacheDir::Off => None,
            CacheDir::At(p) => Some(p.clone()),
            CacheDir::Default => Some(default_root()),
        }
    }
}

pub fn default_root() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = env("METAPLASTIC_CACHE") {
        return p;
    }
    let base =
        env("XDG_CACHE_HOME").unwrap_or_else(|| env("HOME").unwrap_or_else(|| PathBuf::from(".")).join(".cache"));
    base.join("metaplastic")
}

/// What happened to the cache during a load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum CacheStatus {
    Disabled,
    /// Read from the cache.
    Hit,
    /// No cache file yet: decoded and written.
    Built,
    /// A cache file existed but was unusable (the reason says why): decoded and replaced.
    Rebuilt {
        reason: String,
    },
    /// Decoded, but the cache could not be written (the load still succeeds).
    Unwritable {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    key: String,
    channels: Channels,
    size: usize,
    classes: Vec<ClassEntry>,
    payload_len: u64,
}

/// A cache read: Ok(None) when there is no file, Err(reason) when the file exists but must not be used.
type ReadOutcome = std::result::Result<Option<(Vec<ClassEntry>, Vec<u8>)>, String>;

fn read(path: &Path, key: &str, channels: Channels, size: usize) -> ReadOutcome {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    let mut len = [0u8; 8];
    r.read_exact(&mut magic).and_then(|_| r.read_exact(&mut len)).map_err(|_| "truncated header".to_string())?;
    if &magic != MAGIC {
        return Err("not a metaplastic image cache (bad magic)".into());
    }
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || header_len + 48 > file_len {
        return Err("header length out of range".into());
    }
    let mut header_bytes = vec![0u8; header_len as usize];
    let mut digest = [0u8; 32];
    r.read_exact(&mut header_bytes)
        .and_then(|_| r.read_exact(&mut digest))
        .map_err(|_| "truncated header".to_string())?;
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|e| format!("unreadable header: {e}"))?;
    if header.key != key || header.channels != channels || header.size != size {
        return Err("header describes another source or size".into());
    }
    if 16 + header_len + 32 + header.payload_len != file_len {
        return Err(format!("file is {file_len} bytes, header promises {}", 16 + header_len + 32 + header.payload_len));
    }
    let mut payload = vec![0u8; header.payload_len as usize];
    r.read_exact(&mut payload).map_err(|_| "truncated payload".to_string())?;
    let mut h = Sha256::new();
    h.update(&header_bytes);
    h.update(&payload);
    if h.finalize().as_slice() != digest {
        return Err("checksum mismatch".into());
    }
    let per = channels.count() * size * size;
    let total: usize = header.classes.iter().map(|c| c.count).sum();
    if total * per != payload.len() {
        return Err("class table does not match the payload".into());
    }
    Ok(Some((header.classes, payload)))
}

fn write(path: &Path, key: &str, channels: Channels, size: usize, classes: &[ClassEntry], pixels: &[u8]) -> Result<()> {
    let header =
        Header { key: key.to_string(), channels, size, classes: classes.to_vec(), payload_len: pixels.len() as u64 };
    let header_bytes = serde_json::to_vec(&header).map_err(|e| Error::Internal(format!("cache header: {e}")))?;
    let mut h = Sha256::new();
    h.update(&header_bytes);
    h.update(pixels);
    let digest = h.finalize();
    super::write_atomic(path, |f| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        w.write_all(MAGIC)?;
        w.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
        w.write_all(&header_bytes)?;
        w.write_all(&digest)?;
        w.write_all(pixels)?;
        w.flush()
    })
}

/// A decoded set, from the cache when a valid entry exists, else from `build` (then cached).
pub struct Cached {
    pub classes: Vec<ClassEntry>,
    pub pixels: Vec<u8>,
    pub status: CacheStatus,
    pub path: Option<PathBuf>,
}

/// `file` names the entry under `<root>/<sub>/`; `key` (source checksum, size, filter …) must match
/// the entry's header for it to be used.
pub fn cached_or_build(
    dir: &CacheDir,
    sub: &str,
    file: &str,
    key: &str,
    channels: Channels,
    size: usize,
    build: impl FnOnce() -> Result<(Vec<ClassEntry>, Vec<u8>)>,
) -> Result<Cached> {
    let Some(root) = dir.root() else {
        let (classes, pixels) = build()?;
        return Ok(Cached { classes, pixels, status: CacheStatus::Disabled, path: None });
    };
    let path = root.join(sub).join(file);
    let previous = match read(&path, key, channels, size) {
        Ok(Some((classes, pixels))) => {
            return Ok(Cached { classes, pixels, status: CacheStatus::Hit, path: Some(path) })
        }
        Ok(None) => None,
        Err(reason) => Some(reason),
    };
    let (classes, pixels) = build()?;
    let status = match write(&path, key, channels, size, &classes, &pixels) {
        Err(e) => CacheStatus::Unwritable { reason: e.to_string() },
        Ok(()) => match previous {
            Some(reason) => CacheStatus::Rebuilt { reason },
            None => CacheStatus::Built,
        },
    };
    Ok(Cached { classes, pixels, status, path: Some(path) })
}

/// Hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cheap fingerprint of a folder of files: sha256 over each file's relative path, length and
/// modification time (reading every file's bytes would cost as much as decoding them).
pub fn fingerprint_files(root: &Path, files: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let rel = f.strip_prefix(root).unwrap_or(f);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(meta.len().to_le_bytes());
        h.update(mtime.to_le_bytes());
    }
    Ok(hex(&h.finalize()))
}
