//! `[isolation]`: systemd's slices (`system.slice`, `user.slice`, `init.scope`) are restricted to
//! the host's CPUs with `AllowedCPUs`, at runtime only (`--runtime`: a reboot forgets it), so
//! services and the desktop stay off the vCPUs' CPUs while the VM runs. Each unit's previous
//! value is journaled and set back after.

use serde::{Deserialize, Serialize};

use super::{LibvirtContext, LibvirtNotes, Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::libvirt::xml::Element;
use crate::log::Log;
use crate::model::{CpuSet, HostCpus, VmConfig};
use crate::plan::VmPaths;

/// The units every process of the host lives under, QEMU's and vmrun's own excepted (they
/// must be started outside them: see the preflight).
pub const HOST_UNITS: &[&str] = &["system.slice", "user.slice", "init.scope"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestrictSlices {
    pub host_cpus: CpuSet,
    pub units: Vec<String>,
    /// The vCPUs' CPUs, which vmrun's own cgroup must still allow.
    #[serde(skip)]
    pub vcpus: CpuSet,
}

/// Sets a unit's AllowedCPUs back. While it is still what this VM set, the value found is
/// written back as it was; otherwise (another VM changed it meanwhile) the CPUs this VM took
/// away are added to the current value, so that two VMs restore it in either order and a record
/// replayed twice changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreAllowedCpus {
    pub unit: String,
    /// What `systemctl show` said before; empty means every CPU.
    pub value: String,
    /// What this VM set (absent in journals of earlier versions: restored as found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// The CPUs this VM took away from the unit, as a CPU list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
}

fn cpus_of(value: &str) -> Option<CpuSet> {
    if value.trim().is_empty() {
        Some(CpuSet::from_cpus([]))
    } else {
        value.trim().parse().ok()
    }
}

impl RestrictSlices {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        let isolation = config.isolation.as_ref()?;
        let HostCpus::List(host_cpus) = &isolation.host_cpus else {
            return None;
        };
        Some(RestrictSlices {
            host_cpus: host_cpus.clone(),
            units: HOST_UNITS.iter().map(|u| u.to_string()).collect(),
            vcpus: CpuSet::from_cpus(config.pinning.iter().flat_map(|p| p.vcpus.iter().copied())),
        })
    }
}

fn allowed_cpus(host: &HostContext, unit: &str, log: &Log) -> Result<String, StepError> {
    let output = host.run_checked(
        &[
            "systemctl",
            "show",
            "--property",
            "AllowedCPUs",
            "--value",
            unit,
        ],
        log,
    )?;
    Ok(output.stdout.trim().to_string())
}

fn set_allowed_cpus(
    host: &HostContext,
    unit: &str,
    value: &str,
    log: &Log,
) -> Result<(), StepError> {
    host.run_checked(
        &[
            "systemctl",
            "set-property",
            "--runtime",
            unit,
            &format!("AllowedCPUs={value}"),
        ],
        log,
    )
    .map(|_| ())
}

impl Step for RestrictSlices {
    /// `[isolation]` as a whole (slices, workqueues, IRQs, governor) is one hook for libvirt,
    /// described here, where it begins.
    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        let Some(isolation) = vm.written.isolation.as_ref() else {
            return LibvirtNotes::default();
        };
        let name = vm.written.name.as_str();
        let written = match &isolation.host_cpus {
            HostCpus::Auto => "auto".to_string(),
            HostCpus::List(set) => set.to_list_string(),
        };
        let resolved = self.host_cpus.to_list_string();
        LibvirtNotes {
            comments: vec![format!(
                "vmrun keeps the host's own work (systemd slices, workqueues, IRQs) on CPUs {resolved} and sets the \
                 vCPUs' CPUs to the {} governor while the VM runs: libvirt needs {} (systemctl set-property \
                 system.slice user.slice init.scope AllowedCPUs={resolved}) and the reverse on `{name} release end`",
                isolation.governor.as_deref().unwrap_or("unchanged"),
                vm.hook("prepare begin")
            )],
            metadata: vec![Element::new("vmrun:isolation")
                .attr("host-cpus", written)
                .attr(
                    "governor",
                    isolation.governor.clone().unwrap_or_else(|| "keep".to_string()),
                )],
            devices: Vec::new(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "keep {} on CPUs {} (systemd AllowedCPUs, runtime only)",
            self.units.join(", "),
            self.host_cpus
        )
    }

    /// AllowedCPUs needs cgroup v2 with the cpuset controller; and vmrun must not run inside a
    /// unit it restricts, or QEMU (its child) could not be pinned to the vCPUs' CPUs:
    /// sched_setaffinity fails with EINVAL outside the cgroup's cpuset (vfio-isolate's issues).
    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let mut findings = Vec::new();
        match host.read("/sys/fs/cgroup/cgroup.controllers") {
            None => findings.push(Finding::fail(
                "isolation",
                "isolation needs cgroup v2 (the unified hierarchy: /sys/fs/cgroup/cgroup.controllers is \
                 missing); boot with systemd.unified_cgroup_hierarchy=1",
            )),
            Some(controllers) if !controllers.split_whitespace().any(|c| c == "cpuset") => {
                findings.push(Finding::fail(
                    "isolation",
                    format!(
                        "the cgroup v2 cpuset controller is not available (cgroup.controllers: {controllers}); \
                         systemd's AllowedCPUs needs it: a kernel with CONFIG_CPUSETS, and no cgroup v1 \
                         cpuset mount holding it"
                    ),
                ))
            }
            Some(_) => findings.push(Finding::pass(
                "isolation",
                format!(
                    "cgroup v2 with the cpuset controller: {} can be kept on CPUs {}",
                    self.units.join(", "),
                    self.host_cpus
                ),
            )),
        }
        if let Some(own) = crate::host::own_cgroup(&host.root) {
            let inside = self
                .units
                .iter()
                .find(|unit| own.starts_with(&format!("/{unit}")));
            if let Some(unit) = inside {
                findings.push(Finding::fail(
                    "isolation",
                    format!(
                        "vmrun runs in {own}, inside {unit}, which isolation keeps on CPUs {}: QEMU could not \
                         be pinned to the vCPUs' CPUs {}. Start vmrun outside the host's slices, e.g. \
                         `systemd-run --scope --slice=machine.slice vmrun run PROFILE`",
                        self.host_cpus, self.vcpus
                    ),
                ));
            }
        }
        findings
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        for unit in &self.units {
            let value = allowed_cpus(host, unit, log)?;
            log.info(&format!(
                "{unit}: AllowedCPUs {} → {}",
                if value.is_empty() { "(all)" } else { &value },
                self.host_cpus
            ));
            // Empty means every online CPU.
            let had = if value.trim().is_empty() {
                host.read("/sys/devices/system/cpu/online")
                    .and_then(|online| cpus_of(&online))
            } else {
                cpus_of(&value)
            };
            let removed = had.map(|had| {
                CpuSet::from_cpus(had.iter().filter(|cpu| !self.host_cpus.contains(*cpu)))
                    .to_list_string()
            });
            record.change(
                RestoreAllowedCpus {
                    unit: unit.clone(),
                    value,
                    set: Some(self.host_cpus.to_string()),
                    removed,
                },
                || set_allowed_cpus(host, unit, &self.host_cpus.to_string(), log),
            )?;
        }
        Ok(())
    }
}

impl Undoable for RestoreAllowedCpus {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        log.info(&format!(
            "{}: AllowedCPUs back to {}",
            self.unit,
            if self.value.is_empty() {
                "(all)"
            } else {
                &self.value
            }
        ));
        if let (Some(set), Some(removed)) = (&self.set, &self.removed) {
            let now = allowed_cpus(host, &self.unit, log)?;
            if cpus_of(&now) != cpus_of(set) {
                if now.trim().is_empty() {
                    log.info(&format!(
                        "{}: AllowedCPUs is every CPU again (another VM gave it back): left alone",
                        self.unit
                    ));
                    return Ok(());
                }
                if let (Some(now), Some(removed)) = (cpus_of(&now), cpus_of(removed)) {
                    let merged = CpuSet::from_cpus(now.iter().chain(removed.iter()));
                    log.info(&format!(
                        "{}: AllowedCPUs changed since this VM set it: adding back its CPUs ({merged})",
                        self.unit
                    ));
                    return set_allowed_cpus(host, &self.unit, &merged.to_string(), log);
                }
            }
        }
        set_allowed_cpus(host, &self.unit, &self.value, log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::finding::Status;
    use crate::host::steps::testing::{self, log, output, FakeHost};
    use crate::host::steps::HostStep;

    fn step() -> RestrictSlices {
        RestrictSlices {
            host_cpus: CpuSet::from_cpus([0, 1]),
            units: vec!["system.slice".to_string(), "user.slice".to_string()],
            vcpus: CpuSet::from_cpus([2, 3]),
        }
    }

    #[test]
    fn the_slices_are_restricted_and_given_their_own_value_back() {
        let fake = FakeHost::answering(|_, line| {
            output(if line.contains("show") && line.ends_with("user.slice") {
                "0-7\n"
            } else {
                ""
            })
        });
        let session = fake.session(vec![HostStep::RestrictSlices(step())]);
        session.apply(&log()).unwrap();
        session.undo_all(&log()).unwrap();
        let sets: Vec<String> = fake
            .calls()
            .into_iter()
            .filter(|call| call.contains("set-property"))
            .collect();
        assert_eq!(
            sets,
            [
                "systemctl set-property --runtime system.slice AllowedCPUs=0-1",
                "systemctl set-property --runtime user.slice AllowedCPUs=0-1",
                "systemctl set-property --runtime user.slice AllowedCPUs=0-7",
                "systemctl set-property --runtime system.slice AllowedCPUs=",
            ]
        );
    }

    #[test]
    fn findings_want_cgroup_v2_with_cpuset() {
        let fake = FakeHost::new();
        assert_eq!(step().preflight(&fake.host())[0].status, Status::Fail);
        fake.write("/sys/fs/cgroup/cgroup.controllers", "cpu io memory");
        let findings = step().preflight(&fake.host());
        assert_eq!(findings[0].status, Status::Fail);
        assert!(findings[0].message.contains("cpuset"));
        fake.write("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory");
        assert_eq!(step().preflight(&fake.host())[0].status, Status::Pass);
    }

    #[test]
    fn libvirt_metadata_keeps_auto_as_written_and_the_comment_names_this_hosts_cpus() {
        let written = testing::config(
            "[cpu]\ncores = 2\n[pinning]\nvcpus = [2, 3]\n[isolation]\nhost_cpus = \"auto\"\ngovernor = \"performance\"\n",
        );
        let notes = testing::libvirt(&HostStep::RestrictSlices(step()), &written);
        assert!(
            notes.comments[0].contains("on CPUs 0-1"),
            "{}",
            notes.comments[0]
        );
        assert!(notes.comments[0].contains("performance governor"));
        let element = &notes.metadata[0];
        assert_eq!(element.name, "vmrun:isolation");
        assert!(element
            .attributes
            .contains(&("host-cpus".to_string(), "auto".to_string())));
    }
}
