//! One clone controller at a time: whether upstream KubeVirt's own clone controller runs, read
//! from the `KubeVirt` CR.
//!
//! virt-operator starts virt-controller with one `--<flag> <value>` per entry of the CR's
//! `spec.customizeComponents.flags.controller`. Upstream's clone controller runs unless that map
//! sets `clone-controller-threads` to `"0"`; an absent flag means virt-controller's default, which
//! runs it. While it runs, vmclone acts on no clone, so the two never work on the same clone.
//! Only the exact string `"0"` counts as off: any other value (also one virt-controller might read
//! as zero, such as `"00"`) keeps vmclone idle, which errs on the side of one controller.
//!
//! Without a `KubeVirt` CR there is nothing to read, and vmclone acts as before (its clones report
//! `KubeVirtNotFound`). Where virt-operator is not in use, the CR does not say what
//! virt-controller runs with, and the check is switched off ([`UpstreamMode::Ignore`]).

use clone_api::kubevirt::{
    CLONE_CONTROLLER_THREADS_FLAG, KubeVirt, Lenient, UPSTREAM_CLONE_CONTROLLER_OFF_PATCH,
};

/// Whether the `KubeVirt` CR is read for upstream's clone controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamMode {
    /// Read the CR: vmclone acts only while it turns upstream's clone controller off.
    #[default]
    Detect,
    /// Do not read it (clusters where virt-operator does not deploy virt-controller).
    Ignore,
}

/// Whether upstream's clone controller runs, as far as vmclone can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamCloneController {
    /// The `KubeVirt` CR turns it off: vmclone acts.
    Off,
    /// Not checked ([`UpstreamMode::Ignore`]): vmclone acts.
    Ignored,
    /// No `KubeVirt` CR exists: vmclone acts (its clones wait with `KubeVirtNotFound`).
    NoKubeVirt,
    /// It runs: vmclone acts on no clone.
    Active(Active),
}

impl UpstreamCloneController {
    /// Whether vmclone must act on no clone.
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Active(_))
    }
}

/// Upstream's clone controller runs: which CR says so, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// The `KubeVirt` CR's namespace.
    pub namespace: String,
    /// The `KubeVirt` CR's name.
    pub name: String,
    /// The value of `clone-controller-threads` (`None`: not set).
    pub threads: Option<String>,
    /// Why the CR's spec could not be read, if it could not (its flags then count as unset).
    pub unreadable: Option<String>,
}

impl Active {
    /// Why vmclone is idle, in one sentence (for `/readyz`, the event and the log).
    pub fn reason(&self) -> String {
        let value = match (&self.threads, &self.unreadable) {
            (Some(v), _) => format!("is {v:?}"),
            (None, Some(why)) => format!("cannot be read ({why})"),
            (None, None) => "is not set".to_owned(),
        };
        format!(
            "upstream KubeVirt's clone controller is active: KubeVirt {}/{} does not set \
             spec.customizeComponents.flags.controller[\"{CLONE_CONTROLLER_THREADS_FLAG}\"] to \
             \"0\" (it {value}), so vmclone acts on no clone",
            self.namespace, self.name
        )
    }

    /// The command that turns upstream's clone controller off.
    pub fn fix(&self) -> String {
        format!(
            "kubectl patch kubevirt {} -n {} --type merge -p '{UPSTREAM_CLONE_CONTROLLER_OFF_PATCH}'",
            self.name, self.namespace
        )
    }

    /// [`Active::reason`] followed by [`Active::fix`].
    pub fn advice(&self) -> String {
        format!(
            "{}; to hand cloning to vmclone, run: {}",
            self.reason(),
            self.fix()
        )
    }
}

/// Whether upstream's clone controller runs, from the `KubeVirt` CR in use (`None`: no CR).
pub fn upstream_clone_controller(
    kubevirt: Option<&KubeVirt>,
    mode: UpstreamMode,
) -> UpstreamCloneController {
    if mode == UpstreamMode::Ignore {
        return UpstreamCloneController::Ignored;
    }
    let Some(kv) = kubevirt else {
        return UpstreamCloneController::NoKubeVirt;
    };
    let threads = kv.spec.controller_flag(CLONE_CONTROLLER_THREADS_FLAG);
    if threads == Some("0") {
        return UpstreamCloneController::Off;
    }
    UpstreamCloneController::Active(Active {
        namespace: kv.metadata.namespace.clone().unwrap_or_default(),
        name: kv.metadata.name.clone().unwrap_or_default(),
        threads: threads.map(str::to_owned),
        unreadable: kv.spec.unreadable().map(str::to_owned),
    })
}
