//! The vCPUs' host CPUs: online, reachable from vmrun's cgroup, real-time without starving
//! anyone, and what KVM needs for a Windows guest. Pinning is not a host change (`run` pins the
//! threads QEMU makes), so its findings live here rather than in a host step.

use super::{read_trimmed, Finding, Status, Sysroot};
use crate::model::{Accel, VmConfig};
use crate::plan::HostFacts;

pub(super) fn cpu_findings(config: &VmConfig, facts: &HostFacts) -> Vec<Finding> {
    let Some(pinning) = &config.pinning else {
        return vec![Finding::new(
            Status::Warn,
            "pinning",
            "no [pinning]: vCPU threads float over all host CPUs (latency spikes in games)",
        )];
    };
    let Some(online) = &facts.online_cpus else {
        return vec![Finding::new(
            Status::Warn,
            "pinning",
            "cannot read the online CPU list of this host",
        )];
    };
    let mut wanted: Vec<(String, usize)> = pinning
        .vcpus
        .iter()
        .enumerate()
        .map(|(index, cpu)| (format!("pinning.vcpus[{index}]"), *cpu))
        .collect();
    for (key, set) in [
        ("pinning.emulator", &pinning.emulator),
        ("pinning.iothreads", &pinning.iothreads),
    ] {
        if let Some(set) = set {
            wanted.extend(set.iter().map(|cpu| (key.to_string(), cpu)));
        }
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(_, cpu)| !online.contains(*cpu))
        .map(|(key, cpu)| format!("{key} = {cpu}"))
        .collect();
    if missing.is_empty() {
        vec![Finding::new(
            Status::Pass,
            "pinning",
            format!("every pinned host CPU is online (online: {online})"),
        )]
    } else {
        vec![Finding::new(
            Status::Fail,
            "pinning",
            format!(
                "host CPUs not online here (online: {online}): {}; list CPUs of this host, or write \
                 `vcpus = \"auto\"` to let vmrun choose whole cores from its topology \
                 (`vmrun topology` shows them)",
                missing.join(", ")
            ),
        )]
    }
}

/// Under cgroup v2, a thread can only be placed within its cgroup's cpuset:
/// `sched_setaffinity` to a CPU outside it fails with EINVAL, and QEMU is in vmrun's cgroup.
pub(super) fn cgroup_cpus(config: &VmConfig, root: &Sysroot) -> Option<Finding> {
    let pinning = config.pinning.as_ref()?;
    let (cgroup, allowed) = crate::host::own_cgroup_cpus(root)?;
    let outside: Vec<usize> = pinning
        .vcpus
        .iter()
        .copied()
        .filter(|cpu| !allowed.contains(*cpu))
        .collect();
    Some(if outside.is_empty() {
        Finding::pass(
            "cgroup",
            format!("vmrun's cgroup {cgroup} allows CPUs {allowed}, every vCPU's included"),
        )
    } else {
        Finding::fail(
            "cgroup",
            format!(
                "vmrun's cgroup {cgroup} allows only CPUs {allowed}, so vCPUs cannot be pinned to {} (sched_setaffinity would fail with EINVAL); start vmrun in a cgroup that allows them, e.g. `systemd-run --scope --slice=machine.slice vmrun run PROFILE`",
                crate::model::CpuSet::from_cpus(outside)
            ),
        )
    })
}

/// A spinning SCHED_RR/FIFO vCPU starves every normal thread on its CPU: QEMU's main loop,
/// vmrun, and the host's own work.
pub(super) fn realtime_sharing(config: &VmConfig, facts: &HostFacts) -> Vec<Finding> {
    let Some(pinning) = config
        .pinning
        .as_ref()
        .filter(|p| p.scheduler.is_realtime())
    else {
        return Vec::new();
    };
    let vcpus = crate::model::CpuSet::from_cpus(pinning.vcpus.iter().copied());
    let mut findings = Vec::new();
    let emulator = facts
        .online_cpus
        .as_ref()
        .and_then(|online| crate::plan::emulator_cpus(config, online));
    if let Some(emulator) = emulator {
        let shared: Vec<usize> = vcpus.iter().filter(|c| emulator.contains(*c)).collect();
        if !shared.is_empty() {
            findings.push(Finding::warn(
                "realtime",
                format!(
                    "real-time vCPUs share CPUs {} with QEMU's other threads (emulator CPUs {emulator}): a spinning SCHED_{} vCPU starves QEMU's main loop there; give pinning.emulator other CPUs",
                    crate::model::CpuSet::from_cpus(shared),
                    pinning.scheduler.as_str().to_uppercase()
                ),
            ));
        }
    }
    for (other, cpus) in &facts.running_realtime {
        if *other == config.name.as_str() {
            continue;
        }
        let shared: Vec<usize> = vcpus.iter().filter(|c| cpus.contains(*c)).collect();
        if !shared.is_empty() {
            findings.push(Finding::fail(
                "realtime",
                format!(
                    "real-time vCPUs would share CPUs {} with the real-time vCPUs of the running VM {other} \
                     (CPUs {cpus}): two spinning real-time threads on one CPU take turns, each stalling \
                     the other's guest; pin this VM to other CPUs",
                    crate::model::CpuSet::from_cpus(shared)
                ),
            ));
        }
    }
    if let Some(crate::model::HostCpus::List(host_cpus)) =
        config.isolation.as_ref().map(|i| &i.host_cpus)
    {
        let shared: Vec<usize> = vcpus.iter().filter(|c| host_cpus.contains(*c)).collect();
        if !shared.is_empty() {
            findings.push(Finding::fail(
                "realtime",
                format!(
                    "real-time vCPUs share CPUs {} with the host's CPUs {host_cpus}: the host would starve there",
                    crate::model::CpuSet::from_cpus(shared)
                ),
            ));
        }
    }
    findings
}

pub(super) fn scheduler_capability(config: &VmConfig) -> Option<Finding> {
    let pinning = config.pinning.as_ref()?;
    if !pinning.scheduler.is_realtime() {
        return None;
    }
    let has = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_NICE,
    )
    .unwrap_or(false);
    Some(if has {
        Finding::new(
            Status::Pass,
            "scheduler",
            format!(
                "CAP_SYS_NICE held: vCPUs can get SCHED_{} priority {}",
                pinning.scheduler.as_str().to_uppercase(),
                pinning.priority
            ),
        )
    } else {
        Finding::new(
            Status::Fail,
            "scheduler",
            format!(
                "pinning.scheduler = \"{}\" needs CAP_SYS_NICE: run vmrun as root (sudo), or set scheduler = \"other\"",
                pinning.scheduler.as_str()
            ),
        )
    })
}

/// Windows reads model-specific registers KVM does not emulate; with ignore_msrs off KVM
/// injects a fault and Windows (or a game's anti-cheat) crashes with a blue screen.
pub(super) fn ignore_msrs(config: &VmConfig, root: &Sysroot) -> Option<Finding> {
    let windows = !config.cpu.hyperv.is_empty();
    if !windows || config.machine.accel != Accel::Kvm {
        return None;
    }
    let value = read_trimmed(root, "/sys/module/kvm/parameters/ignore_msrs")?;
    (value == "N" || value == "0").then(|| {
        Finding::warn(
            "msrs",
            "kvm.ignore_msrs is off and this is a Windows guest (cpu.hyperv): Windows and some games read MSRs KVM does not emulate and crash (SYSTEM_THREAD_EXCEPTION_NOT_HANDLED); set kvm.ignore_msrs=1 (and kvm.report_ignored_msrs=0 to keep the log quiet) on the kernel command line or in /etc/modprobe.d",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CpuSet;

    fn config(text: &str) -> VmConfig {
        let dir = tempfile::tempdir().unwrap();
        let source = crate::profile::ProfileSource {
            path: dir.path().join("vm.toml"),
            text: text.to_string(),
        };
        let raw = crate::model::parse(&source).unwrap();
        crate::model::validate(&source, &raw).unwrap().0
    }

    #[test]
    fn vcpus_outside_vmruns_cgroup_fail() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path());
        let write = |path: &str, text: &str| {
            let real = dir.path().join(path);
            std::fs::create_dir_all(real.parent().unwrap()).unwrap();
            std::fs::write(real, text).unwrap();
        };
        let vm = config("[cpu]\ncores = 2\n[pinning]\nvcpus = [2, 3]\n");
        assert!(
            cgroup_cpus(&vm, &root).is_none(),
            "unknown cgroup: no finding"
        );
        write("proc/self/cgroup", "0::/user.slice/session-1.scope\n");
        write(
            "sys/fs/cgroup/user.slice/session-1.scope/cpuset.cpus.effective",
            "0-2\n",
        );
        let finding = cgroup_cpus(&vm, &root).unwrap();
        assert_eq!(finding.status, Status::Fail);
        assert!(
            finding.message.contains("cannot be pinned to 3"),
            "{}",
            finding.message
        );
        write(
            "sys/fs/cgroup/user.slice/session-1.scope/cpuset.cpus.effective",
            "0-7\n",
        );
        assert_eq!(cgroup_cpus(&vm, &root).unwrap().status, Status::Pass);
    }

    #[test]
    fn real_time_vcpus_warn_beside_the_emulator_and_fail_beside_another_vm() {
        let vm = config(
            "[cpu]\ncores = 2\n[pinning]\nvcpus = [1, 2]\nemulator = \"0-1\"\nscheduler = \"rr\"\n",
        );
        let facts = HostFacts {
            online_cpus: Some(CpuSet::from_cpus(0..4)),
            running_realtime: vec![("other".to_string(), CpuSet::from_cpus([2]))],
            ..Default::default()
        };
        let findings = realtime_sharing(&vm, &facts);
        let statuses: Vec<Status> = findings.iter().map(|f| f.status).collect();
        assert_eq!(statuses, [Status::Warn, Status::Fail], "{findings:?}");
        assert!(findings[1].message.contains("running VM other"));
        let other_scheduler =
            config("[cpu]\ncores = 2\n[pinning]\nvcpus = [1, 2]\nscheduler = \"other\"\n");
        assert!(realtime_sharing(&other_scheduler, &facts).is_empty());
    }
}
