//! Running engine work off the JS thread: a closure on libuv's pool whose errors and panics reject the
//! promise with a coded error.
use crate::errors::guard;
use metaplastic_core::Result;
use napi::bindgen_prelude::{AsyncTask, ToNapiValue, TypeName};
use napi::{Env, Task};

pub struct Work<T: Send + 'static>(Option<Box<dyn FnOnce() -> Result<T> + Send>>);

impl<T: Send + 'static + ToNapiValue + TypeName> Task for Work<T> {
    type Output = T;
    type JsValue = T;
    fn compute(&mut self) -> napi::Result<T> {
        let f = self.0.take().ok_or_else(|| napi::Error::from_reason("[E_INTERNAL] task ran twice"))?;
        // Thread settings are per thread in libtorch: apply the requested count on this pool thread.
        metaplastic_core::runtime::apply_threads();
        guard(f)
    }
    fn resolve(&mut self, _env: Env, output: T) -> napi::Result<T> {
        Ok(output)
    }
}

pub fn off_thread<T: Send + 'static + ToNapiValue + TypeName>(f: impl FnOnce() -> Result<T> + Send + 'static) -> AsyncTask<Work<T>> {
    AsyncTask::new(Work(Some(Box::new(f))))
}
