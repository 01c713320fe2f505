//! `<cputune>` → `[pinning]`: the host CPU of each started vCPU, the emulator and iothread
//! CPUs, the scheduler. CPU numbers are bounded as in profiles.

use std::collections::{BTreeMap, BTreeSet};

use roxmltree::Node;

use super::read::{elements, parse_cpuset, CpusetError};
use super::{int, section, spanned, text, ImportError, Importer};
use crate::libvirt::NoteKind;
use crate::model::pinning::RawVcpus;
use crate::model::CpuSet;

/// `<cputune>` as read, and what `<metadata>` says about it.
#[derive(Default)]
pub(super) struct PinningReading {
    /// libvirt vCPU id → its cpuset.
    vcpupin: BTreeMap<u32, BTreeSet<usize>>,
    emulatorpin: Option<BTreeSet<usize>>,
    iothreadpin: BTreeSet<usize>,
    /// policy, priority.
    scheduler: Option<(String, u8)>,
    /// `<vmrun:pinning vcpus='auto'>`: the `<vcpupin>` entries are one host's answer to "auto".
    pub(super) auto: bool,
    /// `<vmrun:pinning threads='host'>`: the profile gave no `cpu.threads`.
    pub(super) threads_from_host: bool,
}

impl Importer {
    /// A cpuset attribute: `None` (noted) when it cannot be read, an error when it names a CPU
    /// no host has.
    fn cpuset(
        &mut self,
        item: Node,
        attribute: &str,
    ) -> Result<Option<BTreeSet<usize>>, ImportError> {
        match item.attribute(attribute).map(parse_cpuset) {
            Some(Ok(cpus)) => Ok(Some(cpus)),
            Some(Err(CpusetError::TooLarge(message))) => Err(ImportError::Invalid {
                element: "cputune",
                message,
            }),
            Some(Err(CpusetError::Unreadable)) | None => Ok(None),
        }
    }

    pub(super) fn cputune(&mut self, node: Node) -> Result<(), ImportError> {
        let mut schedulers: BTreeMap<usize, (String, u8)> = BTreeMap::new();
        for item in elements(node) {
            match item.tag_name().name() {
                "vcpupin" => {
                    let vcpu = item.attribute("vcpu").and_then(|v| v.parse::<u32>().ok());
                    match (vcpu, self.cpuset(item, "cpuset")?) {
                        (Some(vcpu), Some(cpus)) if !cpus.is_empty() => {
                            self.pinning.vcpupin.insert(vcpu, cpus);
                        }
                        _ => self.untranslated(item, "cannot read its vcpu or cpuset"),
                    }
                }
                "emulatorpin" => match self.cpuset(item, "cpuset")? {
                    Some(cpus) if !cpus.is_empty() => self.pinning.emulatorpin = Some(cpus),
                    _ => self.untranslated(item, "cannot read its cpuset"),
                },
                "iothreadpin" => match self.cpuset(item, "cpuset")? {
                    Some(cpus) => {
                        let pins = &mut self.pinning.iothreadpin;
                        if !pins.is_empty() && *pins != cpus {
                            self.changed(
                                item,
                                "vmrun has one CPU set for all iothreads: the union of every iothreadpin",
                            );
                        }
                        self.pinning.iothreadpin.extend(cpus);
                    }
                    None => self.untranslated(item, "cannot read its cpuset"),
                },
                "vcpusched" => {
                    let vcpus = self.cpuset(item, "vcpus")?;
                    let policy = item.attribute("scheduler").unwrap_or("");
                    let priority = item
                        .attribute("priority")
                        .and_then(|p| p.parse::<u8>().ok())
                        .unwrap_or(0);
                    let scheduler = match policy {
                        "rr" | "fifo" => {
                            if priority == 0 {
                                self.changed(item, "real-time priority 0 does not exist on Linux; the profile uses 1");
                            }
                            (policy.to_string(), priority.clamp(1, 99))
                        }
                        "other" => ("other".to_string(), 0),
                        _ => {
                            self.changed(
                                item,
                                format!(
                                    "vmrun has no `{policy}` policy; those vCPUs get \"other\""
                                ),
                            );
                            ("other".to_string(), 0)
                        }
                    };
                    for vcpu in vcpus.unwrap_or_default() {
                        schedulers.insert(vcpu, scheduler.clone());
                    }
                }
                _ => self.untranslated(
                    item,
                    "vmrun pins and schedules threads; it sets no cgroup shares, periods or quotas",
                ),
            }
        }
        let mut counts: BTreeMap<(String, u8), usize> = BTreeMap::new();
        for scheduler in schedulers.values() {
            *counts.entry(scheduler.clone()).or_default() += 1;
        }
        // Real-time wins a tie: it is what the domain asked for on purpose.
        let chosen = counts
            .iter()
            .max_by_key(|((policy, _), count)| (**count, policy != "other"))
            .map(|(scheduler, _)| scheduler.clone());
        if counts.len() > 1 {
            if let Some((policy, priority)) = &chosen {
                self.changed(
                    node,
                    format!(
                        "vcpusched differs between vCPUs; vmrun has one policy for all: {policy} {priority}"
                    ),
                );
            }
        }
        self.pinning.scheduler = chosen;
        Ok(())
    }

    /// `[pinning]` for the vCPUs the profile starts (the ones online at start): vmrun pins every
    /// vCPU or none, so a started vCPU without `<vcpupin>` goes to the first emulator CPU, and
    /// the pins of offline vCPUs are left with them.
    pub(super) fn finish_pinning(&mut self) {
        let reading = std::mem::take(&mut self.pinning);
        if reading.vcpupin.is_empty() {
            if reading.emulatorpin.is_some() || !reading.iothreadpin.is_empty() {
                self.note(
                    "<cputune>",
                    NoteKind::Untranslated,
                    "emulatorpin and iothreadpin without vcpupin: vmrun pins QEMU's threads only \
                     together with every vCPU",
                );
            }
            return;
        }
        let online = self.cpu.online();
        let fallback = reading
            .emulatorpin
            .as_ref()
            .and_then(|cpus| cpus.first().copied());
        let unpinned: Vec<u32> = online
            .iter()
            .copied()
            .filter(|vcpu| !reading.vcpupin.contains_key(vcpu))
            .collect();
        if !unpinned.is_empty() {
            let Some(cpu) = fallback else {
                self.note(
                    "<cputune>",
                    NoteKind::Untranslated,
                    format!(
                        "vCPUs {unpinned:?} have no vcpupin and there is no emulatorpin to put them on; \
                         vmrun pins every vCPU or none, so the profile has no [pinning]"
                    ),
                );
                return;
            };
            self.note(
                "<cputune>",
                NoteKind::Changed,
                format!(
                    "vCPUs {unpinned:?} have no vcpupin (libvirt lets them float); vmrun pins every \
                     vCPU, so they run on host CPU {cpu}, the first emulatorpin CPU"
                ),
            );
        }
        let wide: Vec<u32> = online
            .iter()
            .copied()
            .filter(|vcpu| reading.vcpupin.get(vcpu).is_some_and(|cpus| cpus.len() > 1))
            .collect();
        if !wide.is_empty() {
            self.note(
                "<vcpupin>",
                NoteKind::Changed,
                format!("vCPUs {wide:?} may run on several host CPUs; vmrun pins each to the first of them"),
            );
        }
        let vcpus: Vec<usize> = online
            .iter()
            .filter_map(|vcpu| match reading.vcpupin.get(vcpu) {
                Some(cpus) => cpus.first().copied(),
                None => fallback,
            })
            .collect();
        let pinning = section(&mut self.profile.pinning);
        pinning.vcpus = Some(spanned(if reading.auto {
            // The <vcpupin> entries are one host's answer to "auto"; the profile asks again.
            RawVcpus::Word("auto".into())
        } else {
            RawVcpus::List(vcpus.into_iter().map(|cpu| spanned(cpu as i64)).collect())
        }));
        if let Some(emulator) = reading.emulatorpin {
            pinning.emulator = text(CpuSet::from_cpus(emulator).to_list_string());
        }
        if !reading.iothreadpin.is_empty() {
            pinning.iothreads = text(CpuSet::from_cpus(reading.iothreadpin).to_list_string());
        }
        match reading.scheduler {
            Some((policy, priority)) if policy != "other" => {
                pinning.scheduler = text(policy);
                pinning.priority = int(priority);
            }
            // libvirt leaves vCPUs under the normal policy unless vcpusched says otherwise.
            _ => pinning.scheduler = text("other"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{domain, import_ok, noted};
    use super::super::*;

    #[test]
    fn pins_emulator_iothreads_and_scheduler_become_the_pinning_table() {
        let imported = import_ok(&domain(
            "<vcpu>2</vcpu><cputune><vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='1' cpuset='3-4'/>\
             <emulatorpin cpuset='0-1'/><iothreadpin iothread='1' cpuset='5'/>\
             <vcpusched vcpus='0-1' scheduler='fifo' priority='10'/></cputune>",
        ));
        assert!(
            imported.profile.contains(
                "[pinning]\nvcpus = [2, 3]\nemulator = \"0-1\"\niothreads = \"5\"\n\
                 scheduler = \"fifo\"\npriority = 10\n"
            ),
            "{}",
            imported.profile
        );
        assert!(noted(&imported, "<vcpupin>", "[1]"));
    }

    #[test]
    fn cpu_numbers_beyond_any_host_are_refused_with_the_element() {
        for pin in [
            "<vcpupin vcpu='0' cpuset='0-4294967295'/>",
            "<emulatorpin cpuset='0-99999999'/>",
            "<iothreadpin iothread='1' cpuset='8192'/>",
            "<vcpusched vcpus='0-4294967295' scheduler='rr'/>",
        ] {
            let error = import(&domain(&format!("<cputune>{pin}</cputune>"))).unwrap_err();
            assert!(error.to_string().contains("at most 8191"), "{pin}: {error}");
        }
    }

    #[test]
    fn offline_vcpus_are_never_pinned_onto_the_emulator_cpu() {
        // 20 of 26 online: vCPUs 0-19 pinned to 2-21, the emulator on 0-1.
        let pins: String = (0..20)
            .map(|v| format!("<vcpupin vcpu='{v}' cpuset='{}'/>", v + 2))
            .collect();
        let imported = import_ok(&domain(&format!(
            "<vcpu current='20'>26</vcpu><cputune>{pins}<emulatorpin cpuset='0-1'/></cputune>"
        )));
        let expected: Vec<String> = (2..22).map(|c| c.to_string()).collect();
        assert!(
            imported
                .profile
                .contains(&format!("vcpus = [{}]\n", expected.join(", "))),
            "{}",
            imported.profile
        );
        assert!(imported.profile.contains("sockets = 20\n"));
        assert!(!noted(&imported, "<cputune>", "host CPU 0"));
    }

    #[test]
    fn online_vcpus_without_a_pin_go_to_the_first_emulator_cpu_with_a_note() {
        let imported = import_ok(&domain(
            "<vcpu>2</vcpu><cputune><vcpupin vcpu='0' cpuset='3'/><emulatorpin cpuset='1,2'/></cputune>",
        ));
        assert!(
            imported.profile.contains("vcpus = [3, 1]"),
            "{}",
            imported.profile
        );
        assert!(noted(&imported, "<cputune>", "host CPU 1"));
        let imported = import_ok(&domain(
            "<vcpu>2</vcpu><cputune><vcpupin vcpu='0' cpuset='3'/></cputune>",
        ));
        assert!(!imported.profile.contains("\n[pinning]\n"));
        assert!(noted(&imported, "<cputune>", "no [pinning]"));
    }
}
