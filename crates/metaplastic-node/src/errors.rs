//! Error conversion. Messages travel as "[CODE] message"; src/native.ts turns that prefix into `error.code`.
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the default panic printout (a backtrace on stderr) with a record of where it happened:
/// the JS error carries the message and location, so nothing is printed behind the user's back.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let loc = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
        PANIC_LOCATION.with(|p| *p.borrow_mut() = loc);
        if std::env::var_os("METAPLASTIC_DEBUG_PANIC").is_some() {
            default(info);
        }
    }));
}

/// A failure as it crosses threads: the JS error's reason, "[CODE] message".
#[derive(Debug)]
pub struct Failure(pub String);

impl From<metaplastic_core::Error> for Failure {
    fn from(err: metaplastic_core::Error) -> Self {
        Failure(format!("[{}] {}", err.code(), err))
    }
}

impl From<Failure> for napi::Error {
    fn from(f: Failure) -> Self {
        napi::Error::from_reason(f.0)
    }
}

pub fn to_napi(err: metaplastic_core::Error) -> napi::Error {
    Failure::from(err).into()
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    };
    match PANIC_LOCATION.with(|p| p.borrow_mut().take()) {
        Some(loc) => format!("{msg} (at {loc})"),
        None => msg,
    }
}

/// Runs engine code so that neither an error nor a panic escapes as anything but a `Failure`.
pub fn contain<T>(f: impl FnOnce() -> metaplastic_core::Result<T>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(Failure::from),
        Err(payload) => Err(Failure(format!("[E_PANIC] native panic: {}", panic_message(payload)))),
    }
}

/// `contain` for calls made on the JS thread.
pub fn guard<T>(f: impl FnOnce() -> metaplastic_core::Result<T>) -> napi::Result<T> {
    contain(f).map_err(napi::Error::from)
}
