//! Running engine work off the JS thread.
//!
//! All of it runs on one dedicated engine thread, not spread over libuv's pool: libtorch's OpenMP
//! keeps a thread team per calling thread, and several teams on a small machine oversubscribe the
//! cores and stop spin-waiting (measured: a meta-step 1.8× slower with two intra-op threads). The
//! pool thread that runs `compute` only waits for the engine thread's answer.
use crate::errors::{contain, Failure};
use metaplastic_core::Result;
use napi::bindgen_prelude::{AsyncTask, ToNapiValue, TypeName};
use napi::{Env, Task};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

fn engine() -> std::result::Result<Sender<Job>, Failure> {
    static ENGINE: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    let sender = ENGINE.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("metaplastic-engine".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("the engine thread starts");
        Mutex::new(tx)
    });
    sender.lock().map(|s| s.clone()).map_err(|_| Failure("[E_INTERNAL] the engine thread is unavailable".into()))
}

pub struct Work<T: Send + 'static>(Option<Box<dyn FnOnce() -> Result<T> + Send>>);

impl<T: Send + 'static + ToNapiValue + TypeName> Task for Work<T> {
    type Output = T;
    type JsValue = T;
    fn compute(&mut self) -> napi::Result<T> {
        let f = self.0.take().ok_or_else(|| napi::Error::from_reason("[E_INTERNAL] task ran twice"))?;
        let (tx, rx) = channel();
        let job: Job = Box::new(move || {
            metaplastic_core::runtime::apply_threads();
            let _ = tx.send(contain(f));
        });
        engine()?.send(job).map_err(|_| napi::Error::from_reason("[E_INTERNAL] the engine thread stopped"))?;
        let result =
            rx.recv().map_err(|_| napi::Error::from_reason("[E_INTERNAL] the engine thread dropped a task"))?;
        result.map_err(napi::Error::from)
    }
    fn resolve(&mut self, _env: Env, output: T) -> napi::Result<T> {
        Ok(output)
    }
}

pub fn off_thread<T: Send + 'static + ToNapiValue + TypeName>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> AsyncTask<Work<T>> {
    AsyncTask::new(Work(Some(Box::new(f))))
}
