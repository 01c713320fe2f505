//! `[isolation]`: every movable interrupt goes to the host's CPUs while the VM runs
//! (`/proc/irq/N/smp_affinity_list`, and `default_smp_affinity` for interrupts set up later).
//! All previous affinities are journaled in one record before the first write; interrupts the
//! kernel does not let move (it answers EIO) stay where they are.

use serde::{Deserialize, Serialize};

use super::{Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::log::Log;
use crate::model::{CpuSet, HostCpus, VmConfig};
use crate::plan::VmPaths;

const DEFAULT: &str = "/proc/irq/default_smp_affinity";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MoveIrqs {
    pub host_cpus: CpuSet,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreIrqAffinity {
    /// (IRQ number, its smp_affinity_list before).
    pub irqs: Vec<(u32, String)>,
    pub default_mask: Option<String>,
}

impl MoveIrqs {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        match &config.isolation.as_ref()?.host_cpus {
            HostCpus::List(host_cpus) => Some(MoveIrqs {
                host_cpus: host_cpus.clone(),
            }),
            HostCpus::Auto => None,
        }
    }
}

fn affinity_path(irq: u32) -> String {
    format!("/proc/irq/{irq}/smp_affinity_list")
}

fn irqs(host: &HostContext) -> Vec<u32> {
    let mut irqs: Vec<u32> = std::fs::read_dir(host.root.path("/proc/irq"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    irqs.sort_unstable();
    irqs
}

impl Step for MoveIrqs {
    fn describe(&self) -> String {
        format!("move every movable interrupt to CPUs {}", self.host_cpus)
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let before: Vec<(u32, String)> = irqs(host)
            .into_iter()
            .filter_map(|irq| Some((irq, host.read(&affinity_path(irq))?)))
            .collect();
        let default_mask = host.read(DEFAULT);
        let wanted = self.host_cpus.to_string();
        record.change(
            RestoreIrqAffinity {
                irqs: before.clone(),
                default_mask: default_mask.clone(),
            },
            || {
                if default_mask.is_some() {
                    host.write(DEFAULT, &self.host_cpus.to_mask_string())?;
                }
                let mut moved = 0;
                for (irq, _) in &before {
                    match host.write(&affinity_path(*irq), &wanted) {
                        Ok(()) => moved += 1,
                        // Per-CPU and some chip interrupts cannot move: the kernel says EIO.
                        Err(error) => log.debug(&format!("IRQ {irq} stays: {error}")),
                    }
                }
                log.info(&format!(
                    "{moved} of {} interrupts moved to CPUs {wanted}",
                    before.len()
                ));
                Ok(())
            },
        )
    }
}

impl Undoable for RestoreIrqAffinity {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        log.info(&format!("{} interrupt affinities back", self.irqs.len()));
        if let Some(mask) = &self.default_mask {
            host.write(DEFAULT, mask)?;
        }
        for (irq, list) in &self.irqs {
            // Gone (its device went away) or never moved (EIO on apply too): nothing to undo.
            if let Err(error) = host.write(&affinity_path(*irq), list) {
                log.debug(&format!("IRQ {irq}: {error}"));
            }
        }
        Ok(())
    }

    fn verify_restored(&self, host: &HostContext) -> Result<(), String> {
        let wrong: Vec<String> = self
            .irqs
            .iter()
            .filter(|(irq, list)| {
                host.read(&affinity_path(*irq))
                    .is_some_and(|now| now != *list)
            })
            .map(|(irq, list)| format!("IRQ {irq} (wanted {list})"))
            .collect();
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "interrupt affinities not restored: {}",
                wrong.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::steps::testing::{log, FakeHost};
    use crate::host::steps::HostStep;

    #[test]
    fn interrupts_move_to_the_host_cpus_and_come_back_byte_for_byte() {
        let fake = FakeHost::new();
        fake.write(DEFAULT, "f");
        fake.write(&affinity_path(5), "0-3");
        fake.write(&affinity_path(17), "2");
        let session = fake.session(vec![HostStep::MoveIrqs(MoveIrqs {
            host_cpus: CpuSet::from_cpus([0]),
        })]);
        session.apply(&log()).unwrap();
        assert_eq!(fake.read(DEFAULT), "1");
        assert_eq!(fake.read(&affinity_path(5)), "0");
        assert_eq!(fake.read(&affinity_path(17)), "0");
        session.undo_all(&log()).unwrap();
        assert_eq!(fake.read(DEFAULT), "f");
        assert_eq!(fake.read(&affinity_path(5)), "0-3");
        assert_eq!(fake.read(&affinity_path(17)), "2");
    }

    #[test]
    fn an_affinity_changed_behind_its_back_is_reported_as_not_restored() {
        let fake = FakeHost::new();
        fake.write(&affinity_path(5), "0-3");
        let undo = RestoreIrqAffinity {
            irqs: vec![(5, "0-3".to_string())],
            default_mask: None,
        };
        assert!(undo.verify_restored(&fake.host()).is_ok());
        fake.write(&affinity_path(5), "1");
        let problem = undo.verify_restored(&fake.host()).unwrap_err();
        assert!(problem.contains("IRQ 5"), "{problem}");
    }
}
