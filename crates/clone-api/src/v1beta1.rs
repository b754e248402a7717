//! `clone.kubevirt.io/v1beta1`: the stored version, used by the controller.

pub use crate::clone::*;

crate::clone::clone_spec!("v1beta1", true);
