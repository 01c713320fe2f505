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

/// Gives the workqueues back the CPUs this VM took from them. While the mask is still the one
/// this VM wrote, the mask it found is written back as it was; otherwise (another VM changed it
/// meanwhile) the CPUs this VM removed are added to the current mask, so that two VMs restore
/// the mask in either order and a record replayed twice changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreWorkqueueMask {
    pub mask: String,
    /// The mask this VM wrote (absent in journals of earlier versions: restored as found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// The CPUs of `mask` this VM removed, as a CPU list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
}

/// A kernel cpumask (`ff`, `00000000,000000ff`) as CPU numbers.
fn parse_mask(text: &str) -> Option<CpuSet> {
    let mut cpus = Vec::new();
    for (group, word) in text.trim().rsplit(',').enumerate() {
        let bits = u32::from_str_radix(word, 16).ok()?;
        cpus.extend(
            (0..32)
                .filter(|bit| bits & (1 << bit) != 0)
                .map(|bit| group * 32 + bit),
        );
    }
    Some(CpuSet::from_cpus(cpus))
}

/// Whether two masks name the same CPUs (the kernel may pad them differently).
fn same_mask(a: &str, b: &str) -> bool {
    matches!((parse_mask(a), parse_mask(b)), (Some(a), Some(b)) if a == b)
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
        let removed = parse_mask(&mask).map(|found| {
            CpuSet::from_cpus(found.iter().filter(|cpu| !self.host_cpus.contains(*cpu)))
                .to_list_string()
        });
        record.change(
            RestoreWorkqueueMask {
                mask,
                set: Some(wanted.clone()),
                removed,
            },
            || host.write(CPUMASK, &wanted),
        )
    }
}

impl Undoable for RestoreWorkqueueMask {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let now = host.read(CPUMASK);
        let merged = match (&self.set, &self.removed, &now) {
            (Some(set), Some(removed), Some(now)) if !same_mask(now, set) => {
                // An empty list: this VM removed nothing, the mask stays as it is now.
                let removed = if removed.trim().is_empty() {
                    Ok(CpuSet::from_cpus([]))
                } else {
                    removed.parse::<CpuSet>()
                };
                match (parse_mask(now), removed) {
                    (Some(now), Ok(removed)) => {
                        Some(CpuSet::from_cpus(now.iter().chain(removed.iter())))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match merged {
            Some(merged) => {
                let mask = merged.to_mask_string();
                log.info(&format!(
                    "workqueue cpumask changed since this VM set it: adding back its CPUs ({mask})"
                ));
                host.write(CPUMASK, &mask)
            }
            None => {
                log.info(&format!("workqueue cpumask back to {}", self.mask));
                host.write(CPUMASK, &self.mask)
            }
        }
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
    fn kernel_masks_are_read_as_cpu_sets() {
        assert_eq!(parse_mask("ff\n"), Some(CpuSet::from_cpus(0..8)));
        assert_eq!(
            parse_mask("00000001,00000003"),
            Some(CpuSet::from_cpus([0, 1, 32]))
        );
        assert!(same_mask("0000000f", "f"));
        assert_eq!(parse_mask("zz"), None);
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
