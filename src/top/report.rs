//! Two raw samples → one interval's report: rates per second, each vCPU's competitors, and the
//! findings in words. Pure, so every rule is tested on made-up samples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::probe::{CpuTable, HostThread, Raw, RawVm, VmThread};
use crate::run::latency;

/// One interval, as `--json` prints it (one object per line).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The end of the interval, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub interval_s: f64,
    pub vms: Vec<VmReport>,
    /// What this user cannot read, one line each (`/proc/interrupts: Permission denied`...).
    pub unreadable: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VmReport {
    pub name: String,
    pub pid: u32,
    pub accel: String,
    pub vcpus: Vec<VcpuReport>,
    /// QEMU's threads that are not vCPUs, busiest first.
    pub other_threads: Vec<ThreadUse>,
    pub memory: Memory,
    pub kvm: Kvm,
    pub findings: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VcpuReport {
    pub index: usize,
    pub thread_id: i32,
    /// The host CPU it ran on last (its only CPU when pinned to one).
    pub cpu: usize,
    pub affinity: String,
    pub policy: String,
    pub priority: u32,
    /// Time runnable but waiting for its CPU, in milliseconds per second.
    pub run_delay_ms_per_s: Option<f64>,
    pub involuntary_switches_per_s: Option<f64>,
    /// Share of one CPU the thread ran, in percent.
    pub cpu_percent: Option<f64>,
    pub cpu_mhz: Option<f64>,
    pub cpu_max_mhz: Option<f64>,
    pub governor: Option<String>,
    pub interrupts_per_s: f64,
    /// Each source that fired on `cpu` in the interval, busiest first.
    pub interrupts: Vec<SourceRate>,
    pub softirqs_per_s: f64,
    pub softirqs: Vec<SourceRate>,
    /// Other threads that ran on `cpu` in the interval or wait to, busiest first.
    pub competitors: Vec<Competitor>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceRate {
    /// `142`, `LOC`, `NET_RX`: the row's label.
    pub source: String,
    /// The name the kernel gives it (`nvme0q3`, `Local timer interrupts`).
    pub name: String,
    pub per_s: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Competitor {
    pub pid: u32,
    pub tid: i32,
    pub process: String,
    pub thread: String,
    pub cpu_percent: f64,
    pub runnable: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadUse {
    pub thread_id: i32,
    pub name: String,
    pub cpu: usize,
    pub affinity: String,
    pub cpu_percent: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub guest_mib: Option<u64>,
    pub rss_mib: Option<u64>,
    pub hugepages_mib: Option<u64>,
}

/// KVM's counters from `query-stats`, per second; `unavailable` says why there are none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Kvm {
    pub unavailable: Option<String>,
    pub exits_per_s: Option<f64>,
    pub halt_exits_per_s: Option<f64>,
    pub halt_polls_per_s: Option<f64>,
    /// Successful polls among attempted ones, in percent.
    pub halt_poll_success_percent: Option<f64>,
}

/// What counts as worth saying (documented in docs/low-latency.md).
pub const DELAY_FINDING_MS: f64 = 10.0;
pub const IRQ_FINDING_PER_S: f64 = 100.0;
pub const SOFTIRQ_FINDING_PER_S: f64 = 100.0;
/// Softirqs that follow devices; TIMER, SCHED and RCU run on every busy CPU.
const DEVICE_SOFTIRQS: &[&str] = &["HI", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET"];
const SLOW_CPU_SHARE: f64 = 0.6;
const EMULATOR_FINDING_PERCENT: f64 = 5.0;

/// Clock ticks per second (`utime`/`stime` in `stat` count them); 100 on every Linux.
fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

fn rates(earlier: &CpuTable, later: &CpuTable, cpu: usize, seconds: f64) -> Vec<SourceRate> {
    let before: BTreeMap<&str, u64> = earlier
        .rows
        .iter()
        .filter_map(|r| Some((r.source.as_str(), *r.per_cpu.get(&cpu)?)))
        .collect();
    let mut rates: Vec<SourceRate> = later
        .rows
        .iter()
        .filter_map(|row| {
            let now = *row.per_cpu.get(&cpu)?;
            let then = *before.get(row.source.as_str())?;
            let fired = now.checked_sub(then)?;
            (fired > 0).then(|| SourceRate {
                source: row.source.clone(),
                name: row.name.clone(),
                per_s: fired as f64 / seconds,
            })
        })
        .collect();
    rates.sort_by(|a, b| b.per_s.total_cmp(&a.per_s).then(a.source.cmp(&b.source)));
    rates
}

/// The report of the interval between two samples of the same VMs.
pub fn compute(earlier: &Raw, later: &Raw) -> Report {
    let seconds = later.unix_ms.saturating_sub(earlier.unix_ms) as f64 / 1000.0;
    let seconds = if seconds > 0.0 { seconds } else { 1.0 };
    let previous_ticks: BTreeMap<i32, u64> =
        earlier.threads.iter().map(|t| (t.tid, t.ticks)).collect();
    let vms = later
        .vms
        .iter()
        .map(|vm| {
            let before = earlier.vms.iter().find(|v| v.target.pid == vm.target.pid);
            vm_report(earlier, later, before, vm, seconds, &previous_ticks)
        })
        .collect();
    Report {
        unix_ms: later.unix_ms,
        interval_s: seconds,
        vms,
        unreadable: later.unreadable.iter().cloned().collect(),
    }
}

fn vm_report(
    earlier: &Raw,
    later: &Raw,
    before: Option<&RawVm>,
    vm: &RawVm,
    seconds: f64,
    previous_ticks: &BTreeMap<i32, u64>,
) -> VmReport {
    let thread_before =
        |tid: i32| -> Option<&VmThread> { before?.threads.iter().find(|t| t.tid == tid) };
    let run_percent = |thread: &VmThread| -> Option<f64> {
        let (then, now) = (thread_before(thread.tid)?.counters?, thread.counters?);
        Some(now.run_ns.saturating_sub(then.run_ns) as f64 / 1e7 / seconds)
    };
    let qemu_tids: Vec<i32> = vm.threads.iter().map(|t| t.tid).collect();
    let mut vcpus: Vec<VcpuReport> = vm
        .threads
        .iter()
        .filter_map(|thread| {
            let index = thread.vcpu?;
            let sample = |unix_ms, counters: Option<_>| latency::Sample {
                unix_ms,
                vcpus: counters.map(|c| (index, c)).into_iter().collect(),
            };
            let then = thread_before(thread.tid).and_then(|t| t.counters);
            let delay = latency::delay_ms_per_second(
                &sample(earlier.unix_ms, then),
                &sample(later.unix_ms, thread.counters),
                index,
            );
            let switches = then.zip(thread.counters).map(|(a, b)| {
                b.involuntary_switches
                    .saturating_sub(a.involuntary_switches) as f64
                    / seconds
            });
            let cpu = thread.processor;
            let freq = later.cpus.get(&cpu).cloned().unwrap_or_default();
            let table_rates =
                |pick: fn(&Raw) -> Option<&CpuTable>| match (pick(earlier), pick(later)) {
                    (Some(a), Some(b)) => rates(a, b, cpu, seconds),
                    _ => Vec::new(),
                };
            let interrupts = table_rates(|raw| raw.interrupts.as_ref());
            let softirqs = table_rates(|raw| raw.softirqs.as_ref());
            Some(VcpuReport {
                index,
                thread_id: thread.tid,
                cpu,
                affinity: thread.affinity.clone(),
                policy: thread.policy.clone(),
                priority: thread.priority,
                run_delay_ms_per_s: delay,
                involuntary_switches_per_s: switches,
                cpu_percent: run_percent(thread),
                cpu_mhz: freq.khz.map(|k| k as f64 / 1000.0),
                cpu_max_mhz: freq.max_khz.map(|k| k as f64 / 1000.0),
                governor: freq.governor,
                interrupts_per_s: interrupts.iter().map(|r| r.per_s).sum(),
                interrupts,
                softirqs_per_s: softirqs.iter().map(|r| r.per_s).sum(),
                softirqs,
                competitors: competitors(&later.threads, previous_ticks, cpu, thread.tid, seconds),
            })
        })
        .collect();
    vcpus.sort_by_key(|v| v.index);
    let mut other_threads: Vec<ThreadUse> = vm
        .threads
        .iter()
        .filter(|t| t.vcpu.is_none())
        .map(|t| ThreadUse {
            thread_id: t.tid,
            name: t.name.clone(),
            cpu: t.processor,
            affinity: t.affinity.clone(),
            cpu_percent: run_percent(t),
        })
        .collect();
    other_threads.sort_by(|a, b| {
        b.cpu_percent
            .unwrap_or(0.0)
            .total_cmp(&a.cpu_percent.unwrap_or(0.0))
            .then(a.thread_id.cmp(&b.thread_id))
    });
    let mib = |kib: Option<u64>| kib.map(|k| k / 1024);
    let memory = Memory {
        guest_mib: vm.guest_ram_bytes.map(|b| b >> 20),
        rss_mib: mib(vm.rss_kib),
        hugepages_mib: mib(vm.hugetlb_kib),
    };
    let kvm = kvm_rates(before.map(|b| &b.kvm), &vm.kvm, seconds);
    let mut report = VmReport {
        name: vm.target.name.clone(),
        pid: vm.target.pid,
        accel: vm.target.accel.clone(),
        vcpus,
        other_threads,
        memory,
        kvm,
        findings: Vec::new(),
    };
    report.findings = findings(&report, &qemu_tids);
    report
}

/// Threads other than the vCPU itself that ran on `cpu` during the interval (their last CPU is
/// `cpu` and their CPU time grew) or wait there now (runnable), busiest first.
fn competitors(
    threads: &[HostThread],
    previous_ticks: &BTreeMap<i32, u64>,
    cpu: usize,
    vcpu_tid: i32,
    seconds: f64,
) -> Vec<Competitor> {
    let hz = ticks_per_second();
    let mut found: Vec<Competitor> = threads
        .iter()
        .filter(|t| t.processor == cpu && t.tid != vcpu_tid)
        .filter_map(|t| {
            let ran = previous_ticks
                .get(&t.tid)
                .map_or(0, |then| t.ticks.saturating_sub(*then));
            let runnable = t.state == 'R';
            (ran > 0 || runnable).then(|| Competitor {
                pid: t.pid,
                tid: t.tid,
                process: t.process.clone(),
                thread: t.thread.clone(),
                cpu_percent: ran as f64 * 100.0 / hz / seconds,
                runnable,
            })
        })
        .collect();
    found.sort_by(|a, b| {
        b.cpu_percent
            .total_cmp(&a.cpu_percent)
            .then(b.runnable.cmp(&a.runnable))
            .then(a.tid.cmp(&b.tid))
    });
    found
}

fn kvm_rates(
    before: Option<&super::probe::KvmStats>,
    now: &super::probe::KvmStats,
    seconds: f64,
) -> Kvm {
    let now = match now {
        Ok(now) => now,
        Err(why) => {
            return Kvm {
                unavailable: Some(why.clone()),
                ..Default::default()
            }
        }
    };
    let Some(Ok(before)) = before else {
        return Kvm::default();
    };
    let rate = |name: &str| -> Option<f64> {
        Some(now.get(name)?.saturating_sub(*before.get(name)?) as f64 / seconds)
    };
    let polls = rate("halt_attempted_poll");
    let successes = rate("halt_successful_poll");
    Kvm {
        unavailable: None,
        exits_per_s: rate("exits"),
        halt_exits_per_s: rate("halt_exits"),
        halt_polls_per_s: polls,
        halt_poll_success_percent: polls
            .zip(successes)
            .and_then(|(p, s)| (p > 0.0).then(|| s * 100.0 / p)),
    }
}

/// The findings in words, most telling first.
fn findings(vm: &VmReport, qemu_tids: &[i32]) -> Vec<String> {
    let mut found = Vec::new();
    for vcpu in &vm.vcpus {
        let (index, cpu) = (vcpu.index, vcpu.cpu);
        if let Some(delay) = vcpu.run_delay_ms_per_s.filter(|d| *d >= DELAY_FINDING_MS) {
            let mut line = format!("vCPU {index} waits {delay:.0} ms/s");
            match vcpu.competitors.first() {
                Some(first) => {
                    let who = if qemu_tids.contains(&first.tid) {
                        format!("QEMU's own thread {} ({})", first.tid, first.thread)
                    } else {
                        format!("pid {} ({})", first.pid, first.process)
                    };
                    line.push_str(&format!(": CPU {cpu} is shared with {who}"));
                    let more = vcpu.competitors.len() - 1;
                    if more > 0 {
                        line.push_str(&format!(" and {more} more"));
                    }
                }
                None => line.push_str(&format!(" on CPU {cpu}")),
            }
            if vcpu.policy == "other" {
                line.push_str(" (SCHED_OTHER)");
            }
            found.push(line);
        }
        for irq in vcpu.interrupts.iter().filter(|r| {
            r.source.chars().all(|c| c.is_ascii_digit()) && r.per_s >= IRQ_FINDING_PER_S
        }) {
            found.push(format!(
                "IRQ {} {} fires {:.0}/s on vCPU {index}'s CPU {cpu}",
                irq.source, irq.name, irq.per_s
            ));
        }
        for softirq in vcpu.softirqs.iter().filter(|r| {
            DEVICE_SOFTIRQS.contains(&r.source.as_str()) && r.per_s >= SOFTIRQ_FINDING_PER_S
        }) {
            found.push(format!(
                "softirq {} runs {:.0}/s on vCPU {index}'s CPU {cpu}",
                softirq.source, softirq.per_s
            ));
        }
    }
    // One line per CPU, however many vCPUs share it.
    let mut cpus_said = Vec::new();
    for vcpu in &vm.vcpus {
        if cpus_said.contains(&vcpu.cpu) {
            continue;
        }
        let Some(mhz) = vcpu.cpu_mhz else { continue };
        let powersave = vcpu.governor.as_deref() == Some("powersave");
        let slow = vcpu
            .cpu_max_mhz
            .is_some_and(|max| mhz < max * SLOW_CPU_SHARE);
        if powersave || slow {
            cpus_said.push(vcpu.cpu);
            let governor = vcpu.governor.as_deref().unwrap_or("no governor");
            let max = vcpu
                .cpu_max_mhz
                .map_or(String::new(), |max| format!(" of {max:.0} MHz"));
            found.push(format!(
                "CPU {} at {mhz:.0} MHz{max} ({governor}), under vCPU {}",
                vcpu.cpu, vcpu.index
            ));
        }
    }
    for thread in &vm.other_threads {
        let Some(percent) = thread
            .cpu_percent
            .filter(|p| *p >= EMULATOR_FINDING_PERCENT)
        else {
            continue;
        };
        if let Some(vcpu) = vm.vcpus.iter().find(|v| v.cpu == thread.cpu) {
            found.push(format!(
                "QEMU thread {} ({}) used {percent:.0}% of a CPU on vCPU {}'s CPU {}",
                thread.thread_id, thread.name, vcpu.index, vcpu.cpu
            ));
        }
    }
    found
}
