//! What the bench reads from `/proc`: a process's CPU time and peak memory, its listening
//! ports, the machine's CPU time, model, memory and load.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// CPU time of a process in clock ticks, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
}

impl CpuTicks {
    pub fn total(self) -> u64 {
        self.user + self.system
    }
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may itself contain spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_stat(text: &str) -> Result<CpuTicks> {
    let close = text
        .rfind(')')
        .context("no ')' after the command name in /proc/<pid>/stat")?;
    // After the name: field 3 (state) is index 0, so field n is index n - 3.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    if fields.len() < 13 {
        bail!(
            "/proc/<pid>/stat has only {} fields after the name",
            fields.len()
        );
    }
    let number = |index: usize| -> Result<u64> {
        fields[index]
            .parse()
            .with_context(|| format!("field {} of /proc/<pid>/stat", index + 3))
    };
    Ok(CpuTicks {
        user: number(11)?,
        system: number(12)?,
    })
}

/// A `kB` line of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in KiB.
pub fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != field {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub fn process_cpu(pid: u32) -> Result<CpuTicks> {
    let path = format!("/proc/{pid}/stat");
    parse_stat(&std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?)
}

/// Peak resident set size (`VmHWM`) in KiB.
pub fn process_peak_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_kib(&text, "VmHWM").with_context(|| format!("no VmHWM in {path}"))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless configured otherwise).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// Ports of the listening TCP sockets in a `/proc/net/tcp` or `/proc/net/tcp6` table whose
/// inode is in `inodes`.
pub fn listening_ports(table: &str, inodes: &BTreeSet<u64>) -> Vec<u16> {
    let mut ports = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        if fields.len() < 10 || fields[3] != "0A" {
            continue;
        }
        let Ok(inode) = fields[9].parse::<u64>() else {
            continue;
        };
        if !inodes.contains(&inode) {
            continue;
        }
        let Some((_, port)) = fields[1].rsplit_once(':') else {
            continue;
        };
        if let Ok(port) = u16::from_str_radix(port, 16) {
            ports.push(port);
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The inodes of the sockets a process has open (`/proc/<pid>/fd/* -> socket:[inode]`).
pub fn socket_inodes(pid: u32) -> Result<BTreeSet<u64>> {
    let dir = format!("/proc/{pid}/fd");
    let mut inodes = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(inode) = parse_socket_link(&target.to_string_lossy()) {
            inodes.insert(inode);
        }
    }
    Ok(inodes)
}

pub fn parse_socket_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The TCP ports process `pid` listens on.
pub fn process_listening_ports(pid: u32) -> Result<Vec<u16>> {
    let inodes = socket_inodes(pid)?;
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            ports.extend(listening_ports(&text, &inodes));
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// Busy and total CPU time of the whole machine, in clock ticks (the `cpu` line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    pub busy: u64,
    pub total: u64,
}

pub fn parse_machine_stat(text: &str) -> Result<MachineTicks> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no 'cpu' line in /proc/stat")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<u64>())
        .collect::<Result<_, _>>()
        .context("parsing the 'cpu' line of /proc/stat")?;
    if values.len() < 4 {
        bail!("the 'cpu' line of /proc/stat has {} values", values.len());
    }
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // part of user time.
    let total: u64 = values.iter().take(8).sum();
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Ok(MachineTicks {
        busy: total - idle,
        total,
    })
}

pub fn machine_cpu() -> Result<MachineTicks> {
    parse_machine_stat(&std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?)
}

/// The first `model name` of `/proc/cpuinfo`.
pub fn parse_cpu_model(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// `MemTotal` of `/proc/meminfo`, in KiB.
pub fn parse_mem_total_kib(text: &str) -> Option<u64> {
    parse_status_kib(text, "MemTotal")
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut values = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([values.next()??, values.next()??, values.next()??])
}

pub fn loadavg() -> [f64; 3] {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg(&t))
        .unwrap_or_default()
}

/// A pid from a pid file (as testenv's supervisor writes them).
pub fn read_pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The command name (field 2, without its parentheses) of a `/proc/<pid>/stat` line.
pub fn parse_stat_comm(text: &str) -> Option<&str> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    (open < close).then(|| &text[open + 1..close])
}

/// Every process's command name and CPU ticks (`utime + stime`), by pid.
pub fn all_processes() -> std::collections::HashMap<u32, (String, u64)> {
    let mut out = std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let (Some(comm), Ok(ticks)) = (parse_stat_comm(&text), parse_stat(&text)) {
            out.insert(pid, (comm.to_owned(), ticks.total()));
        }
    }
    out
}

/// Whether a `/proc/<pid>/cmdline` (arguments separated by NUL bytes) is `program` itself (its
/// first argument's file name, not a shell that starts it) with an argument containing `needle`.
pub fn cmdline_matches(cmdline: &[u8], program: &str, needle: &str) -> bool {
    let mut args = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy);
    let Some(first) = args.next() else {
        return false;
    };
    Path::new(first.as_ref())
        .file_name()
        .and_then(|n| n.to_str())
        == Some(program)
        && args.any(|a| a.contains(needle))
}

/// The pid of the running `program` whose command line mentions `needle` (for a testbed server:
/// the testbed's folder, which holds its kubeconfig), found by reading `/proc/*/cmdline`.
pub fn find_process(program: &str, needle: &str) -> Option<u32> {
    let mut found = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline_matches(&cmdline, program, needle).then_some(pid)
        })
        .collect::<Vec<_>>();
    found.sort_unstable();
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let text = "4242 (clone (ctl) x) S 1 4242 4242 0 -1 4194304 1234 0 0 0 517 83 0 0 20 0 9 0 100 200000000 3000 18446744073709551615";
        assert_eq!(
            parse_stat(text).unwrap(),
            CpuTicks {
                user: 517,
                system: 83
            }
        );
        assert_eq!(parse_stat(text).unwrap().total(), 600);
        assert_eq!(parse_stat_comm(text), Some("clone (ctl) x"));
        assert_eq!(parse_stat_comm("no parenthesis"), None);
        assert!(parse_stat("4242 (short) S 1 2").is_err());
        assert!(parse_stat("no parenthesis").is_err());
    }

    #[test]
    fn status_kib_fields() {
        let text = "Name:\tclone-controller\nVmPeak:\t  200000 kB\nVmHWM:\t   31234 kB\nVmRSS:\t   30000 kB\n";
        assert_eq!(parse_status_kib(text, "VmHWM"), Some(31234));
        assert_eq!(parse_status_kib(text, "VmRSS"), Some(30000));
        assert_eq!(parse_status_kib(text, "VmSwap"), None);
    }

    #[test]
    fn listening_ports_of_own_sockets() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:A0C3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:A0C4 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 100 0 0 10 0\n   2: 0100007F:A0C5 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 30 10 -1\n   3: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0000000000000000 100 0 0 10 0\n";
        let inodes: BTreeSet<u64> = [111, 333, 444].into();
        // 333 is an established connection, 222 is someone else's socket.
        assert_eq!(listening_ports(table, &inodes), vec![0x1F90, 0xA0C3]);
        assert_eq!(parse_socket_link("socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link("/dev/null"), None);
    }

    #[test]
    fn machine_cpu_line() {
        let text = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 50 2 25 400 10 0 1 1 0 0\n";
        assert_eq!(
            parse_machine_stat(text).unwrap(),
            MachineTicks {
                busy: 161,
                total: 981
            }
        );
    }

    #[test]
    fn a_process_is_found_by_program_and_argument() {
        let server = b"/root/.cache/vmclone/kubevirt-v1.7.0/virt-controller\0--kubeconfig=/tmp/vmclone-testenv-1-x/kubeconfig-virt-controller\0--port=1\0";
        assert!(cmdline_matches(
            server,
            "virt-controller",
            "/tmp/vmclone-testenv-1-x"
        ));
        assert!(!cmdline_matches(
            server,
            "virt-controller",
            "/tmp/vmclone-testenv-2-y"
        ));
        assert!(!cmdline_matches(
            server,
            "virt-api",
            "/tmp/vmclone-testenv-1-x"
        ));
        // The supervising shell mentions both but is not the program.
        let shell = b"sh\0-c\0script\0sh\0/tmp/vmclone-testenv-1-x/pids/virt-controller\0/root/.cache/vmclone/kubevirt-v1.7.0/virt-controller\0--kubeconfig=/tmp/vmclone-testenv-1-x/kubeconfig-virt-controller\0";
        assert!(!cmdline_matches(
            shell,
            "virt-controller",
            "/tmp/vmclone-testenv-1-x"
        ));
        assert!(!cmdline_matches(b"", "virt-controller", "x"));
    }

    #[test]
    fn machine_facts() {
        assert_eq!(
            parse_cpu_model("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"),
            Some("AMD EPYC".to_owned())
        );
        assert_eq!(
            parse_mem_total_kib("MemTotal:       24684000 kB\nMemFree: 1 kB\n"),
            Some(24_684_000)
        );
        assert_eq!(
            parse_loadavg("0.48 1.02 1.09 2/345 6789\n"),
            Some([0.48, 1.02, 1.09])
        );
        assert_eq!(parse_loadavg("garbage"), None);
    }
}
