//! The vmclone controller: observes `VirtualMachineClone`s and the KubeVirt objects around them,
//! asks `clone_core::decide` for the next step, and executes it.
//!
//! Every Kubernetes call of the product lives in this crate:
//! - [`run`](mod@run) wires the caches, the watches and the controller loop;
//! - [`reconcile`] is one pass: observe ([`observe`]) → decide → apply → status → events;
//! - [`index`] finds the clones an object belongs to;
//! - [`reads`] reuses whole objects while unchanged, and stands in for children just created;
//! - [`context`] holds what passes share (client, caches, event publisher, backoff);
//! - [`events`] publishes events, off the pass and without a cache;
//! - [`telemetry`] metrics and health, [`leader`] leader election;
//! - `upstream` keeps vmclone idle, visibly, while upstream KubeVirt's clone controller runs;
//! - [`cli`] the binary's flags.

pub mod cli;
pub mod context;
pub mod error;
pub mod events;
pub mod index;
pub mod leader;
pub mod observe;
pub mod reads;
pub mod reconcile;
pub mod run;
pub mod telemetry;
mod upstream;

pub use context::Config;
pub use run::{run, run_with};
