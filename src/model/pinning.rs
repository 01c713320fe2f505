//! `[pinning]`: the host CPU of each vCPU, the emulator and iothread CPUs, the scheduler.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawPinning {
    pub vcpus: Option<Spanned<RawVcpus>>,
    pub emulator: Option<Text>,
    pub iothreads: Option<Text>,
    pub scheduler: Option<Text>,
    pub priority: Option<Int>,
}

/// `vcpus = [2, 8, 3, 9]` or `vcpus = "auto"`. Read by hand rather than as an untagged enum:
/// serde buffers untagged content, which would lose every entry's position.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum RawVcpus {
    List(Vec<Int>),
    Word(String),
}

impl<'de> Deserialize<'de> for RawVcpus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawVcpus;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of host CPU numbers or \"auto\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawVcpus, E> {
                Ok(RawVcpus::Word(text.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawVcpus, A::Error> {
                let mut list = Vec::new();
                while let Some(entry) = seq.next_element::<Int>()? {
                    list.push(entry);
                }
                Ok(RawVcpus::List(list))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    RoundRobin,
    Fifo,
    Other,
}

impl Scheduler {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::Fifo => "fifo",
            Scheduler::Other => "other",
        }
    }

    pub fn is_realtime(self) -> bool {
        !matches!(self, Scheduler::Other)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pinning {
    /// `vcpus[i]` is the host CPU of vCPU i. Empty while `auto` waits for the plan to choose.
    pub vcpus: Vec<usize>,
    /// `vcpus = "auto"`: the plan picks whole host cores from the host's topology.
    pub auto: bool,
    /// QEMU's other threads; `None` means every online host CPU not in `vcpus`.
    pub emulator: Option<CpuSet>,
    pub iothreads: Option<CpuSet>,
    pub scheduler: Scheduler,
    /// 0 for `other`, 1..=99 for the real-time policies.
    pub priority: u8,
}

impl Validator {
    pub(super) fn pinning(
        &mut self,
        raw: &RawProfile,
        cpu: &Cpu,
        machine: &Machine,
    ) -> Option<Pinning> {
        let section_raw = raw.pinning.as_ref()?;
        let p = section_raw.get_ref();
        let vcpu_count = cpu.topology.vcpus() as usize;
        let mut auto = false;
        let vcpus: Vec<usize> = match p.vcpus.as_ref().map(|v| (v.span(), v.get_ref())) {
            Some((span, RawVcpus::Word(word))) => {
                if word == "auto" {
                    auto = true;
                } else {
                    self.error(
                        span,
                        "pinning.vcpus",
                        format!(
                            "`{word}` is not \"auto\"; give \"auto\" or one host CPU per vCPU ({vcpu_count} entries)"
                        ),
                    );
                }
                Vec::new()
            }
            Some((span, RawVcpus::List(entries))) => {
                // A count that could not be read was reported; the list is not measured
                // against the default standing in for it.
                let count_known = ["cpu.sockets", "cpu.cores", "cpu.threads", "cpu"]
                    .iter()
                    .all(|key| !self.diags.has_error_for(key));
                if count_known && entries.len() != vcpu_count {
                    // The list `show` printed for "auto" has the host's threads per core, which
                    // a profile without `threads` does not: say what makes them agree.
                    let per_core = entries.len() / vcpu_count.max(1);
                    let threads_hint = if !cpu.threads_given
                        && per_core > 1
                        && entries.len() % vcpu_count.max(1) == 0
                    {
                        format!(
                            "; for {per_core} threads per core (as \"auto\" gives on this host's \
                             cores), write `threads = {per_core}` in [cpu]"
                        )
                    } else {
                        String::new()
                    };
                    self.error(
                        span,
                        "pinning.vcpus",
                        format!(
                            "has {} entries but the VM has {vcpu_count} vCPUs (cpu.sockets * cpu.cores * \
                             cpu.threads = {} * {} * {}); give one host CPU per vCPU{threads_hint}",
                            entries.len(),
                            cpu.topology.sockets,
                            cpu.topology.cores,
                            cpu.topology.threads
                        ),
                    );
                }
                let mut seen: HashMap<i64, usize> = HashMap::new();
                let mut cpus = Vec::new();
                for (index, entry) in entries.iter().enumerate() {
                    let key = format!("pinning.vcpus[{index}]");
                    if let Some(host_cpu) =
                        self.int_in(entry, &key, 0..=super::leaves::MAX_HOST_CPU as i64)
                    {
                        if let Some(first) = seen.insert(host_cpu, index) {
                            self.warning(
                                entry.span(),
                                &key,
                                format!(
                                    "vCPU {index} and vCPU {first} share host CPU {host_cpu}; \
                                     they will compete for it"
                                ),
                            );
                        }
                        cpus.push(host_cpu as usize);
                    }
                }
                cpus
            }
            None => {
                self.error(
                    section_raw.span(),
                    "pinning.vcpus",
                    format!(
                        "[pinning] needs `vcpus`: \"auto\", or one host CPU per vCPU ({vcpu_count} entries)"
                    ),
                );
                Vec::new()
            }
        };
        let emulator = p
            .emulator
            .as_ref()
            .and_then(|t| self.parse::<CpuSet>(t, "pinning.emulator"));
        if let (Some(set), Some(text)) = (&emulator, &p.emulator) {
            let shared: Vec<usize> = vcpus.iter().copied().filter(|c| set.contains(*c)).collect();
            if !shared.is_empty() {
                self.warning(
                    text.span(),
                    "pinning.emulator",
                    format!(
                        "shares host CPUs {} with the vCPUs; QEMU's I/O threads will preempt them",
                        CpuSet::from_cpus(shared)
                    ),
                );
            }
        }
        let iothreads = p
            .iothreads
            .as_ref()
            .and_then(|t| self.parse::<CpuSet>(t, "pinning.iothreads"));
        if let (Some(_), Some(text)) = (&iothreads, &p.iothreads) {
            if machine.iothreads == 0 {
                self.warning(
                    text.span(),
                    "pinning.iothreads",
                    "machine.iothreads = 0, so there is no iothread to pin",
                );
            }
        }
        let scheduler_options = [
            ("rr", Scheduler::RoundRobin),
            ("fifo", Scheduler::Fifo),
            ("other", Scheduler::Other),
        ];
        let scheduler = self.choose(
            &p.scheduler,
            "pinning.scheduler",
            &scheduler_options,
            Scheduler::RoundRobin,
        );
        let priority = match (&p.priority, scheduler) {
            (Some(raw), Scheduler::Other) if *raw.get_ref() != 0 => {
                self.error(
                    raw.span(),
                    "pinning.priority",
                    "scheduler \"other\" has no priority; remove `priority` or use scheduler \"rr\" or \"fifo\" (1 to 99)",
                );
                0
            }
            (Some(_), Scheduler::Other) | (None, Scheduler::Other) => 0,
            (Some(raw), _) => self.int_in(raw, "pinning.priority", 1..=99).unwrap_or(1) as u8,
            (None, _) => 1,
        };
        Some(Pinning {
            vcpus,
            auto,
            emulator,
            iothreads,
            scheduler,
            priority,
        })
    }
}
