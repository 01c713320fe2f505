//! `[isolation]`: the kernel's unbound workqueues run only on the host's CPUs while the VM runs
//! (`/sys/devices/virtual/workqueue/cpumask`); the previous mask is journaled and written back.

use serde::{Deserialize, Serialize};

use super::{Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::log::Log;
use crate::model::{CpuSet, HostCpus, VmConfig};
use crate::plan::VmPaths;

const CPUMASK: &str = "/sys/devices/virtual/workqueue/cpumask";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestrictWorkqueues {
    pub host_cpus: CpuSet,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreWorkqueueMask {
    pub mask: String,
}

impl RestrictWorkqueues {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        match &config.isolation.as_ref()?.host_cpus {
            HostCpus::List(host_cpus) => Some(RestrictWorkqueues {
                host_cpus: host_cpus.clone(),
            }),
            HostCpus::Auto => None,
        }
    }
}

impl Step for RestrictWorkqueues {
    fn describe(&self) -> String {
        format!(
            "run the kernel's unbound workqueues on CPUs {} only",
            self.host_cpus
        )
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        if host.read(CPUMASK).is_none() {
            return vec![Finding::warn(
                "isolation",
                format!("this kernel has no {CPUMASK}: its workqueues stay on every CPU"),
            )];
        }
        Vec::new()
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let Some(mask) = host.read(CPUMASK) else {
            log.info(&format!("no {CPUMASK}: workqueues left alone"));
            return Ok(());
        };
        let wanted = self.host_cpus.to_mask_string();
        log.info(&format!("workqueue cpumask {mask} → {wanted}"));
        record.change(RestoreWorkqueueMask { mask }, || {
            host.write(CPUMASK, &wanted)
        })
    }
}

impl Undoable for RestoreWorkqueueMask {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        log.info(&format!("workqueue cpumask back to {}", self.mask));
        host.write(CPUMASK, &self.mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::finding::Status;
    use crate::host::steps::testing::{log, FakeHost};
    use crate::host::steps::HostStep;

    fn step() -> RestrictWorkqueues {
        RestrictWorkqueues {
            host_cpus: CpuSet::from_cpus([0, 1]),
        }
    }

    #[test]
    fn the_workqueue_mask_moves_to_the_host_cpus_and_back() {
        let fake = FakeHost::new();
        fake.write(CPUMASK, "ff\n");
        let session = fake.session(vec![HostStep::RestrictWorkqueues(step())]);
        assert!(step().preflight(&fake.host()).is_empty());
        session.apply(&log()).unwrap();
        assert_eq!(fake.read(CPUMASK), "3");
        session.undo_all(&log()).unwrap();
        assert_eq!(fake.read(CPUMASK), "ff");
        assert!(session.leftovers().unwrap().is_empty());
    }

    #[test]
    fn a_kernel_without_the_mask_is_warned_about_and_left_alone() {
        let fake = FakeHost::new();
        let findings = step().preflight(&fake.host());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].status, Status::Warn);
        let session = fake.session(vec![HostStep::RestrictWorkqueues(step())]);
        session.apply(&log()).unwrap();
        assert!(session.leftovers().unwrap().is_empty());
        assert!(!fake.exists(CPUMASK));
    }
}
