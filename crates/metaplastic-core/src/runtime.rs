//! libtorch start-up: load CUDA support before the first tch call, pick the device, threads, seeding.
//!
//! Rust links with `--as-needed`, so `libtorch_cuda.so` would be dropped and CUDA would look absent.
//! We `dlopen` it once, globally, before anything touches libtorch; on a CPU-only machine (or a wheel
//! installed without the NVIDIA libraries) the load fails quietly and the CPU is used. On macOS the
//! wheel has no CUDA; Apple GPUs are reached through libtorch's MPS backend instead.
use std::ffi::CString;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use tch::Device;

static CUDA_LOAD: OnceLock<Result<(), String>> = OnceLock::new();

/// Directory of the libtorch this crate was built against (recorded by build.rs); used by cargo tests.
const BUILD_LIBTORCH_LIB_DIR: &str = env!("METAPLASTIC_LIBTORCH_LIB");

/// Directory of libtorch's libraries at run time: a prebuilt addon is told where the JS loader found
/// libtorch (METAPLASTIC_LIBTORCH_LIB); otherwise the build's own libtorch.
pub fn libtorch_lib_dir() -> String {
    std::env::var("METAPLASTIC_LIBTORCH_LIB").unwrap_or_else(|_| BUILD_LIBTORCH_LIB_DIR.to_string())
}
/// Version of that libtorch, e.g. "2.11.0+cu130".
pub const TORCH_VERSION: &str = env!("METAPLASTIC_TORCH_VERSION");

fn dlopen_global(path: &str) -> Result<(), String> {
    let c_path = CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: dlopen with a valid C string; the handle is intentionally leaked (library stays loaded).
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local C string or null.
        let msg = unsafe {
            let err = libc::dlerror();
            if err.is_null() {
                "unknown dlopen error".to_string()
            } else {
                std::ffi::CStr::from_ptr(err).to_string_lossy().into_owned()
            }
        };
        Err(msg)
    } else {
        Ok(())
    }
}

/// Keeps freed tensor memory in the process for reuse. glibc hands weight-sized blocks back to the
/// kernel on every free (mmap, heap trimming), so a reverse pass that allocates and frees them each
/// inner step spends a tenth of its time zeroing fresh pages. Settings given in the environment win.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |var: &str, param: libc::c_int, value: libc::c_int| {
            if std::env::var_os(var).is_none() {
                // SAFETY: mallopt only changes allocator thresholds; it is called before libtorch allocates.
                unsafe { libc::mallopt(param, value) };
            }
        };
        set("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum
        set("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Idempotent; call before any other libtorch use. Returns whether CUDA support was loaded.
pub fn init() -> bool {
    static MEMORY: std::sync::Once = std::sync::Once::new();
    MEMORY.call_once(keep_freed_memory);
    CUDA_LOAD
        .get_or_init(|| {
            if std::env::var_os("METAPLASTIC_DISABLE_CUDA").is_some() {
                return Err("disabled by METAPLASTIC_DISABLE_CUDA".into());
            }
            let ext = if cfg!(target_os = "macos") { "dylib" } else { "so" };
            let full = format!("{}/libtorch_cuda.{ext}", libtorch_lib_dir());
            dlopen_global(&full).or_else(|first| dlopen_global(&format!("libtorch_cuda.{ext}")).map_err(|_| first))
        })
        .is_ok()
}

/// Why CUDA support is not loaded, if it is not.
pub fn cuda_load_error() -> Option<String> {
    init();
    CUDA_LOAD.get().and_then(|r| r.as_ref().err().cloned())
}

pub fn cuda_available() -> bool {
    init() && tch::Cuda::is_available()
}

pub fn cuda_device_count() -> i64 {
    if init() {
        tch::Cuda::device_count()
    } else {
        0
    }
}

/// Whether libtorch's MPS backend (Apple silicon GPUs) is usable.
pub fn mps_available() -> bool {
    init();
    cfg!(target_os = "macos") && tch::utils::has_mps()
}

/// The default device: the first CUDA GPU when present, else the Apple GPU (MPS), otherwise the CPU.
pub fn default_device() -> Device {
    if cuda_available() {
        Device::Cuda(0)
    } else if mps_available() {
        Device::Mps
    } else {
        Device::Cpu
    }
}

/// Parses "cpu", "cuda", "cuda:N", "mps" or "auto".
pub fn parse_device(name: &str) -> crate::Result<Device> {
    init();
    match name {
        "auto" => Ok(default_device()),
        "cpu" => Ok(Device::Cpu),
        "mps" if mps_available() => Ok(Device::Mps),
        "mps" => Err(crate::Error::config("device", "'mps' requested but libtorch's MPS backend is not available (it needs Apple silicon and the macOS libtorch)")),
        "cuda" | "cuda:0" if cuda_available() => Ok(Device::Cuda(0)),
        s if s.starts_with("cuda") => {
            let idx: usize = s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).unwrap_or(0);
            if (idx as i64) < cuda_device_count() {
                Ok(Device::Cuda(idx))
            } else {
                Err(crate::Error::config("device", format!("'{s}' requested but {} CUDA device(s) are available", cuda_device_count())))
            }
        }
        other => Err(crate::Error::config("device", format!("unknown device '{other}' (expected auto, cpu, cuda, cuda:N or mps)"))),
    }
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Thread count asked for with `set_threads` (0: libtorch's default). libtorch's OpenMP setting is per
/// calling thread, so work running on other threads applies it with `apply_threads`.
static THREADS: AtomicI32 = AtomicI32::new(0);

pub fn threads() -> i32 {
    init();
    match THREADS.load(Ordering::Relaxed) {
        0 => tch::get_num_threads(),
        n => n,
    }
}

pub fn set_threads(n: i32) -> crate::Result<()> {
    if n < 1 {
        return Err(crate::Error::config("threads", format!("must be >= 1, got {n}")));
    }
    let most = crate::budget::max_threads();
    if n > most {
        return Err(crate::Error::config(
            "threads",
            format!("at most {most} (4 per logical core of this machine; more only slow libtorch down), got {n}"),
        ));
    }
    init();
    THREADS.store(n, Ordering::Relaxed);
    tch::set_num_threads(n);
    Ok(())
}

/// Applies the requested thread count on the current thread (call at the start of off-thread work).
pub fn apply_threads() {
    let n = THREADS.load(Ordering::Relaxed);
    if n > 0 && tch::get_num_threads() != n {
        tch::set_num_threads(n);
    }
}

/// Seeds libtorch's global generators (CPU and CUDA).
pub fn manual_seed(seed: i64) {
    init();
    tch::manual_seed(seed);
}

#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeInfo {
    /// metaplastic's version.
    pub version: String,
    /// The libtorch version the engine runs on, e.g. "2.11.0+cu130".
    pub torch_version: String,
    /// The default device: "cuda:0" when a CUDA GPU is usable, else "mps" on Apple silicon, else "cpu".
    pub device: String,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    /// libtorch's MPS backend (Apple GPUs) is usable.
    pub mps_available: bool,
    /// libtorch's intra-op threads.
    pub threads: i32,
}

pub fn info() -> RuntimeInfo {
    RuntimeInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        torch_version: TORCH_VERSION.to_string(),
        device: device_name(default_device()),
        cuda_available: cuda_available(),
        cuda_device_count: cuda_device_count(),
        mps_available: mps_available(),
        threads: threads(),
    }
}

extern "C" {
    fn mp_op_count_start() -> i32;
    fn mp_op_count_stop() -> i64;
}

/// Runs `work` and counts the libtorch operations it dispatches from this thread (cpp/op_count.cpp):
/// the calls made from outside any operation, not those operations make inside; work that other
/// threads start themselves is not seen (the fused loops' per-layer threads). On a GPU each is at
/// least one kernel launch, so the count per inner step is what a launch-bound step costs. One count at
/// a time in the process; counting slows the operations down, so time nothing while it runs.
pub fn count_ops<R>(work: impl FnOnce() -> R) -> crate::Result<(R, i64)> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A count whose work panicked stopped its callback (below): its poisoned lock is no reason to refuse.
    let _only = match ONE_AT_A_TIME.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            return Err(crate::Error::Internal("operations are already being counted".into()))
        }
    };
    match unsafe { mp_op_count_start() } {
        0 => {}
        code => return Err(crate::Error::Internal(format!("libtorch refused the operation counter (code {code})"))),
    }
    // The count stops before a panic in the work goes on, so the callback never outlives it.
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    let count = unsafe { mp_op_count_stop() };
    match out {
        Ok(out) => Ok((out, count)),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
