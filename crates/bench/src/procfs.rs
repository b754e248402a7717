//! What the bench reads from `/proc` (through the `procfs` crate): a process's CPU time and peak
//! memory, its listening ports, every process's CPU time, and the machine's CPU time, model,
//! memory and load.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, Result};
use procfs::process::{FDTarget, Process};
use procfs::{Current as _, CurrentSI as _};

/// CPU time of a process (`utime + stime` of `/proc/<pid>/stat`), in clock ticks.
pub fn process_cpu_ticks(pid: u32) -> Result<u64> {
    let stat = process(pid)?
        .stat()
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(stat.utime + stat.stime)
}

/// Peak resident set size (`VmHWM` of `/proc/<pid>/status`) in KiB.
pub fn process_peak_rss_kib(pid: u32) -> Result<u64> {
    process(pid)?
        .status()
        .with_context(|| format!("reading /proc/{pid}/status"))?
        .vmhwm
        .with_context(|| format!("no VmHWM in /proc/{pid}/status"))
}

/// The TCP ports process `pid` listens on: its socket inodes matched against the listening
/// sockets of `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn process_listening_ports(pid: u32) -> Result<Vec<u16>> {
    let inodes: BTreeSet<u64> = process(pid)?
        .fd()
        .with_context(|| format!("reading /proc/{pid}/fd"))?
        .flatten()
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect();
    let mut ports = Vec::new();
    for table in [procfs::net::tcp(), procfs::net::tcp6()] {
        ports.extend(
            table
                .context("reading /proc/net/tcp")?
                .into_iter()
                .filter(|s| s.state == procfs::net::TcpState::Listen && inodes.contains(&s.inode))
                .map(|s| s.local_address.port()),
        );
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

fn process(pid: u32) -> Result<Process> {
    let pid = i32::try_from(pid).with_context(|| format!("pid {pid} out of range"))?;
    Process::new(pid).with_context(|| format!("no process {pid}"))
}

/// Busy and total CPU time of the whole machine, in clock ticks (the `cpu` line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    pub busy: u64,
    pub total: u64,
}

pub fn machine_cpu() -> Result<MachineTicks> {
    let cpu = procfs::KernelStats::current()
        .context("reading /proc/stat")?
        .total;
    // Guest time is already part of user time.
    let idle = cpu.idle + cpu.iowait.unwrap_or(0);
    let total = cpu.user
        + cpu.nice
        + cpu.system
        + idle
        + cpu.irq.unwrap_or(0)
        + cpu.softirq.unwrap_or(0)
        + cpu.steal.unwrap_or(0);
    Ok(MachineTicks {
        busy: total - idle,
        total,
    })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`; 100 on Linux unless configured otherwise).
pub fn clock_ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

/// The first CPU's `model name` in `/proc/cpuinfo` (empty where there is none).
pub fn cpu_model() -> String {
    procfs::CpuInfo::current()
        .ok()
        .and_then(|info| info.model_name(0).map(str::to_owned))
        .unwrap_or_default()
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
pub fn memory_mib() -> u64 {
    procfs::Meminfo::current().map_or(0, |m| m.mem_total / (1024 * 1024))
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub fn loadavg() -> [f64; 3] {
    procfs::LoadAverage::current().map_or([0.0; 3], |l| {
        [f64::from(l.one), f64::from(l.five), f64::from(l.fifteen)]
    })
}

/// Every process's command name and CPU ticks (`utime + stime`), by pid.
pub fn all_processes() -> HashMap<u32, (String, u64)> {
    let Ok(processes) = procfs::process::all_processes() else {
        return HashMap::new();
    };
    processes
        .flatten()
        .filter_map(|p| {
            let stat = p.stat().ok()?;
            Some((
                u32::try_from(p.pid).ok()?,
                (stat.comm, stat.utime + stat.stime),
            ))
        })
        .collect()
}

/// Whether a command line is `program` itself (its first argument's file name, not a shell that
/// starts it) with an argument containing `needle`.
pub fn cmdline_matches(cmdline: &[String], program: &str, needle: &str) -> bool {
    let Some((first, rest)) = cmdline.split_first() else {
        return false;
    };
    std::path::Path::new(first)
        .file_name()
        .and_then(|n| n.to_str())
        == Some(program)
        && rest.iter().any(|a| a.contains(needle))
}

/// The pid of the running `program` whose command line mentions `needle` (for a testbed server:
/// the testbed's folder, which holds its kubeconfig); the lowest if there are several.
pub fn find_process(program: &str, needle: &str) -> Option<u32> {
    procfs::process::all_processes()
        .ok()?
        .flatten()
        .filter(|p| {
            p.cmdline()
                .is_ok_and(|cmdline| cmdline_matches(&cmdline, program, needle))
        })
        .filter_map(|p| u32::try_from(p.pid).ok())
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_pid() -> u32 {
        std::process::id()
    }

    #[test]
    fn our_own_cpu_time_grows_while_we_compute() {
        let before = process_cpu_ticks(own_pid()).unwrap();
        // Spin until the kernel has charged us at least two more ticks (20 ms at 100 Hz); bounded
        // so that a broken reader fails instead of hanging.
        let started = std::time::Instant::now();
        let mut x = 0_u64;
        let mut after = before;
        while after < before + 2 && started.elapsed() < std::time::Duration::from_secs(20) {
            for i in 0..1_000_000_u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            after = process_cpu_ticks(own_pid()).unwrap();
        }
        assert!(after >= before + 2, "{before} → {after}");
        // The machine was busy at least as long as we were.
        let machine = machine_cpu().unwrap();
        assert!(machine.busy >= after && machine.total > machine.busy);
        assert!(all_processes()[&own_pid()].1 >= after);
    }

    #[test]
    fn our_peak_rss_covers_a_buffer_we_touched() {
        let buffer = vec![1_u8; 32 * 1024 * 1024];
        std::hint::black_box(&buffer);
        assert!(process_peak_rss_kib(own_pid()).unwrap() >= 32 * 1024);
        assert!(process_peak_rss_kib(u32::MAX).is_err());
    }

    #[test]
    fn a_listening_socket_is_found_and_a_connected_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let ports = process_listening_ports(own_pid()).unwrap();
        assert!(ports.contains(&port), "{ports:?} lacks {port}");
        let client_port = client.local_addr().unwrap().port();
        assert!(!ports.contains(&client_port), "{ports:?} has {client_port}");
    }

    #[test]
    fn the_machine_is_described() {
        assert!(memory_mib() > 0);
        assert!(clock_ticks_per_second() > 0);
        let load = loadavg();
        assert!(load.iter().all(|l| *l >= 0.0) && load.iter().any(|l| *l > 0.0));
    }

    #[test]
    fn a_process_is_found_by_program_and_argument() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let server = args(&[
            "/root/.cache/vmclone/kubevirt-v1.7.0/virt-controller",
            "--kubeconfig=/tmp/vmclone-testenv-1-x/kubeconfig-virt-controller",
        ]);
        assert!(cmdline_matches(
            &server,
            "virt-controller",
            "/tmp/vmclone-testenv-1-x"
        ));
        assert!(!cmdline_matches(
            &server,
            "virt-controller",
            "/tmp/vmclone-testenv-2-y"
        ));
        assert!(!cmdline_matches(
            &server,
            "virt-api",
            "/tmp/vmclone-testenv-1-x"
        ));
        // The supervising shell mentions both but is not the program.
        let shell = args(&[
            "sh",
            "-c",
            "script",
            "/root/.cache/vmclone/kubevirt-v1.7.0/virt-controller",
            "--kubeconfig=/tmp/vmclone-testenv-1-x/kubeconfig-virt-controller",
        ]);
        assert!(!cmdline_matches(
            &shell,
            "virt-controller",
            "/tmp/vmclone-testenv-1-x"
        ));
        assert!(!cmdline_matches(&[], "virt-controller", "x"));

        // A child of ours, told apart by an argument no other process has.
        let needle = format!("0.{:09}", own_pid());
        let mut child = std::process::Command::new("sleep")
            .args(["30", &needle])
            .spawn()
            .unwrap();
        // The kernel lets the parent go on before it has laid out the new program's arguments:
        // wait until they are there.
        let process = Process::new(i32::try_from(child.id()).unwrap()).unwrap();
        let started = std::time::Instant::now();
        while process.cmdline().unwrap().is_empty()
            && started.elapsed() < std::time::Duration::from_secs(5)
        {
            std::thread::yield_now();
        }
        let found = find_process("sleep", &needle);
        let not_found = find_process("sh", &needle);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, Some(child.id()));
        assert_eq!(not_found, None);
    }
}
