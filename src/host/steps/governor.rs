//! `[isolation]`: the vCPUs' CPUs run with the profile's cpufreq governor (`performance` by
//! default) while the VM runs; each CPU's previous governor is journaled and set back.

use serde::{Deserialize, Serialize};

use super::{Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::log::Log;
use crate::model::{CpuSet, VmConfig};
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetGovernor {
    pub cpus: CpuSet,
    pub governor: String,
}

/// Sets each CPU's governor back, but only where it is still the one this VM set: a CPU whose
/// governor changed since (another VM on the same CPU stopped first and set back what it found,
/// or someone chose another) is left alone. Two VMs that share a CPU thus end with the governor
/// the first of them found, in either order, and a record replayed twice changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreGovernors {
    /// (CPU, its governor before).
    pub cpus: Vec<(usize, String)>,
    /// The governor this VM set (absent in journals of earlier versions: restored as found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
}

fn governor_path(cpu: usize) -> String {
    format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")
}

impl SetGovernor {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        let governor = config.isolation.as_ref()?.governor.clone()?;
        let pinning = config.pinning.as_ref()?;
        Some(SetGovernor {
            cpus: CpuSet::from_cpus(pinning.vcpus.iter().copied()),
            governor,
        })
    }
}

impl Step for SetGovernor {
    fn describe(&self) -> String {
        format!(
            "set the cpufreq governor of CPUs {} to {}",
            self.cpus, self.governor
        )
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let Some(first) = self.cpus.iter().next() else {
            return Vec::new();
        };
        let available =
            format!("/sys/devices/system/cpu/cpu{first}/cpufreq/scaling_available_governors");
        if host.read(&governor_path(first)).is_none() {
            return vec![Finding::warn(
                "isolation",
                format!(
                    "CPU {first} has no cpufreq (no {}): the governor stays as it is",
                    governor_path(first)
                ),
            )];
        }
        match host.read(&available) {
            Some(list) if !list.split_whitespace().any(|g| g == self.governor) => {
                vec![Finding::fail(
                    "isolation",
                    format!(
                    "isolation.governor = \"{}\" is not offered by this kernel (available: {list})",
                    self.governor
                ),
                )]
            }
            _ => Vec::new(),
        }
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let before: Vec<(usize, String)> = self
            .cpus
            .iter()
            .filter_map(|cpu| Some((cpu, host.read(&governor_path(cpu))?)))
            .collect();
        // CPUs already on the governor change nothing, and have nothing to give back.
        let before: Vec<(usize, String)> = before
            .into_iter()
            .filter(|(_, governor)| *governor != self.governor)
            .collect();
        if before.is_empty() {
            log.info("no cpufreq on the vCPUs' CPUs, or all already there: governor left alone");
            return Ok(());
        }
        log.info(&format!(
            "governor of CPUs {} → {}",
            self.cpus, self.governor
        ));
        record.change(
            RestoreGovernors {
                cpus: before.clone(),
                set: Some(self.governor.clone()),
            },
            || {
                for (cpu, _) in &before {
                    host.write(&governor_path(*cpu), &self.governor)?;
                }
                Ok(())
            },
        )
    }
}

impl Undoable for RestoreGovernors {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        for (cpu, governor) in &self.cpus {
            let now = host.read(&governor_path(*cpu));
            if let (Some(set), Some(now)) = (&self.set, &now) {
                if now != set {
                    log.info(&format!(
                        "CPU {cpu}: governor is {now}, no longer the {set} this VM set: left alone"
                    ));
                    continue;
                }
            }
            log.info(&format!("CPU {cpu}: governor back to {governor}"));
            host.write(&governor_path(*cpu), governor)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::finding::Status;
    use crate::host::steps::testing::{log, FakeHost};
    use crate::host::steps::HostStep;

    fn step() -> SetGovernor {
        SetGovernor {
            cpus: CpuSet::from_cpus([2, 3]),
            governor: "performance".to_string(),
        }
    }

    #[test]
    fn the_vcpus_cpus_get_the_governor_and_their_own_back() {
        let fake = FakeHost::new();
        fake.write(&governor_path(2), "powersave");
        fake.write(&governor_path(3), "schedutil");
        let session = fake.session(vec![HostStep::SetGovernor(step())]);
        session.apply(&log()).unwrap();
        assert_eq!(fake.read(&governor_path(2)), "performance");
        assert_eq!(fake.read(&governor_path(3)), "performance");
        session.undo_all(&log()).unwrap();
        assert_eq!(fake.read(&governor_path(2)), "powersave");
        assert_eq!(fake.read(&governor_path(3)), "schedutil");
    }

    #[test]
    fn findings_name_a_missing_cpufreq_and_a_governor_the_kernel_lacks() {
        let fake = FakeHost::new();
        let findings = step().preflight(&fake.host());
        assert_eq!(findings[0].status, Status::Warn);
        fake.write(&governor_path(2), "powersave");
        fake.write(
            "/sys/devices/system/cpu/cpu2/cpufreq/scaling_available_governors",
            "powersave schedutil",
        );
        let findings = step().preflight(&fake.host());
        assert_eq!(findings[0].status, Status::Fail);
        assert!(findings[0]
            .message
            .contains("available: powersave schedutil"));
        fake.write(
            "/sys/devices/system/cpu/cpu2/cpufreq/scaling_available_governors",
            "performance powersave",
        );
        assert!(step().preflight(&fake.host()).is_empty());
    }
}
