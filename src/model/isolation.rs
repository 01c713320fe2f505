//! `[isolation]`: while the VM runs, the host's own work (systemd's slices, kernel workqueues,
//! movable interrupts) is kept on `host_cpus`, off the vCPUs' CPUs, and the vCPUs' CPUs run at
//! the `governor` given. Opt-in; every change is journaled and undone after the run.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawIsolation {
    pub host_cpus: Option<Text>,
    pub governor: Option<Text>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCpus {
    /// Every online CPU no vCPU is pinned to; the plan makes it a list.
    Auto,
    List(CpuSet),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Isolation {
    pub host_cpus: HostCpus,
    /// The cpufreq governor of the vCPUs' CPUs while the VM runs; None leaves it.
    pub governor: Option<String>,
}

impl Validator {
    pub(super) fn isolation(
        &mut self,
        raw: &RawProfile,
        pinning: Option<&Pinning>,
    ) -> Option<Isolation> {
        let section_raw = raw.isolation.as_ref()?;
        let i = section_raw.get_ref();
        let Some(pinning) = pinning else {
            self.error(
                section_raw.span(),
                "isolation",
                "[isolation] keeps the host off the vCPUs' CPUs, but without [pinning] the vCPUs have \
                 no CPUs of their own; add [pinning] (vcpus = \"auto\" picks them)",
            );
            return None;
        };
        let host_cpus = match &i.host_cpus {
            None => HostCpus::Auto,
            Some(text) if text.get_ref() == "auto" => HostCpus::Auto,
            Some(text) => match self.parse::<CpuSet>(text, "isolation.host_cpus") {
                None => HostCpus::Auto,
                Some(set) => {
                    let shared: Vec<usize> = pinning
                        .vcpus
                        .iter()
                        .copied()
                        .filter(|c| set.contains(*c))
                        .collect();
                    if !shared.is_empty() {
                        self.error(
                            text.span(),
                            "isolation.host_cpus",
                            format!(
                                "includes CPUs {} that vCPUs are pinned to; the host's CPUs must be \
                                 others (or \"auto\": every CPU no vCPU uses)",
                                CpuSet::from_cpus(shared)
                            ),
                        );
                    }
                    HostCpus::List(set)
                }
            },
        };
        let governor = match &i.governor {
            None => Some("performance".to_string()),
            Some(text) if text.get_ref() == "keep" => None,
            Some(text) => {
                let name = text.get_ref();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.error(
                        text.span(),
                        "isolation.governor",
                        format!(
                            "`{name}` is not a cpufreq governor name; use \"performance\" (the default), \
                             another governor the kernel offers (scaling_available_governors), or \"keep\""
                        ),
                    );
                }
                Some(name.clone())
            }
        };
        Some(Isolation {
            host_cpus,
            governor,
        })
    }
}
