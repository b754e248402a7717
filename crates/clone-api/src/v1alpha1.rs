//! `clone.kubevirt.io/v1alpha1`: served, not stored. Same schema as `v1beta1` (as upstream), so a
//! `v1alpha1` object may carry `patches` and `volumeNamePolicy` too; no conversion is needed.

pub use crate::clone::*;

crate::clone::clone_spec!("v1alpha1", false);

impl From<VirtualMachineCloneSpec> for crate::v1beta1::VirtualMachineCloneSpec {
    fn from(spec: VirtualMachineCloneSpec) -> Self {
        Self {
            source: spec.source,
            target: spec.target,
            label_filters: spec.label_filters,
            annotation_filters: spec.annotation_filters,
            template: spec.template,
            new_mac_addresses: spec.new_mac_addresses,
            new_smbios_serial: spec.new_smbios_serial,
            patches: spec.patches,
            volume_name_policy: spec.volume_name_policy,
        }
    }
}
