//! Named meta-parameters, listed like state-dict keys ("forward.3.weight", "plasticity.6", ...).
use crate::tensor_io::HostTensor;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::Tensor;

/// Meta-optimizer parameter groups; each has its own learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Group {
    /// Forward weights and biases.
    Forward,
    /// Feedback weights and biases.
    Feedback,
    /// Plasticity rates, or OML's meta-learned step sizes.
    Plasticity,
    /// Feedback blend strengths s_l.
    Strength,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::Forward, Group::Feedback, Group::Plasticity, Group::Strength];

    pub fn name(self) -> &'static str {
        match self {
            Group::Forward => "forward",
            Group::Feedback => "feedback",
            Group::Plasticity => "plasticity",
            Group::Strength => "strength",
        }
    }
}

pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    pub group: Group,
    /// False for fixed tensors that are saved but never meta-learned (random feedback, fixed strengths).
    pub trainable: bool,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParamInfo {
    /// State-dict-like name, e.g. "forward.0.weight" or "plasticity.2".
    pub name: String,
    pub shape: Vec<i64>,
    /// The meta-optimizer group (and learning rate) it belongs to.
    pub group: Group,
    /// False for tensors that are saved but never meta-learned (random feedback, fixed strengths).
    pub trainable: bool,
}

#[derive(Default)]
pub struct ParamStore {
    params: Vec<Param>,
    index: HashMap<String, usize>,
}

impl ParamStore {
    /// Adds a parameter; trainable ones are marked as requiring grad. Returns its index.
    pub fn add(&mut self, name: impl Into<String>, tensor: Tensor, group: Group, trainable: bool) -> usize {
        let name = name.into();
        assert!(!self.index.contains_key(&name), "duplicate parameter {name}");
        let tensor = tensor.set_requires_grad(trainable);
        self.index.insert(name.clone(), self.params.len());
        self.params.push(Param { name, tensor, group, trainable });
        self.params.len() - 1
    }

    pub fn at(&self, i: usize) -> &Tensor {
        &self.params[i].tensor
    }

    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn index_of(&self, name: &str) -> Result<usize> {
        self.index.get(name).copied().ok_or_else(|| {
            let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
            Error::config("name", format!("no parameter named '{name}' (known: {})", known.join(", ")))
        })
    }

    pub fn infos(&self) -> Vec<ParamInfo> {
        self.params
            .iter()
            .map(|p| ParamInfo { name: p.name.clone(), shape: p.tensor.size(), group: p.group, trainable: p.trainable })
            .collect()
    }

    pub fn read(&self, name: &str) -> Result<HostTensor> {
        HostTensor::from_tensor(&self.params[self.index_of(name)?].tensor)
    }

    /// Overwrites a parameter's values in place (same shape), e.g. to load weights or for tests.
    pub fn write(&mut self, name: &str, value: &Tensor) -> Result<()> {
        let i = self.index_of(name)?;
        let p = &mut self.params[i];
        if value.size() != p.tensor.size() {
            return Err(Error::Shape(format!(
                "parameter {name} has shape {:?}, got {:?}",
                p.tensor.size(),
                value.size()
            )));
        }
        tch::no_grad(|| p.tensor.f_copy_(value))?;
        Ok(())
    }
}
