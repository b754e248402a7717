//! The command line, with kubectl's conventions: `-n/--namespace`, `--kubeconfig`, `--context`
//! on every command, `-o yaml|json` where something is printed, exit status 2 for usage errors,
//! and a flag given twice means its last value (as in kubectl and virtctl; list flags collect).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `kubectl vmclone`: clone KubeVirt virtual machines.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-vmclone",
    bin_name = "kubectl vmclone",
    version,
    args_override_self = true,
    about = "Clone KubeVirt virtual machines: write clone manifests, run clones with live progress, preview targets, clone disks"
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where to talk to, as kubectl says it.
#[derive(Debug, Clone, Default, Args)]
pub struct Global {
    /// The namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig file (default: `$KUBECONFIG`, else `~/.kube/config`).
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a VirtualMachineClone manifest (like `virtctl create clone`); creates nothing.
    Create(CreateArgs),
    /// Create the clone(s) and, with `--wait`, follow them until they finish.
    #[command(alias = "apply")]
    Run(RunArgs),
    /// Show the target VM a clone would produce, as a diff against its source; creates nothing.
    Plan(PlanArgs),
    /// Clone one VM disk (a PVC) into a new DataVolume, in this or another namespace.
    Disk(DiskArgs),
}

/// How to print an object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// YAML (the default).
    #[default]
    Yaml,
    /// JSON.
    Json,
}

/// The flags that describe a clone: `virtctl create clone`'s, then vmclone's own.
#[derive(Debug, Clone, Default, Args)]
pub struct CloneFlags {
    /// The clone's name (default: `clone-` and 5 random characters).
    #[arg(long)]
    pub name: Option<String>,
    /// The source's name.
    #[arg(long)]
    pub source_name: Option<String>,
    /// The source's type: `vm` (VirtualMachine) or `snapshot` (VirtualMachineSnapshot), with
    /// virtctl's aliases.
    #[arg(long, default_value = "vm")]
    pub source_type: String,
    /// The target VM's name (default: one the clone chooses).
    #[arg(long)]
    pub target_name: Option<String>,
    /// The target's type: `vm`.
    #[arg(long, default_value = "vm")]
    pub target_type: String,
    /// A label filter (repeatable).
    #[arg(long = "label-filter")]
    pub label_filters: Vec<String>,
    /// An annotation filter (repeatable).
    #[arg(long = "annotation-filter")]
    pub annotation_filters: Vec<String>,
    /// A template label filter (repeatable).
    #[arg(long = "template-label-filter")]
    pub template_label_filters: Vec<String>,
    /// A template annotation filter (repeatable).
    #[arg(long = "template-annotation-filter")]
    pub template_annotation_filters: Vec<String>,
    /// `interface:mac` (repeatable). Unlike virtctl, a MAC with `:` works
    /// (`eth0:02:00:00:00:00:01`).
    #[arg(long = "new-mac-address")]
    pub new_mac_addresses: Vec<String>,
    /// The target's SMBIOS serial.
    #[arg(long)]
    pub new_smbios_serial: Option<String>,
    /// A JSON Patch operation for the target (repeatable), e.g.
    /// `{"op":"add","path":"/spec/runStrategy","value":"Always"}`.
    #[arg(long = "patch")]
    pub patches: Vec<String>,
    /// `RandomizeNames` or `PrefixTargetName`.
    #[arg(long)]
    pub volume_name_policy: Option<String>,
    /// `Snapshot`, `DataVolume` or `Auto` (annotation `vmclone.dev/strategy`).
    #[arg(long)]
    pub strategy: Option<String>,
    /// The source's namespace (annotation `vmclone.dev/source-namespace`).
    #[arg(long)]
    pub source_namespace: Option<String>,
    /// `Halted`, `Always`, `RerunOnFailure` or `Manual` (annotation
    /// `vmclone.dev/target-run-strategy`).
    #[arg(long)]
    pub target_run_strategy: Option<String>,
    /// How many clones of the source, with distinct names (`<name>-1` … `<name>-N`).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
}

/// `create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The clone.
    #[command(flatten)]
    pub clone: CloneFlags,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

/// `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The clone.
    #[command(flatten)]
    pub clone: CloneFlags,
    /// Follow the clones until they finish (exit status 0 all succeeded, 1 any failed, 3 timed
    /// out).
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits (e.g. `90s`, `10m`).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// The clone.
    #[command(flatten)]
    pub clone: CloneFlags,
    /// Print the whole target VM instead of a diff.
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
}

/// `disk`.
#[derive(Debug, Clone, Args)]
pub struct DiskArgs {
    /// The PVC to clone.
    #[arg(long)]
    pub source_pvc: String,
    /// The PVC's namespace (default: the target namespace).
    #[arg(long)]
    pub source_namespace: Option<String>,
    /// The new DataVolume's name.
    #[arg(long)]
    pub name: String,
    /// The new DataVolume's size (default: the source's).
    #[arg(long)]
    pub size: Option<String>,
    /// The new DataVolume's storage class (default: the source's).
    #[arg(long)]
    pub storage_class: Option<String>,
    /// `Filesystem` or `Block` (default: the source's).
    #[arg(long)]
    pub volume_mode: Option<String>,
    /// Follow the DataVolume until it finishes, with a progress bar (exit status 0 succeeded or
    /// waiting for its first consumer, 1 failed, 3 timed out).
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Run the checks and print the DataVolume instead of creating it.
    #[arg(long)]
    pub dry_run: bool,
    /// How `--dry-run` prints the DataVolume.
    #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

/// `90s`, `10m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 90s, 10m or 1h"))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: expected e.g. 90s, 10m or 1h"
            ));
        }
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectls() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
