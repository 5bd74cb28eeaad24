//! Runtime information, threads, seeding, and the Float32Array boundary.
use crate::errors::guard;
use metaplastic_core::{runtime, tensor_io::HostTensor};
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

/// `{ version, torchVersion, device, cudaAvailable, cudaDeviceCount, threads }` (see core `RuntimeInfo`).
#[napi(ts_return_type = "RuntimeInfo")]
pub fn runtime_info() -> napi::Result<serde_json::Value> {
    guard(|| serde_json::to_value(runtime::info()).map_err(|e| metaplastic_core::Error::Internal(e.to_string())))
}

#[napi]
pub fn cuda_load_error() -> Option<String> {
    runtime::cuda_load_error()
}

#[napi]
pub fn set_threads(n: i32) -> napi::Result<()> {
    guard(|| runtime::set_threads(n))
}

#[napi]
pub fn manual_seed(seed: i64) -> napi::Result<()> {
    guard(|| {
        runtime::manual_seed(seed);
        Ok(())
    })
}

/// Tensors cross the boundary as flat row-major Float32Array values plus a shape.
#[napi(object)]
pub struct TensorData {
    pub data: Float32Array,
    pub shape: Vec<i64>,
}

pub fn host_from_js(t: &TensorData) -> metaplastic_core::Result<HostTensor> {
    HostTensor::new(t.data.to_vec(), t.shape.clone())
}

pub fn host_to_js(t: HostTensor) -> TensorData {
    TensorData { data: Float32Array::new(t.data), shape: t.shape }
}

/// Copies data onto the default device and back, unchanged.
#[napi]
pub fn round_trip(input: TensorData) -> napi::Result<TensorData> {
    guard(|| Ok(host_to_js(metaplastic_core::tensor_io::round_trip(&host_from_js(&input)?)?)))
}

/// Raises a Rust panic inside the guarded boundary; exists so tests can prove a panic never kills Node.
#[napi]
pub fn panic_for_testing(message: String) -> napi::Result<()> {
    guard(|| -> metaplastic_core::Result<()> { panic!("{message}") })
}
