//! Thin napi binding over metaplastic-core: converts JS values to core types and back, runs long work
//! off the JS thread, and turns every failure (including panics) into a JS `Error` with a stable code.
mod errors;
mod experiment;
mod json;
mod runtime;
mod tasks;
mod work;

#[napi_derive::module_init]
fn init() {
    // CUDA support must be loaded before the first libtorch call of the process.
    errors::install_panic_hook();
    metaplastic_core::runtime::init();
}
