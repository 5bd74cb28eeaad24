//! Data-parallel meta-training over libtorch's c10d: a TCPStore for rendezvous and a Gloo process group
//! (cpp/c10d.cpp). Every rank computes the meta-gradient of its share of the meta-batch; the mean over
//! ranks replaces the local one before the optimizer step, so all ranks apply identical updates.
//!
//! Failures never hang: every collective has the group's timeout, and a collective that fails (a peer
//! exited, hangs or is unreachable) is reported with the rank that did not reach the step, read from the
//! progress marks each rank leaves in the store before its collective.
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr::NonNull;
use tch::{Device, Kind, Tensor};

extern "C" {
    fn mp_c10d_init(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        ifname: *const c_char,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn mp_c10d_free(handle: *mut c_void);
    fn mp_c10d_allreduce_sum(handle: *mut c_void, tensor: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    fn mp_c10d_broadcast(
        handle: *mut c_void,
        tensor: *mut c_void,
        root: c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn mp_c10d_barrier(handle: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    fn mp_c10d_store_set(
        handle: *mut c_void,
        key: *const c_char,
        value: *const c_char,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn mp_c10d_store_get(
        handle: *mut c_void,
        key: *const c_char,
        timeout_ms: i64,
        out: *mut c_char,
        out_len: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

/// Where and how a worker joins a data-parallel group: the torchrun convention (MASTER_ADDR, MASTER_PORT,
/// RANK, WORLD_SIZE).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupSettings {
    /// Host name or address of rank 0, which hosts the rendezvous store.
    pub master_addr: String,
    /// Port rank 0 listens on for the rendezvous.
    pub master_port: u16,
    /// This worker's rank, 0 … worldSize − 1. Rank 0 writes the run folder.
    pub rank: u32,
    /// Number of workers in the group.
    pub world_size: u32,
    /// Seconds a rendezvous or a meta-step's all-reduce waits for the slowest worker before the group
    /// stops with an error naming the missing rank.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// Network interface for the workers' connections (as GLOO_SOCKET_IFNAME); default: from the address.
    #[serde(default)]
    pub ifname: Option<String>,
}

/// Long enough for the slowest rank's meta-step on a loaded machine, short enough to notice a hang.
pub const DEFAULT_TIMEOUT_SECONDS: f64 = 300.0;

fn default_timeout() -> f64 {
    DEFAULT_TIMEOUT_SECONDS
}

impl GroupSettings {
    pub fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(Error::config("worldSize", "must be at least 1"));
        }
        if self.rank >= self.world_size {
            return Err(Error::config(
                "rank",
                format!("{} is not below worldSize {} (ranks are 0 … worldSize − 1)", self.rank, self.world_size),
            ));
        }
        if self.master_addr.trim().is_empty() {
            return Err(Error::config("masterAddr", "is empty; give the host name or address of rank 0"));
        }
        if self.master_port == 0 {
            return Err(Error::config("masterPort", "must be a port number in 1 … 65535 that rank 0 can listen on"));
        }
        if !(self.timeout_seconds.is_finite() && self.timeout_seconds > 0.0) {
            return Err(Error::config(
                "timeoutSeconds",
                format!("must be a positive number of seconds, got {}", self.timeout_seconds),
            ));
        }
        Ok(())
    }

    fn timeout_ms(&self) -> i64 {
        (self.timeout_seconds * 1000.0).ceil() as i64
    }
}

const ERR_LEN: usize = 2048;

/// A joined process group. Used by one thread at a time (it lives inside the experiment's state).
pub struct ProcessGroup {
    handle: NonNull<c_void>,
    pub settings: GroupSettings,
}

// The c10d objects behind the handle are safe to use from any thread, one call at a time.
unsafe impl Send for ProcessGroup {}

/// A group handle on its way from the rendezvous thread.
struct RawGroup(*mut c_void);
unsafe impl Send for RawGroup {}

fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::config(what, "contains a NUL byte"))
}

fn message(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_string()
}

fn mark_key(kind: &str, rank: u32) -> String {
    format!("metaplastic/{kind}/{rank}")
}

impl ProcessGroup {
    /// Rendezvous with the other ranks (waits up to the timeout for all of them). c10d honours the timeout
    /// while rank 0 is not yet listening, but not when something else answers on the port (another group's
    /// rank 0, another program): the rendezvous runs on a thread of its own, and one that outlives the
    /// timeout is abandoned there (its group, should it ever form, is never used) and named.
    pub fn join(settings: &GroupSettings) -> Result<Self> {
        settings.validate()?;
        let host = c_string("masterAddr", &settings.master_addr)?;
        let ifname = c_string("ifname", settings.ifname.as_deref().unwrap_or(""))?;
        let (port, rank, world, timeout_ms) = (
            settings.master_port as c_int,
            settings.rank as c_int,
            settings.world_size as c_int,
            settings.timeout_ms(),
        );
        let (done, result) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("metaplastic-rendezvous".into())
            .spawn(move || {
                let mut err = vec![0u8; ERR_LEN];
                let raw = unsafe {
                    mp_c10d_init(
                        host.as_ptr(),
                        port,
                        rank,
                        world,
                        timeout_ms,
                        ifname.as_ptr(),
                        err.as_mut_ptr() as *mut c_char,
                        ERR_LEN,
                    )
                };
                let _ = done.send((RawGroup(raw), err));
            })
            .map_err(|e| Error::Distributed(format!("cannot start the rendezvous thread: {e}")))?;
        let slack = std::time::Duration::from_secs(2);
        let (RawGroup(raw), err) = result.recv_timeout(std::time::Duration::from_millis(timeout_ms as u64) + slack).map_err(|_| {
            Error::Distributed(format!(
                "rank {} could not join the group of {} at {}:{} within {} s: something answers on that port but does not complete the rendezvous (another group's rank 0, or another program, may be using it). Give each group its own MASTER_PORT, or raise the timeout if rank 0 is slow to start",
                settings.rank, settings.world_size, settings.master_addr, settings.master_port, settings.timeout_seconds
            ))
        })?;
        let handle = NonNull::new(raw).ok_or_else(|| {
            Error::Distributed(format!(
                "rank {} could not join the group of {} at {}:{} within {} s: {}. Check that rank 0 runs and listens on that address and port, that the port is free, and that every rank was given the same WORLD_SIZE",
                settings.rank,
                settings.world_size,
                settings.master_addr,
                settings.master_port,
                settings.timeout_seconds,
                message(&err)
            ))
        })?;
        Ok(Self { handle, settings: settings.clone() })
    }

    pub fn rank(&self) -> u32 {
        self.settings.rank
    }

    pub fn world(&self) -> u32 {
        self.settings.world_size
    }

    /// Runs one C entry point with an error buffer: a negative status is a failure with its message, any
    /// other status is the entry point's answer.
    fn call_status(&self, f: impl FnOnce(*mut c_void, *mut c_char) -> c_int) -> std::result::Result<c_int, String> {
        let mut err = vec![0u8; ERR_LEN];
        match f(self.handle.as_ptr(), err.as_mut_ptr() as *mut c_char) {
            status if status < 0 => Err(message(&err)),
            status => Ok(status),
        }
    }

    fn call(&self, f: impl FnOnce(*mut c_void, *mut c_char) -> c_int) -> std::result::Result<(), String> {
        self.call_status(f).map(|_| ())
    }

    fn cpu_contiguous(t: &Tensor) -> Result<Tensor> {
        Ok(t.f_to_device(Device::Cpu)?.f_contiguous()?)
    }

    /// Sums `t` over all ranks, in place. `step` names the collective in a failure report.
    pub fn all_reduce_sum(&self, t: &mut Tensor, step: u64) -> Result<()> {
        let mut host = Self::cpu_contiguous(t)?;
        let ptr = host.as_mut_ptr() as *mut c_void;
        self.call(|h, err| unsafe { mp_c10d_allreduce_sum(h, ptr, err, ERR_LEN) })
            .map_err(|cause| self.failure(step, &cause))?;
        Self::copy_back(t, &host)
    }

    /// Copies rank `root`'s `t` into every rank's `t`.
    pub fn broadcast(&self, t: &mut Tensor, root: u32) -> Result<()> {
        let mut host = Self::cpu_contiguous(t)?;
        let ptr = host.as_mut_ptr() as *mut c_void;
        self.call(|h, err| unsafe { mp_c10d_broadcast(h, ptr, root as c_int, err, ERR_LEN) })
            .map_err(|cause| self.failure(0, &cause))?;
        Self::copy_back(t, &host)
    }

    /// A CPU contiguous `t` was reduced in place; anything else was staged through a host copy.
    fn copy_back(t: &mut Tensor, host: &Tensor) -> Result<()> {
        if host.data_ptr() != t.data_ptr() {
            tch::no_grad(|| t.f_copy_(host))?;
        }
        Ok(())
    }

    pub fn barrier(&self) -> Result<()> {
        self.call(|h, err| unsafe { mp_c10d_barrier(h, err, ERR_LEN) }).map_err(|cause| self.failure(0, &cause))
    }

    /// The mean over ranks of each rank's (loss, gradients), in one collective: flattened into one buffer.
    pub fn mean(&self, loss: &mut f64, grads: &mut [(usize, Tensor)], step: u64) -> Result<()> {
        self.mark(step)?;
        tch::no_grad(|| -> Result<()> {
            let mut parts: Vec<Tensor> = Vec::with_capacity(grads.len() + 1);
            for (_, g) in grads.iter() {
                parts.push(g.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_reshape([-1])?);
            }
            parts.push(Tensor::f_from_slice(&[*loss])?);
            let mut flat = Tensor::f_cat(&parts, 0)?;
            self.all_reduce_sum(&mut flat, step)?;
            let flat = flat.f_div_scalar(self.world() as f64)?;
            let mut offset = 0i64;
            for (_, g) in grads.iter_mut() {
                let n = g.numel() as i64;
                let mean =
                    flat.f_narrow(0, offset, n)?.f_reshape(g.size())?.f_to_kind(g.kind())?.f_to_device(g.device())?;
                *g = mean;
                offset += n;
            }
            *loss = flat.f_double_value(&[offset])?;
            Ok(())
        })
    }

    /// Leaves "this rank reached `step`" in the store (read only to explain a failure).
    fn mark(&self, step: u64) -> Result<()> {
        self.store_set(&mark_key("step", self.rank()), step)
            .map_err(|cause| self.failure(step, &format!("the rendezvous store is unreachable ({cause})")))
    }

    fn store_set(&self, key: &str, step: u64) -> std::result::Result<(), String> {
        let key = CString::new(key).expect("no NUL in a store key");
        let value = CString::new(step.to_string()).expect("no NUL in a number");
        self.call(|h, err| unsafe { mp_c10d_store_set(h, key.as_ptr(), value.as_ptr(), err, ERR_LEN) })
    }

    fn store_get(&self, key: &str) -> std::result::Result<Option<u64>, String> {
        let key = CString::new(key).expect("no NUL in a store key");
        let mut out = vec![0u8; 64];
        let out_ptr = out.as_mut_ptr() as *mut c_char;
        let status =
            self.call_status(|h, err| unsafe { mp_c10d_store_get(h, key.as_ptr(), 2000, out_ptr, 64, err, ERR_LEN) })?;
        Ok(if status == 0 { message(&out).parse().ok() } else { None })
    }

    /// Names the rank(s) that failed the group at `step`. Each survivor reports its own failure in the
    /// store and gives the others a moment to do the same; a rank that neither reached the step nor
    /// reported is the one that exited or hangs. Rank 0 hosts the store: if the store is gone, so is it.
    fn failure(&self, step: u64, cause: &str) -> Error {
        let me = self.rank();
        let gone = |detail: &str| {
            Error::Distributed(format!("rank {me}: the group failed at meta-step {step}: {detail} ({cause})"))
        };
        if self.store_set(&mark_key("failed", me), step).is_err() {
            return gone("rank 0, which hosts the rendezvous store, exited or is unreachable");
        }
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let mut lost = Vec::new();
        for r in (0..self.world()).filter(|&r| r != me) {
            let (reached, reported) =
                match (self.store_get(&mark_key("step", r)), self.store_get(&mark_key("failed", r))) {
                    (Ok(reached), Ok(reported)) => (reached, reported),
                    _ => return gone("rank 0, which hosts the rendezvous store, exited or is unreachable"),
                };
            match (reached, reported) {
                (_, Some(s)) if s >= step => {} // alive: it saw the same failure
                (Some(s), _) if s < step => lost.push(format!("rank {r} (last reached meta-step {s})")),
                (None, _) => lost.push(format!("rank {r} (reached no meta-step)")),
                _ => lost.push(format!("rank {r} (stopped during meta-step {step})")),
            }
        }
        let who = if lost.is_empty() { "a peer".to_string() } else { lost.join(", ") };
        gone(&format!("{who} exited, hung or became unreachable (timeout {} s)", self.settings.timeout_seconds))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        unsafe { mp_c10d_free(self.handle.as_ptr()) }
    }
}
