//! The layers as configured, and their resolved shapes: what each layer consumes and produces, given the
//! input shape.
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// One layer of the network. Conv layers (ReLU, then flattened before the first linear layer) come before
/// every linear one; the last layer is the linear output layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum LayerSpec {
    Linear {
        units: i64,
    },
    Conv {
        channels: i64,
        kernel: i64,
        #[serde(default = "one")]
        stride: i64,
        #[serde(default)]
        padding: i64,
    },
}

fn one() -> i64 {
    1
}

#[derive(Debug, Clone, PartialEq)]
pub enum LayerShape {
    Linear { inputs: i64, units: i64 },
    Conv { in_channels: i64, channels: i64, kernel: i64, stride: i64, padding: i64 },
}

impl LayerShape {
    pub fn weight_shape(&self) -> Vec<i64> {
        match *self {
            LayerShape::Linear { inputs, units } => vec![units, inputs],
            LayerShape::Conv { in_channels, channels, kernel, .. } => vec![channels, in_channels, kernel, kernel],
        }
    }

    pub fn units(&self) -> i64 {
        match *self {
            LayerShape::Linear { units, .. } => units,
            LayerShape::Conv { channels, .. } => channels,
        }
    }

    /// Fan-in used by Kaiming initialisation.
    pub fn fan_in(&self) -> i64 {
        match *self {
            LayerShape::Linear { inputs, .. } => inputs,
            LayerShape::Conv { in_channels, kernel, .. } => in_channels * kernel * kernel,
        }
    }

    pub fn inputs(&self) -> i64 {
        match *self {
            LayerShape::Linear { inputs, .. } => inputs,
            LayerShape::Conv { in_channels, .. } => in_channels,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NetSpec {
    pub layers: Vec<LayerShape>,
    pub rln: usize,
}

impl NetSpec {
    /// The shapes of the layers `specs` on inputs of `input_shape`, the first `rln` of them frozen in the
    /// inner loop.
    pub fn new(input_shape: &[i64], specs: &[LayerSpec], rln: usize) -> Result<Self> {
        let mut layers = Vec::with_capacity(specs.len());
        // Current activation shape: [C, H, W] before flattening, [features] after.
        let mut shape = input_shape.to_vec();
        for (i, spec) in specs.iter().enumerate() {
            match *spec {
                LayerSpec::Conv { channels, kernel, stride, padding } => {
                    let (c, h, w) = (shape[0], shape[1], shape[2]);
                    let out = |n: i64| (n + 2 * padding - kernel) / stride + 1;
                    let (oh, ow) = (out(h), out(w));
                    if h + 2 * padding < kernel || w + 2 * padding < kernel || oh < 1 || ow < 1 {
                        return Err(Error::config(format!("layers[{i}]"), format!("a {kernel}x{kernel} conv with stride {stride} and padding {padding} does not fit its {h}x{w} input")));
                    }
                    layers.push(LayerShape::Conv { in_channels: c, channels, kernel, stride, padding });
                    shape = vec![channels, oh, ow];
                }
                LayerSpec::Linear { units } => {
                    let inputs: i64 = shape.iter().product();
                    layers.push(LayerShape::Linear { inputs, units });
                    shape = vec![units];
                }
            }
        }
        Ok(Self { layers, rln })
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Indices of the plastic layers (rln..L).
    pub fn plastic(&self) -> std::ops::Range<usize> {
        self.rln..self.layers.len()
    }

    pub fn is_output(&self, l: usize) -> bool {
        l + 1 == self.layers.len()
    }

    pub fn outputs(&self) -> i64 {
        self.layers.last().map(|l| l.units()).unwrap_or(0)
    }
}
