//! Functional networks over explicit weights: layer specs with their shapes, and the forward pass.
pub mod functional;
pub mod spec;
