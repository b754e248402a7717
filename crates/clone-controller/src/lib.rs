//! The vmclone controller: observes `VirtualMachineClone`s and the KubeVirt objects around them,
//! asks `clone_core::decide` for the next step, and executes it.
//!
//! This crate is where every Kubernetes call of the product lives. For now it holds the
//! command-line interface ([`cli`]); the reconciler follows.

pub mod cli;
