//! Golden tests: `kubectl vmclone create` against the real `virtctl create clone` of KubeVirt
//! v1.7.0 (built once per machine by testenv from the Go module proxy), run side by side with the
//! same flags.
//!
//! - The flag combinations of virtctl's own unit tests (research §6 and §7.4) and a few edges
//!   (empty values, repeated flags, values YAML could misread) print the same manifest: the same
//!   fields, values and key order. The random default name is compared by its shape only
//!   (`clone-` and five characters of Kubernetes' suffix alphabet). The text may differ only in
//!   how strings are quoted (virtctl writes `'*'`, we write `"*"`).
//! - The error cases fail in both, with virtctl's message in ours (virtctl exits 1 and first prints
//!   why it could not reach the dummy server; we exit 2).
//! - The documented difference: a MAC written with `:` is refused by virtctl and kept by us.
//! - Our manifest reads back through the real `kubectl create --dry-run=client` unchanged: MACs
//!   with colons and values kubectl's YAML 1.1 reader would take for booleans, numbers or null
//!   stay strings.
//! - `--count` and vmclone's own flags, which virtctl does not have, add exactly the documented
//!   fields to virtctl's manifest; invalid values of them fail with exit status 2.
//!
//! virtctl needs no kubeconfig to print a manifest (without one it falls back to client-go's
//! defaults), but after any error it asks the kubeconfig's server for its version, to warn of a
//! version skew, before it prints the error. Both tools therefore get a dummy kubeconfig whose
//! server (127.0.0.1:1) refuses at once: no test reaches whatever cluster `~/.kube/config` names.
//! Its context has a namespace, which neither tool may copy into the manifest. Only the `kubectl`
//! round trip uses a control plane (testenv's, for kubectl's discovery).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

/// Our binary, built by cargo for this test.
const OURS: &str = env!("CARGO_BIN_EXE_kubectl-vmclone");
/// Kubernetes' random-suffix alphabet, which virtctl's default names use.
const SUFFIX_ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";
/// What the default names are compared as.
const RANDOM_NAME: &str = "clone-?????";

/// virtctl and the dummy kubeconfig both commands get.
#[derive(Debug)]
struct Tools {
    virtctl: PathBuf,
    kubeconfig: PathBuf,
}

fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let virtctl = testenv::ensure_virtctl()
            .unwrap_or_else(|e| panic!("could not build or find virtctl: {e:#}"));
        // A context with a namespace, which neither tool may copy into the manifest.
        let kubeconfig_text = "apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster:
    server: https://127.0.0.1:1
users:
- name: nobody
  user:
    token: not-a-token
contexts:
- name: nowhere
  context:
    cluster: nowhere
    user: nobody
    namespace: from-the-context
current-context: nowhere
";
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let kubeconfig = dir.join("create-golden-kubeconfig.yaml");
        let partial = dir.join(format!("create-golden-kubeconfig.{}", std::process::id()));
        std::fs::write(&partial, kubeconfig_text).unwrap();
        std::fs::rename(&partial, &kubeconfig).unwrap();
        Tools {
            virtctl,
            kubeconfig,
        }
    })
}

/// What one command printed and how it exited.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The last line of stderr: virtctl's error (after its failed version check).
    fn last_error_line(&self) -> &str {
        self.stderr.trim_end().lines().last().unwrap_or_default()
    }
}

fn run(mut command: Command) -> Run {
    let output = command
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `virtctl create clone <args>`.
fn virtctl(args: &[&str]) -> Run {
    let tools = tools();
    let mut command = Command::new(&tools.virtctl);
    command
        .arg("--kubeconfig")
        .arg(&tools.kubeconfig)
        .args(["create", "clone"])
        .args(args);
    run(command)
}

/// `kubectl-vmclone create <args>`.
fn ours(args: &[&str]) -> Run {
    let mut command = Command::new(OURS);
    command
        .arg("--kubeconfig")
        .arg(&tools().kubeconfig)
        .arg("create")
        .args(args);
    run(command)
}

fn parse_yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"))
}

/// Whether `name` looks like a default name: `clone-` and five suffix characters.
fn is_random_name(name: &str) -> bool {
    name.strip_prefix("clone-").is_some_and(|suffix| {
        suffix.chars().count() == 5 && suffix.chars().all(|c| SUFFIX_ALPHABET.contains(c))
    })
}

/// The last value of `--<flag>` in `args` (`--flag value` or `--flag=value`), as both tools
/// take it.
fn flag_value<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    let long = format!("--{flag}");
    let with_equals = format!("--{flag}=");
    let mut value = None;
    for (i, arg) in args.iter().enumerate() {
        if *arg == long {
            value = args.get(i + 1).copied();
        } else if let Some(v) = arg.strip_prefix(&with_equals) {
            value = Some(v);
        }
    }
    value
}

/// Every path where `ours` and `theirs` differ, with both values, and where the same keys come
/// in another order (parsed documents keep their order).
fn differences(path: &str, ours: &Value, theirs: &Value, out: &mut Vec<String>) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let (our_order, their_order): (Vec<&String>, Vec<&String>) =
                (a.keys().collect(), b.keys().collect());
            let (mut our_set, mut their_set) = (our_order.clone(), their_order.clone());
            our_set.sort();
            their_set.sort();
            if our_set == their_set && our_order != their_order {
                out.push(format!(
                    "{path}: keys in the order {our_order:?}, virtctl {their_order:?}"
                ));
            }
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let here = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differences(&here, x, y, out),
                    (Some(x), None) => out.push(format!("{here}: only ours has it ({x})")),
                    (None, Some(y)) => out.push(format!("{here}: only virtctl has it ({y})")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ if ours == theirs => {}
        _ => out.push(format!("{path}: ours {ours}, virtctl {theirs}")),
    }
}

/// Replaces the default name in a parsed manifest, after checking its shape.
fn mask_random_name(manifest: &mut Value, who: &str) -> Result<(), String> {
    let name = manifest["metadata"]["name"]
        .as_str()
        .ok_or_else(|| format!("{who}: no metadata.name"))?;
    if !is_random_name(name) {
        return Err(format!(
            "{who}: default name {name:?} is not clone-<5 of {SUFFIX_ALPHABET}>"
        ));
    }
    manifest["metadata"]["name"] = json!(RANDOM_NAME);
    Ok(())
}

/// `value` with every object's keys sorted, for expectations built by adding fields.
fn sort_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// Runs both tools with `args`; `Err` describes every way our manifest differs from virtctl's.
fn compare(args: &[&str]) -> Result<(), String> {
    let theirs = virtctl(args);
    let ours = ours(args);
    if theirs.code != Some(0) || !theirs.stderr.is_empty() {
        return Err(format!(
            "virtctl did not succeed quietly:\n{}",
            theirs.describe()
        ));
    }
    if ours.code != Some(0) || !ours.stderr.is_empty() {
        return Err(format!(
            "ours did not succeed quietly:\n{}",
            ours.describe()
        ));
    }
    let (mut their_manifest, mut our_manifest) =
        (parse_yaml(&theirs.stdout), parse_yaml(&ours.stdout));
    if flag_value(args, "name").is_none_or(str::is_empty) {
        mask_random_name(&mut their_manifest, "virtctl")?;
        mask_random_name(&mut our_manifest, "ours")?;
    }
    let mut diffs = Vec::new();
    differences("", &our_manifest, &their_manifest, &mut diffs);
    if !diffs.is_empty() {
        return Err(format!(
            "fields differ:\n  {}\n--- virtctl\n{}--- ours\n{}",
            diffs.join("\n  "),
            theirs.stdout,
            ours.stdout
        ));
    }
    Ok(())
}

/// Runs every case and fails once, listing each case that differs.
fn compare_all(cases: &[(String, Vec<&str>)]) {
    let mut failures = String::new();
    for (label, args) in cases {
        if let Err(why) = compare(args) {
            let _ = writeln!(failures, "=== {label}: {args:?}\n{why}");
        }
    }
    assert!(
        failures.is_empty(),
        "ours differs from virtctl:\n{failures}"
    );
}

const VM_ALIASES: [&str; 4] = ["vm", "VM", "VirtualMachine", "virtualmachine"];
const SNAPSHOT_ALIASES: [&str; 4] = [
    "snapshot",
    "VirtualMachineSnapshot",
    "vmsnapshot",
    "VMSnapshot",
];

fn case(label: &str, args: &[&'static str]) -> (String, Vec<&'static str>) {
    let mut all = vec!["--source-name", "source-vm"];
    all.extend_from_slice(args);
    (label.to_owned(), all)
}

#[test]
fn source_and_target_types_match_virtctl_for_every_alias() {
    let mut cases = vec![case("only --source-name", &[])];
    for alias in VM_ALIASES.into_iter().chain(SNAPSHOT_ALIASES) {
        cases.push(case(
            &format!("source type {alias}"),
            &["--source-type", alias],
        ));
    }
    for alias in VM_ALIASES {
        cases.push(case(
            &format!("target type {alias}"),
            &["--target-name", "target-vm", "--target-type", alias],
        ));
    }
    cases.push(case(
        "snapshot source to a named VM target",
        &[
            "--source-type",
            "VirtualMachineSnapshot",
            "--target-type",
            "VirtualMachine",
            "--target-name",
            "target-vm",
        ],
    ));
    cases.push(case("empty source type means vm", &["--source-type", ""]));
    cases.push(case("empty target type means vm", &["--target-type="]));
    compare_all(&cases);
}

#[test]
fn filters_macs_serial_namespace_and_name_match_virtctl() {
    let cases = vec![
        case("target name", &["--target-name", "target-vm"]),
        case(
            "label filters",
            &["--label-filter", "*", "--label-filter", "!some/key"],
        ),
        case(
            "annotation filters",
            &[
                "--annotation-filter",
                "*",
                "--annotation-filter",
                "!some/key",
            ],
        ),
        case(
            "label and annotation filters",
            &[
                "--label-filter",
                "*",
                "--label-filter",
                "!some/key",
                "--annotation-filter",
                "a/*",
                "--annotation-filter",
                "!a/b",
            ],
        ),
        case(
            "template label filters",
            &[
                "--template-label-filter",
                "*",
                "--template-label-filter",
                "!some/key",
            ],
        ),
        case(
            "template annotation filters",
            &[
                "--template-annotation-filter",
                "*",
                "--template-annotation-filter",
                "!some/key",
            ],
        ),
        case(
            "template label and annotation filters",
            &[
                "--template-label-filter",
                "t/*",
                "--template-label-filter",
                "!t/x",
                "--template-annotation-filter",
                "u/*",
                "--template-annotation-filter",
                "!u/y",
            ],
        ),
        case(
            "filters are not split on commas; an empty one is kept",
            &["--label-filter", "a,b", "--label-filter", ""],
        ),
        case(
            "new MAC addresses written with '-'",
            &[
                "--new-mac-address",
                "interface1:00-11-22",
                "--new-mac-address",
                "interface2:00-11-33",
            ],
        ),
        case(
            "a MAC for the same interface twice: the last one wins",
            &[
                "--new-mac-address",
                "eth0:02-00-00-00-00-01",
                "--new-mac-address",
                "eth0:02-00-00-00-00-02",
            ],
        ),
        case("new SMBIOS serial", &["--new-smbios-serial", "new-serial"]),
        case(
            "an empty SMBIOS serial is left out",
            &["--new-smbios-serial", ""],
        ),
        case("-n", &["-n", "some-namespace"]),
        case("--namespace", &["--namespace", "some-namespace"]),
        case("an empty namespace is left out", &["--namespace="]),
        case("--name", &["--name", "my-clone"]),
        case("an empty name is a random one", &["--name", ""]),
        case(
            "a flag given twice: the last value wins",
            &[
                "--name",
                "first",
                "--name",
                "second",
                "--source-name",
                "other-vm",
            ],
        ),
        case(
            "values YAML could read as something else",
            &[
                "--name",
                "123",
                "--target-name",
                "yes",
                "--label-filter",
                "~",
                "--label-filter",
                "null",
                "--annotation-filter",
                "1e3",
                "--annotation-filter",
                "0x1F",
                "--template-label-filter",
                "on",
                "--template-annotation-filter",
                "0o17",
                "--new-mac-address",
                "eth0:0123",
                "--new-mac-address",
                "eth1:1_000",
                "--new-smbios-serial",
                "1.5",
            ],
        ),
        case(
            "every flag at once",
            &[
                "--name",
                "full-clone",
                "--target-name",
                "target-vm",
                "--source-type",
                "VM",
                "--target-type",
                "virtualmachine",
                "--label-filter",
                "*",
                "--label-filter",
                "!some/key",
                "--annotation-filter",
                "*",
                "--annotation-filter",
                "!other/key",
                "--template-label-filter",
                "app/*",
                "--template-label-filter",
                "!app/tier",
                "--template-annotation-filter",
                "*",
                "--template-annotation-filter",
                "!kubevirt.io/*",
                "--new-mac-address",
                "eth0:02-00-00-00-00-01",
                "--new-mac-address",
                "eth1:02-00-00-00-00-02",
                "--new-smbios-serial",
                "serial-1",
                "-n",
                "ns-1",
            ],
        ),
    ];
    compare_all(&cases);
}

/// A flag line that both refuse, with the message both print.
struct Refusal {
    args: Vec<&'static str>,
    message: String,
}

fn refused(args: &[&'static str], message: &str) -> Refusal {
    Refusal {
        args: args.to_vec(),
        message: message.to_owned(),
    }
}

#[test]
fn errors_are_virtctls_with_exit_status_2() {
    let mut refusals = vec![
        refused(&[], r#"required flag(s) "source-name" not set"#),
        refused(&["--source-name", ""], "source name must not be empty"),
        refused(
            &["--source-name", "vm", "--source-type", "vmi"],
            "source type vmi is not supported. Supported types: vm, vmsnapshot",
        ),
        refused(
            &["--source-name", "vm", "--target-type", "pod"],
            "target type pod is not supported. Supported types: vm",
        ),
        refused(
            &[
                "--source-name",
                "vm",
                "--new-mac-address",
                ":02-00-00-00-00-01",
            ],
            "newMacAddress parameter :02-00-00-00-00-01 has empty interface name",
        ),
        refused(
            &["--source-name", "vm", "--new-mac-address", "eth0:"],
            "newMacAddress parameter eth0: has empty address name",
        ),
    ];
    for alias in SNAPSHOT_ALIASES {
        refusals.push(refused(
            &["--source-name", "vm", "--target-type", alias],
            &format!("target type {alias} is not supported. Supported types: vm"),
        ));
    }

    let mut failures = String::new();
    for Refusal { args, message } in &refusals {
        let theirs = virtctl(args);
        let ours = ours(args);
        if theirs.code == Some(0)
            || theirs.last_error_line() != message
            || !theirs.stdout.is_empty()
        {
            let _ = writeln!(
                failures,
                "=== {args:?}: virtctl, expected {message:?}\n{}",
                theirs.describe()
            );
        }
        if ours.code != Some(2)
            || ours.stderr != format!("error: {message}\n")
            || !ours.stdout.is_empty()
        {
            let _ = writeln!(
                failures,
                "=== {args:?}: ours, expected exit 2 and {message:?}\n{}",
                ours.describe()
            );
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn a_value_without_a_colon_is_refused_by_both_in_their_own_words() {
    let args = ["--source-name", "vm", "--new-mac-address", "eth0"];
    let theirs = virtctl(&args);
    assert_eq!(theirs.code, Some(1), "{}", theirs.describe());
    assert_eq!(
        theirs.last_error_line(),
        "newMacAddress parameter eth0 is invalid: exactly one ':' is expected. For example: 'interface0:address0'"
    );
    let ours = ours(&args);
    assert_eq!(ours.code, Some(2), "{}", ours.describe());
    assert!(ours.stdout.is_empty(), "{}", ours.describe());
    // Same start; "exactly one ':'" would be wrong where MACs may contain colons.
    assert!(
        ours.stderr
            .starts_with("error: newMacAddress parameter eth0 is invalid: "),
        "{}",
        ours.describe()
    );
    assert!(
        ours.stderr.contains("'interface0:02:00:00:00:00:01'"),
        "{}",
        ours.describe()
    );
}

#[test]
fn a_mac_with_colons_is_refused_by_virtctl_and_kept_by_us() {
    let base = ["--source-name", "vm", "--name", "c", "--target-name", "t"];
    let with_mac: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--new-mac-address", "eth0:02:00:00:00:00:01"])
        .collect();

    let theirs = virtctl(&with_mac);
    assert_eq!(theirs.code, Some(1), "{}", theirs.describe());
    assert_eq!(
        theirs.last_error_line(),
        "newMacAddress parameter eth0:02:00:00:00:00:01 is invalid: exactly one ':' is expected. For example: 'interface0:address0'"
    );

    let ours = ours(&with_mac);
    assert_eq!(ours.code, Some(0), "{}", ours.describe());
    let mut manifest = parse_yaml(&ours.stdout);
    assert_eq!(
        manifest["spec"]["newMacAddresses"],
        json!({"eth0": "02:00:00:00:00:01"}),
        "{}",
        ours.stdout
    );

    // Apart from the MAC, the manifest is virtctl's for the same flags.
    let without_mac = virtctl(&base);
    assert_eq!(without_mac.code, Some(0), "{}", without_mac.describe());
    manifest["spec"]
        .as_object_mut()
        .unwrap()
        .shift_remove("newMacAddresses");
    let mut diffs = Vec::new();
    differences("", &manifest, &parse_yaml(&without_mac.stdout), &mut diffs);
    assert!(diffs.is_empty(), "{diffs:#?}");
}

/// Our YAML as kubectl reads it: every string stays the same string.
///
/// kubectl (sigs.k8s.io/yaml) reads plain `yes`/`on` as booleans, `0123` as octal, `0x1F` as hex,
/// `1e3` as a number and `~` as null, so those must be quoted. It reads colon-separated digits
/// (`52:54:00:12:34:56`) as strings, but YAML 1.1 parsers that implement base-60 numbers (PyYAML,
/// and so Ansible) do not, so those are quoted too; `02:00:…` (leading zero) is not base 60.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_yaml_reads_back_unchanged_through_kubectl() {
    let args = [
        "--source-name",
        "vm",
        "--name",
        "round-trip",
        "--target-name",
        "vm-copy",
        "-n",
        "golden",
        "--new-mac-address",
        "eth0:02:00:00:00:00:01",
        "--new-mac-address",
        "eth1:52:54:00:12:34:56",
        "--new-mac-address",
        "eth2:12:30",
        "--new-mac-address",
        "eth3:02-00-00-00-00-04",
        "--new-smbios-serial",
        "1:20:30",
        "--label-filter",
        "yes",
        "--label-filter",
        "0123",
        "--label-filter",
        "on",
        "--annotation-filter",
        "~",
        "--annotation-filter",
        "0x1F",
        "--template-label-filter",
        "1e3",
    ];
    let yaml = ours(&args);
    assert_eq!(yaml.code, Some(0), "{}", yaml.describe());
    let mut json_args = args.to_vec();
    json_args.extend(["-o", "json"]);
    let json_run = ours(&json_args);
    assert_eq!(json_run.code, Some(0), "{}", json_run.describe());
    let ours_json: Value = serde_json::from_str(&json_run.stdout).unwrap();
    assert_eq!(
        ours_json["spec"]["newMacAddresses"],
        json!({
            "eth0": "02:00:00:00:00:01",
            "eth1": "52:54:00:12:34:56",
            "eth2": "12:30",
            "eth3": "02-00-00-00-00-04",
        })
    );
    assert_eq!(ours_json["spec"]["newSMBiosSerial"], json!("1:20:30"));
    // The YAML and the JSON output are the same object.
    assert_eq!(parse_yaml(&yaml.stdout), ours_json);
    for line in [
        "    eth0: 02:00:00:00:00:01\n",
        "    eth1: \"52:54:00:12:34:56\"\n",
        "    eth2: \"12:30\"\n",
        "  newSMBiosSerial: \"1:20:30\"\n",
        "  - \"yes\"\n",
        "  - \"0123\"\n",
        "  - \"on\"\n",
        "  - \"~\"\n",
        "  - \"0x1F\"\n",
        "    - \"1e3\"\n",
    ] {
        assert!(
            yaml.stdout.contains(line),
            "{line:?} not in\n{}",
            yaml.stdout
        );
    }

    let env = testenv::TestEnv::shared().await.unwrap();
    let read_back = env
        .kubectl_output(
            &["create", "--dry-run=client", "-o", "json", "-f", "-"],
            Some(&yaml.stdout),
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    let kubectl_json: Value = serde_json::from_str(&read_back.stdout).unwrap();
    let mut diffs = Vec::new();
    differences("", &kubectl_json, &ours_json, &mut diffs);
    assert!(
        diffs.is_empty(),
        "kubectl read our YAML differently (\"ours\" = kubectl, \"virtctl\" = our -o json):\n{diffs:#?}\n--- YAML\n{}",
        yaml.stdout
    );
}

#[test]
fn count_three_lists_virtctls_manifests_with_numbered_names_and_targets() {
    let ours = ours(&[
        "--source-name",
        "golden",
        "--name",
        "web",
        "--target-name",
        "web-vm",
        "-n",
        "fleet",
        "--label-filter",
        "*",
        "--count",
        "3",
    ]);
    assert_eq!(ours.code, Some(0), "{}", ours.describe());
    let list = parse_yaml(&ours.stdout);
    assert_eq!(list["apiVersion"], "v1", "{}", ours.stdout);
    assert_eq!(list["kind"], "List", "{}", ours.stdout);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{}", ours.stdout);
    for (i, item) in items.iter().enumerate() {
        let n = i + 1;
        let (name, target) = (format!("web-{n}"), format!("web-vm-{n}"));
        assert_eq!(item["metadata"]["name"], json!(name));
        assert_eq!(item["spec"]["target"]["name"], json!(target));
        // Each item is what virtctl writes for that one clone.
        let theirs = virtctl(&[
            "--source-name",
            "golden",
            "--name",
            &name,
            "--target-name",
            &target,
            "-n",
            "fleet",
            "--label-filter",
            "*",
        ]);
        assert_eq!(theirs.code, Some(0), "{}", theirs.describe());
        let mut diffs = Vec::new();
        differences("", item, &parse_yaml(&theirs.stdout), &mut diffs);
        assert!(diffs.is_empty(), "item {n}: {diffs:#?}");
    }
}

#[test]
fn count_without_names_gives_distinct_default_names_and_webhook_named_targets() {
    let ours = ours(&["--source-name", "golden", "--count", "3"]);
    assert_eq!(ours.code, Some(0), "{}", ours.describe());
    let list = parse_yaml(&ours.stdout);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{}", ours.stdout);
    let mut names: Vec<&str> = items
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(names.iter().all(|n| is_random_name(n)), "{names:?}");
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 3, "{}", ours.stdout);
    for item in items {
        assert_eq!(item["spec"]["target"]["name"], "", "{}", ours.stdout);
    }
}

#[test]
fn our_own_flags_add_exactly_their_fields_and_annotations() {
    let base = [
        "--source-name",
        "golden",
        "--name",
        "c",
        "--target-name",
        "t",
        "-n",
        "ns",
    ];
    let patch = r#"{"op":"add","path":"/spec/runStrategy","value":"Always"}"#;
    let extra = [
        "--patch",
        patch,
        "--volume-name-policy",
        "PrefixTargetName",
        "--strategy",
        "DataVolume",
        "--source-namespace",
        "golden-images",
        "--target-run-strategy",
        "Always",
    ];
    let all: Vec<&str> = base.iter().chain(&extra).copied().collect();
    let ours = ours(&all);
    assert_eq!(ours.code, Some(0), "{}", ours.describe());

    let theirs = virtctl(&base);
    assert_eq!(theirs.code, Some(0), "{}", theirs.describe());
    let mut expected = parse_yaml(&theirs.stdout);
    expected["spec"]["patches"] = json!([patch]);
    expected["spec"]["volumeNamePolicy"] = json!("PrefixTargetName");
    expected["metadata"]["annotations"] = json!({
        "vmclone.dev/strategy": "DataVolume",
        "vmclone.dev/source-namespace": "golden-images",
        "vmclone.dev/target-run-strategy": "Always",
    });
    let mut diffs = Vec::new();
    differences(
        "",
        &parse_yaml(&ours.stdout),
        &sort_keys(expected),
        &mut diffs,
    );
    assert!(
        diffs.is_empty(),
        "(\"virtctl\" = virtctl's manifest plus the documented fields)\n{diffs:#?}\n{}",
        ours.stdout
    );
}

#[test]
fn an_invalid_value_of_our_own_flags_exits_2_naming_the_annotation_or_field() {
    let cases: [(&[&str], &str); 7] = [
        (
            &["--strategy", "Fast"],
            r#"annotation vmclone.dev/strategy must be one of Snapshot, DataVolume, Auto, not "Fast""#,
        ),
        (
            &["--target-run-strategy", "Sometimes"],
            r#"annotation vmclone.dev/target-run-strategy must be one of Halted, Always, RerunOnFailure, Manual, not "Sometimes""#,
        ),
        (
            &[
                "--strategy",
                "DataVolume",
                "--source-namespace",
                "Not_A_Namespace",
            ],
            "annotation vmclone.dev/source-namespace must be a namespace name",
        ),
        (
            &["--source-namespace", "images"],
            "annotation vmclone.dev/source-namespace requires vmclone.dev/strategy DataVolume or Auto",
        ),
        (
            &["--strategy", "DataVolume", "--source-type", "snapshot"],
            "vmclone.dev/strategy DataVolume requires a VirtualMachine source",
        ),
        (
            &["--volume-name-policy", "Shuffle"],
            r#"volumeNamePolicy must be RandomizeNames or PrefixTargetName, not "Shuffle""#,
        ),
        (
            &["--patch", "not json"],
            "patch is not valid JSON (not json)",
        ),
    ];
    let mut failures = String::new();
    for (extra, expected) in cases {
        for count in ["1", "3"] {
            let mut args = vec!["--source-name", "vm", "--name", "c", "--count", count];
            args.extend_from_slice(extra);
            let run = ours(&args);
            let first = if count == "1" { "c" } else { "c-1" };
            let prefix = format!("error: clone {first}: ");
            if run.code != Some(2)
                || !run.stdout.is_empty()
                || !run.stderr.starts_with(&prefix)
                || !run.stderr.contains(expected)
            {
                let _ = writeln!(
                    failures,
                    "=== {args:?}: expected exit 2, nothing printed and {prefix}…{expected}…\n{}",
                    run.describe()
                );
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}
