//! The pure clone engine of vmclone.
//!
//! Data in, data out: no Kubernetes client, no async runtime, no clock and no randomness. The
//! controller reads the world, hands it to [`decide()`](crate::decide::decide), and executes the one step that comes back.
//!
//! - [`filter`]: label/annotation filters (parse, validate, evaluate).
//! - [`identity`]: the JSON patches that give a clone its own identity.
//! - [`patch`]: KubeVirt-compatible patch application.
//! - [`refusal`]: what a refused creation means (fail, wait for the gate, retry).
//! - [`names`]: target names, serials, UUIDs, MAC normalisation.
//! - [`validate`]: the spec rules CEL cannot express.
//! - [`gate`]: KubeVirt's `Snapshot` feature gate, by KubeVirt release.
//! - [`upstream`]: whether upstream KubeVirt's own clone controller runs (then vmclone idles).
//! - [`datavolume`]: the DataVolume strategy's target VM, checks and progress.
//! - [`quantity`]: storage sizes.
//! - [`decide`](mod@decide): the lifecycle decision.
//! - [`preview`]: the target VM a clone would produce, before it exists (`kubectl vmclone plan`).
//! - [`status`]: conditions and status comparison.

pub use decide::{Action, Decision, Observed, decide};

pub mod datavolume;
pub mod decide;
pub mod filter;
pub mod gate;
pub mod identity;
pub mod names;
pub mod patch;
pub mod policy;
pub mod preview;
pub mod quantity;
pub mod refusal;
pub mod rules;
pub mod status;
pub mod upstream;
pub mod validate;
