//! Typed API of `clone.kubevirt.io`.
