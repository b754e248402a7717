//! Typed access to KubeVirt's VM clone API (`clone.kubevirt.io`) as vmclone implements it.
//!
//! - [`v1beta1`] (stored) and [`v1alpha1`] (served) hold the `VirtualMachineClone` resource with
//!   exactly upstream KubeVirt's fields; both versions share one schema. [`crd`] generates a CRD
//!   structurally identical to the one virt-operator installs (for clusters without KubeVirt's
//!   operator); on KubeVirt clusters the operator's own CRD serves these types.
//! - [`extensions`] reads vmclone's options, which are `vmclone.dev/*` annotations on the clone.
//! - [`names`] spells the group, kinds, condition types, reasons, event reasons and annotations.
//! - [`validation`] spells the validation messages (`clone-core`'s rule table builds both the
//!   admission policy and the controller's check from them).
//! - [`kubevirt`] has typed, lossless views of the KubeVirt and CDI objects a clone drives:
//!   `VirtualMachine`, `VirtualMachineSnapshot`, `VirtualMachineSnapshotContent`,
//!   `VirtualMachineRestore`, `KubeVirt` and `DataVolume`. Their specs and statuses never fail
//!   to decode ([`lenient`]): one object from a newer KubeVirt cannot fail a whole list.
//!
//! The crate does no IO; it only needs `kube`'s derive. Like `kube`, it leaves the Kubernetes
//! version to the crate that builds a program: enable one `k8s-openapi` version feature there
//! (vmclone's own binaries use `v1_36`).
//!
//! # Example
//!
//! ```
//! use clone_api::v1beta1::{CloneSource, CloneTarget, VirtualMachineClone, VirtualMachineCloneSpec};
//!
//! let clone = VirtualMachineClone::new(
//!     "testclone",
//!     VirtualMachineCloneSpec {
//!         source: CloneSource {
//!             api_group: Some("kubevirt.io".into()),
//!             kind: "VirtualMachine".into(),
//!             name: "vm-cirros".into(),
//!         },
//!         target: Some(CloneTarget {
//!             api_group: Some("kubevirt.io".into()),
//!             kind: "VirtualMachine".into(),
//!             name: "vm-clone-target".into(),
//!         }),
//!         label_filters: Some(vec!["*".into(), "!somekey/*".into()]),
//!         new_smbios_serial: Some("new-serial".into()),
//!         ..Default::default()
//!     },
//! );
//! let json = serde_json::to_value(&clone).unwrap();
//! assert_eq!(json["apiVersion"], "clone.kubevirt.io/v1beta1");
//! assert_eq!(json["spec"]["newSMBiosSerial"], "new-serial");
//!
//! // The CRD with both versions, as `cargo xtask gen-crds` writes it.
//! let crd = clone_api::crd();
//! assert_eq!(crd.spec.versions.len(), 2);
//! ```

#![warn(missing_docs)]

mod clone;
pub mod extensions;
pub mod kubevirt;
pub mod lenient;
pub mod names;
mod schema;
pub mod v1alpha1;
pub mod v1beta1;
pub mod validation;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The `VirtualMachineClone` CRD with both versions (`v1alpha1` served, `v1beta1` served and
/// stored), structurally identical to the one KubeVirt's virt-operator installs, plus
/// `spec.volumeNamePolicy` (upstream v1.8+). For clusters without virt-operator.
pub fn crd() -> CustomResourceDefinition {
    let versions = vec![
        v1alpha1::VirtualMachineClone::crd(),
        v1beta1::VirtualMachineClone::crd(),
    ];
    // Both CRDs come from the same macro, so they differ only in version: merging cannot fail.
    let mut crd = match kube::core::crd::merge_crds(versions, names::STORAGE_VERSION) {
        Ok(crd) => crd,
        Err(_) => v1beta1::VirtualMachineClone::crd(),
    };
    for version in &mut crd.spec.versions {
        let Some(validation) = version.schema.as_mut() else {
            continue;
        };
        let Some(props) = validation.open_api_v3_schema.take() else {
            continue;
        };
        // The schema is plain data: a round trip through JSON cannot fail.
        let mut value = serde_json::to_value(&props).unwrap_or_default();
        schema::upstream_shape(&mut value);
        validation.open_api_v3_schema = Some(serde_json::from_value(value).unwrap_or(props));
    }
    crd
}
