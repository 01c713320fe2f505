//! One raw sample of what `vmrun top` shows: every read of `/proc` and `/sys` goes through the
//! host root (`VMRUN_SYSROOT`), so the sampling runs unchanged on a fake tree in tests. What
//! cannot be read is named in `unreadable` instead of failing the sample: a user who is not root
//! sees what the kernel lets them see.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::host::Sysroot;
use crate::run::threads::{self, SchedCounters};

/// A table of per-CPU counters as `/proc/interrupts` and `/proc/softirqs` print it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuTable {
    pub rows: Vec<CounterRow>,
}

/// One row: its source (`142`, `LOC`, `NET_RX`), the name that row gives it (`nvme0q3`,
/// `Local timer interrupts`), and its count on each CPU, by CPU number.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CounterRow {
    pub source: String,
    pub name: String,
    pub per_cpu: BTreeMap<usize, u64>,
}

impl CpuTable {
    /// Parses either file: a header of `CPUn` columns (offline CPUs are left out, so the
    /// columns are numbered by the header), then `SOURCE: counts... [description]`. Rows with
    /// fewer counts than CPUs (`ERR`, `MIS`) are system-wide totals and are skipped.
    pub fn parse(text: &str) -> Option<CpuTable> {
        let mut lines = text.lines();
        let cpus: Vec<usize> = lines
            .next()?
            .split_whitespace()
            .map(|column| column.strip_prefix("CPU")?.parse().ok())
            .collect::<Option<_>>()?;
        let mut rows = Vec::new();
        for line in lines {
            let Some((source, rest)) = line.split_once(':') else {
                continue;
            };
            let mut tokens = rest.split_whitespace().peekable();
            let mut per_cpu = BTreeMap::new();
            for &cpu in &cpus {
                match tokens.peek().and_then(|t| t.parse::<u64>().ok()) {
                    Some(count) => {
                        per_cpu.insert(cpu, count);
                        tokens.next();
                    }
                    None => break,
                }
            }
            if per_cpu.len() != cpus.len() {
                continue;
            }
            let source = source.trim().to_string();
            let description: Vec<&str> = tokens.collect();
            let name = if source.chars().all(|c| c.is_ascii_digit()) {
                device_name(&description)
            } else if description.is_empty() {
                source.clone()
            } else {
                description.join(" ")
            };
            rows.push(CounterRow {
                source,
                name,
                per_cpu,
            });
        }
        Some(CpuTable { rows })
    }
}

/// The handlers of a numbered IRQ: what follows the chip, the hardware IRQ and its trigger
/// (`IR-PCI-MSI 524288-edge nvme0q3`, `IO-APIC 2-edge timer`, `PCI-MSIX-0000:01:00.0 0-edge
/// vfio-msix[0](0000:01:00.0)`).
fn device_name(description: &[&str]) -> String {
    let trigger = description.iter().rposition(|token| {
        ["edge", "level", "fasteoi", "simple"]
            .iter()
            .any(|kind| token.ends_with(kind))
    });
    match trigger {
        Some(at) if at + 1 < description.len() => description[at + 1..].join(" "),
        _ => description
            .last()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// A CPU's frequency (kHz) and governor from cpufreq.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuFreq {
    pub khz: Option<u64>,
    pub max_khz: Option<u64>,
    pub governor: Option<String>,
}

/// One thread of the host, from `/proc/PID/task/TID/stat`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostThread {
    pub pid: u32,
    pub tid: i32,
    /// The process's name (`comm` of its main thread).
    pub process: String,
    pub thread: String,
    pub state: char,
    /// The CPU it last ran on (field 39).
    pub processor: usize,
    /// User + system time in clock ticks (fields 14 and 15).
    pub ticks: u64,
}

/// One QEMU thread as `top` needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct VmThread {
    pub tid: i32,
    pub name: String,
    pub vcpu: Option<usize>,
    pub affinity: String,
    pub policy: String,
    pub priority: u32,
    pub processor: usize,
    pub counters: Option<SchedCounters>,
}

/// What a running VM is, for the probe: from its state file.
#[derive(Clone, Debug, PartialEq)]
pub struct VmTarget {
    pub name: String,
    pub pid: u32,
    pub accel: String,
    pub ctl_socket: PathBuf,
}

/// KVM's statistics of a VM, summed over its vCPUs (`query-stats`), or why there are none.
pub type KvmStats = Result<BTreeMap<String, u64>, String>;

#[derive(Clone, Debug, PartialEq)]
pub struct RawVm {
    pub target: VmTarget,
    pub threads: Vec<VmThread>,
    pub rss_kib: Option<u64>,
    pub hugetlb_kib: Option<u64>,
    pub guest_ram_bytes: Option<u64>,
    pub kvm: KvmStats,
}

/// Everything one sample read.
#[derive(Clone, Debug, PartialEq)]
pub struct Raw {
    pub unix_ms: u64,
    pub interrupts: Option<CpuTable>,
    pub softirqs: Option<CpuTable>,
    pub cpus: BTreeMap<usize, CpuFreq>,
    pub threads: Vec<HostThread>,
    pub vms: Vec<RawVm>,
    pub unreadable: BTreeSet<String>,
}

/// Reads samples through a host root. QMP is asked only when `qmp` is set (the tests of the
/// sampling have no QEMU).
pub struct Probe {
    pub root: Sysroot,
    pub qmp: bool,
    /// Guest RAM does not change while a VM runs: asked once per VM.
    guest_ram: BTreeMap<u32, Option<u64>>,
}

impl Probe {
    pub fn new(root: Sysroot, qmp: bool) -> Self {
        Probe {
            root,
            qmp,
            guest_ram: BTreeMap::new(),
        }
    }

    fn read(&self, absolute: &str, unreadable: &mut BTreeSet<String>) -> Option<String> {
        match std::fs::read_to_string(self.root.path(absolute)) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                unreadable.insert(format!("{absolute}: {error}"));
                None
            }
        }
    }

    pub fn sample(&mut self, targets: &[VmTarget], unix_ms: u64) -> Raw {
        let mut unreadable = BTreeSet::new();
        let interrupts = self
            .read("/proc/interrupts", &mut unreadable)
            .and_then(|text| CpuTable::parse(&text));
        let softirqs = self
            .read("/proc/softirqs", &mut unreadable)
            .and_then(|text| CpuTable::parse(&text));
        if interrupts.is_none() {
            unreadable.insert("/proc/interrupts: missing or not in the expected format".into());
        }
        if softirqs.is_none() {
            unreadable.insert("/proc/softirqs: missing or not in the expected format".into());
        }
        let cpus = self.cpufreq(&mut unreadable);
        let threads = self.host_threads(&mut unreadable);
        let vms = targets
            .iter()
            .map(|target| self.vm(target, &mut unreadable))
            .collect();
        Raw {
            unix_ms,
            interrupts,
            softirqs,
            cpus,
            threads,
            vms,
            unreadable,
        }
    }

    fn cpufreq(&self, unreadable: &mut BTreeSet<String>) -> BTreeMap<usize, CpuFreq> {
        let online = crate::host::online_cpus(&self.root)
            .map(|set| set.iter().collect::<Vec<_>>())
            .unwrap_or_default();
        let mut cpus = BTreeMap::new();
        let mut any = false;
        for cpu in online {
            let file = |name: &str| format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/{name}");
            let number = |text: Option<String>| text.and_then(|t| t.trim().parse().ok());
            let freq = CpuFreq {
                khz: number(self.read(&file("scaling_cur_freq"), unreadable)),
                max_khz: number(self.read(&file("cpuinfo_max_freq"), unreadable)),
                governor: self
                    .read(&file("scaling_governor"), unreadable)
                    .map(|t| t.trim().to_string()),
            };
            any |= freq.khz.is_some();
            cpus.insert(cpu, freq);
        }
        if !any {
            unreadable.insert(
                "CPU frequencies: no cpufreq in /sys/devices/system/cpu (a VM or a kernel without a cpufreq driver)"
                    .into(),
            );
        }
        cpus
    }

    /// Every thread of the host: where it last ran, whether it is runnable and how much CPU
    /// time it has had; the competitors of a vCPU are found among them.
    fn host_threads(&self, unreadable: &mut BTreeSet<String>) -> Vec<HostThread> {
        let Ok(entries) = std::fs::read_dir(self.root.path("/proc")) else {
            unreadable.insert("/proc: cannot list processes".into());
            return Vec::new();
        };
        let mut pids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        let mut threads = Vec::new();
        for pid in pids {
            let task_dir = self.root.path(&format!("/proc/{pid}/task"));
            let Ok(tasks) = std::fs::read_dir(&task_dir) else {
                continue;
            };
            let process = std::fs::read_to_string(self.root.path(&format!("/proc/{pid}/comm")))
                .map(|t| t.trim_end().to_string())
                .unwrap_or_default();
            let mut tids: Vec<i32> = tasks
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            tids.sort_unstable();
            for tid in tids {
                // Threads end between the listing and the read: they are simply gone.
                let Ok(stat) = std::fs::read_to_string(task_dir.join(format!("{tid}/stat"))) else {
                    continue;
                };
                if let Some(thread) = host_thread(pid, tid, &process, &stat) {
                    threads.push(thread);
                }
            }
        }
        threads
    }

    fn vm(&mut self, target: &VmTarget, unreadable: &mut BTreeSet<String>) -> RawVm {
        let pid = target.pid;
        let threads = self.vm_threads(pid, unreadable);
        let status = self
            .read(&format!("/proc/{pid}/status"), unreadable)
            .unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        };
        let (rss_kib, hugetlb_kib) = (kib("VmRSS:"), kib("HugetlbPages:"));
        let (guest_ram_bytes, kvm) = if self.qmp {
            self.ask_qemu(target, unreadable)
        } else {
            (None, Err("QMP not asked".into()))
        };
        RawVm {
            target: target.clone(),
            threads,
            rss_kib,
            hugetlb_kib,
            guest_ram_bytes,
            kvm,
        }
    }

    fn vm_threads(&self, pid: u32, unreadable: &mut BTreeSet<String>) -> Vec<VmThread> {
        let task_dir = self.root.path(&format!("/proc/{pid}/task"));
        let entries = match std::fs::read_dir(&task_dir) {
            Ok(entries) => entries,
            Err(error) => {
                unreadable.insert(format!("/proc/{pid}/task: {error}"));
                return Vec::new();
            }
        };
        let mut tids: Vec<i32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_unstable();
        let mut threads = Vec::new();
        for tid in tids {
            let dir = task_dir.join(tid.to_string());
            if let Some(thread) = vm_thread(&dir, tid) {
                if thread.counters.is_none() {
                    unreadable.insert(format!(
                        "/proc/{pid}/task/{tid}/schedstat: unreadable (a kernel without CONFIG_SCHED_INFO?)"
                    ));
                }
                threads.push(thread);
            }
        }
        threads
    }

    /// One short QMP connection per sample on the VM's second monitor: holding it would lock
    /// out `vmrun status` and `vmrun qmp`, which use the same monitor.
    fn ask_qemu(
        &mut self,
        target: &VmTarget,
        unreadable: &mut BTreeSet<String>,
    ) -> (Option<u64>, KvmStats) {
        let mut qmp = match crate::qmp::Qmp::connect(
            &target.ctl_socket,
            std::time::Duration::from_millis(500),
        ) {
            Ok(qmp) => qmp,
            Err(error) => {
                unreadable.insert(format!("QMP of `{}`: {error}", target.name));
                return (None, Err("QMP unreachable".into()));
            }
        };
        let ram = match self.guest_ram.get(&target.pid) {
            Some(known) => *known,
            None => {
                let ram = qmp
                    .execute("query-memory-size-summary", None)
                    .ok()
                    .and_then(|v| v["base-memory"].as_u64());
                self.guest_ram.insert(target.pid, ram);
                ram
            }
        };
        let kvm = match qmp.execute(
            "query-stats",
            Some(serde_json::json!({"target": "vcpu", "providers": [{"provider": "kvm"}]})),
        ) {
            Ok(reply) => kvm_sums(&reply).ok_or_else(|| {
                format!(
                    "QEMU has no KVM statistics for this VM (accelerator {})",
                    target.accel
                )
            }),
            Err(crate::qmp::QmpError::Command { class, .. }) if class == "CommandNotFound" => {
                Err("this QEMU has no query-stats (needs QEMU 7.1 or newer)".into())
            }
            Err(error) => Err(error.to_string()),
        };
        (ram, kvm)
    }
}

/// The integer statistics of every vCPU of a `query-stats` reply, summed by name; None when
/// no provider answered (TCG).
pub fn kvm_sums(reply: &Value) -> Option<BTreeMap<String, u64>> {
    let mut sums = BTreeMap::new();
    for entry in reply.as_array()? {
        for stat in entry["stats"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (stat["name"].as_str(), stat["value"].as_u64()) {
                *sums.entry(name.to_string()).or_insert(0) += value;
            }
        }
    }
    (!sums.is_empty()).then_some(sums)
}

fn host_thread(pid: u32, tid: i32, process: &str, stat: &str) -> Option<HostThread> {
    let (name, fields) = threads::split_stat(stat)?;
    let number = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some(HostThread {
        pid,
        tid,
        process: process.to_string(),
        thread: name.to_string(),
        state: fields.first()?.chars().next()?,
        processor: number(39)? as usize,
        ticks: number(14)? + number(15)?,
    })
}

fn vm_thread(dir: &Path, tid: i32) -> Option<VmThread> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let (name, fields) = threads::split_stat(&stat)?;
    let number = |field: usize| fields.get(field - 3)?.parse::<u32>().ok();
    let affinity = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let info = threads::ThreadInfo {
        tid,
        name: name.to_string(),
        affinity,
        policy: threads::policy_name(number(41)?),
        priority: number(40)?,
    };
    Some(VmThread {
        tid,
        vcpu: info.vcpu_index(),
        name: info.name,
        affinity: info.affinity,
        policy: info.policy,
        priority: info.priority,
        processor: number(39)? as usize,
        counters: threads::sched_counters_in(dir),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERRUPTS: &str = "           CPU0       CPU1       CPU2       CPU3
  0:         22          0          0          0   IO-APIC   2-edge      timer
 16:          0          0          0       4000   IO-APIC  16-fasteoi   ehci_hcd:usb1, i801_smbus
142:          0          0          0     100000   IR-PCI-MSI 524288-edge      nvme0q3
LOC:       1000       2000       3000       4000   Local timer interrupts
ERR:          0
MIS:          0
";

    #[test]
    fn interrupts_are_read_per_cpu_with_the_names_the_kernel_gives_them() {
        let table = CpuTable::parse(INTERRUPTS).unwrap();
        let names: Vec<(&str, &str)> = table
            .rows
            .iter()
            .map(|r| (r.source.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("0", "timer"),
                ("16", "ehci_hcd:usb1, i801_smbus"),
                ("142", "nvme0q3"),
                ("LOC", "Local timer interrupts")
            ]
        );
        assert_eq!(table.rows[2].per_cpu[&3], 100000);
        assert_eq!(table.rows[3].per_cpu[&1], 2000);
    }

    #[test]
    fn offline_cpus_keep_the_numbers_of_the_header() {
        let table =
            CpuTable::parse("        CPU0   CPU2\n     NET_RX:   5   7\n      TIMER:   1   2\n")
                .unwrap();
        assert_eq!(table.rows[0].name, "NET_RX");
        assert_eq!(table.rows[0].per_cpu, BTreeMap::from([(0, 5), (2, 7)]));
        assert!(CpuTable::parse("garbage\n").is_none());
    }

    #[test]
    fn query_stats_sums_every_vcpu_and_tcg_gives_none() {
        let reply = serde_json::json!([
            {"provider": "kvm", "qom-path": "/machine/unattached/device[0]",
             "stats": [{"name": "exits", "value": 10}, {"name": "halt_poll_fail_hist", "value": [1, 2]}]},
            {"provider": "kvm", "qom-path": "/machine/unattached/device[1]",
             "stats": [{"name": "exits", "value": 5}, {"name": "halt_successful_poll", "value": 3}]}
        ]);
        let sums = kvm_sums(&reply).unwrap();
        assert_eq!(sums["exits"], 15);
        assert_eq!(sums["halt_successful_poll"], 3);
        assert!(!sums.contains_key("halt_poll_fail_hist"));
        assert_eq!(kvm_sums(&serde_json::json!([])), None);
    }
}
