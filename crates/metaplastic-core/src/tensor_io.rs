//! The engine's boundary format: flat f32 data plus a shape. Nothing outside the engine sees a Tensor.
use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Flat row-major f32 values and their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub data: Vec<f32>,
    pub shape: Vec<i64>,
}

impl HostTensor {
    pub fn new(data: Vec<f32>, shape: Vec<i64>) -> Result<Self> {
        if let Some(bad) = shape.iter().find(|&&d| d < 0) {
            return Err(Error::Shape(format!("negative dimension {bad} in shape {shape:?}")));
        }
        // Checked: a huge shape must not wrap around into a plausible (or negative) count.
        let numel = shape.iter().try_fold(1i64, |n, &d| n.checked_mul(d));
        match numel {
            None => {
                return Err(Error::Shape(format!(
                    "shape {shape:?} is too large: it holds more than {} values",
                    i64::MAX
                )))
            }
            Some(n) if n as usize != data.len() => {
                return Err(Error::Shape(format!("shape {shape:?} holds {n} values but {} were given", data.len())))
            }
            Some(_) => {}
        }
        Ok(Self { data, shape })
    }

    pub fn to_tensor(&self, device: Device) -> Result<Tensor> {
        Ok(Tensor::f_from_slice(&self.data)?.f_reshape(&self.shape)?.f_to_device(device)?)
    }

    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let shape = t.size();
        let flat = t.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_contiguous()?.f_view([-1])?;
        let data = Vec::<f32>::try_from(&flat)?;
        Ok(Self { data, shape })
    }

    /// Rejects NaN and infinities in user-supplied data, naming what was checked.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        match self.data.iter().position(|v| !v.is_finite()) {
            Some(i) => {
                Err(Error::Data(format!("{what} contains a non-finite value ({}) at flat index {i}", self.data[i])))
            }
            None => Ok(()),
        }
    }
}

/// Sends data to the default device and back: proves the boundary is lossless.
pub fn round_trip(input: &HostTensor) -> Result<HostTensor> {
    let t = input.to_tensor(crate::runtime::default_device())?;
    HostTensor::from_tensor(&t)
}
