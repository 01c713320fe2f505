//! `<cpu>`, `<features>` (Hyper-V enlightenments, KVM settings) and a `-cpu` from
//! `<qemu:commandline>` → `[cpu]`: topology, model, flags, enlightenments and vendor id.

use std::collections::{BTreeMap, BTreeSet};

use roxmltree::Node;

use super::read::{child, elements, is_on};
use super::{flag, int, section, spanned, text, text_list, value_of, Importer};
use crate::libvirt::NoteKind;
use crate::model::cpu::{RawHyperv, HYPERV_KNOWN, HYPERV_KVM_DEFAULT, HYPERV_REQUIRES};

/// How the CPU is being read: finished into `[cpu]` once the whole domain is seen.
#[derive(Default)]
pub(super) struct CpuReading {
    /// `<domain type='qemu'>`.
    pub(super) tcg: bool,
    /// `<vcpu>`: the most vCPUs the domain has.
    pub(super) vcpus: u32,
    /// `<vcpu current='N'>` when fewer are online at start.
    pub(super) current: Option<u32>,
    /// `<vcpus>`: each vCPU's `enabled`, by id.
    pub(super) enabled: BTreeMap<u32, bool>,
    /// sockets, cores, threads of `<topology>`.
    pub(super) topology: Option<(u32, u32, u32)>,
    /// `+name`/`-name` in the order found; the last one of a property wins.
    pub(super) features: Vec<String>,
    /// Enlightenments in the order found; put in vmrun's order at the end.
    pub(super) hyperv: BTreeSet<String>,
    pub(super) hyperv_seen: bool,
    /// `<hyperv mode='passthrough'>` or `hv-passthrough`: every enlightenment the host has.
    pub(super) hyperv_passthrough: bool,
}

impl CpuReading {
    /// The libvirt vCPU ids the profile starts, in order: the ones online at start.
    pub(super) fn online(&self) -> Vec<u32> {
        let Some(current) = self.current else {
            return (0..self.vcpus).collect();
        };
        let enabled: Vec<u32> = self
            .enabled
            .iter()
            .filter(|(id, on)| **on && **id < self.vcpus)
            .map(|(id, _)| *id)
            .collect();
        if enabled.len() == current as usize {
            enabled
        } else {
            (0..current).collect()
        }
    }
}

/// The enlightenment a libvirt `<hyperv>` child or a QEMU `hv-`/`hv_` property stands for.
fn hyperv_name(libvirt_or_qemu: &str) -> String {
    libvirt_or_qemu.replace('_', "-")
}

/// A Hyper-V vendor id as vmrun takes it: at most 12 printable ASCII characters (spaces
/// included, as libvirt and QEMU take them).
fn vendor_id(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(12)
        .collect()
}

impl Importer {
    pub(super) fn features(&mut self, node: Node) {
        for feature in elements(node) {
            match feature.tag_name().name() {
                // QEMU gives a q35 guest all three without being asked.
                "acpi" | "apic" | "pae" => {}
                "hyperv" => self.hyperv_features(feature),
                "kvm" => {
                    for item in elements(feature) {
                        let on = is_on(item, "state");
                        let features = &mut self.cpu.features;
                        match (item.tag_name().name(), on) {
                            ("hidden", true) => {
                                section(&mut self.profile.cpu).hide_hypervisor = flag(true)
                            }
                            ("hint-dedicated", true) => features.push("+kvm-hint-dedicated".into()),
                            ("poll-control", true) => features.push("+kvm-poll-control".into()),
                            ("pv-ipi", false) => features.push("-kvm-pv-ipi".into()),
                            ("hidden" | "hint-dedicated" | "poll-control", false)
                            | ("pv-ipi", true) => {}
                            _ => self.untranslated(item, "vmrun has no key for this KVM setting"),
                        }
                    }
                }
                "smm" => {
                    if !is_on(feature, "state") {
                        self.untranslated(
                            feature,
                            "QEMU's q35 has SMM on by default; vmrun cannot turn it off",
                        );
                    }
                }
                "vmport" => {
                    if is_on(feature, "state") {
                        self.untranslated(feature, "vmrun has no VMware port");
                    } else {
                        self.extra_args(["-machine", "vmport=off"]);
                    }
                }
                _ => self.untranslated(feature, "vmrun has no key for this feature"),
            }
        }
    }

    fn hyperv_features(&mut self, node: Node) {
        self.cpu.hyperv_seen = true;
        let passthrough = node.attribute("mode") == Some("passthrough");
        self.cpu.hyperv_passthrough |= passthrough;
        for item in elements(node) {
            if !is_on(item, "state") {
                continue;
            }
            let libvirt_name = item.tag_name().name();
            match libvirt_name {
                "vendor_id" => {
                    let value = item.attribute("value").unwrap_or("").to_string();
                    self.set_vendor_id(item, value);
                }
                // Passthrough turns on every enlightenment the host has; the list is moot.
                _ if passthrough => {}
                "spinlocks" => {
                    let retries = item
                        .attribute("retries")
                        .and_then(|r| r.parse::<u32>().ok());
                    if retries.is_some_and(|r| r != 0x1fff) {
                        self.changed(item, "vmrun always sets 8191 retries (0x1fff)");
                    }
                    self.cpu.hyperv.insert("spinlocks".into());
                }
                "stimer" => {
                    self.cpu.hyperv.insert("stimer".into());
                    if child(item, "direct").is_some_and(|d| is_on(d, "state")) {
                        self.cpu.hyperv.insert("stimer-direct".into());
                    }
                }
                "tlbflush" => {
                    self.cpu.hyperv.insert("tlbflush".into());
                    if elements(item).next().is_some() {
                        self.changed(item, "vmrun has no extended or direct TLB flush");
                    }
                }
                name if HYPERV_KNOWN.contains(&hyperv_name(name).as_str()) => {
                    self.cpu.hyperv.insert(hyperv_name(name));
                }
                _ => self.untranslated(item, "vmrun does not know this enlightenment"),
            }
        }
    }

    fn set_vendor_id(&mut self, node: Node, value: String) {
        let cleaned = vendor_id(&value);
        if cleaned.is_empty() {
            self.untranslated(node, "an empty vendor id");
            return;
        }
        if cleaned != value {
            self.changed(
                node,
                format!("`{value}` is too long or not printable ASCII; vmrun takes `{cleaned}`"),
            );
        }
        section(&mut self.profile.cpu).hv_vendor_id = text(cleaned);
    }

    pub(super) fn cpu(&mut self, node: Node) {
        let model = match node.attribute("mode").unwrap_or("custom") {
            "host-passthrough" => "host".to_string(),
            "host-model" => {
                self.changed(
                    node,
                    "the profile passes the host CPU through (\"host\"); libvirt computed a named model close to it",
                );
                "host".to_string()
            }
            "maximum" => "max".to_string(),
            _ => child(node, "model")
                .map(super::read::text_of)
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "qemu64".into()),
        };
        section(&mut self.profile.cpu).model = text(model);
        if node.attribute("migratable") == Some("off") {
            self.cpu.features.push("-migratable".into());
        }
        for item in elements(node) {
            let features = &mut self.cpu.features;
            match item.tag_name().name() {
                "model" => {}
                "topology" => {
                    let field = |name: &str| {
                        item.attribute(name)
                            .and_then(|v| v.parse::<u32>().ok())
                            .unwrap_or(1)
                            .clamp(1, 255)
                    };
                    let (dies, clusters) = (field("dies"), field("clusters"));
                    if dies * clusters != 1 {
                        self.changed(
                            item,
                            "vmrun has no dies or clusters; their cores are counted as more cores",
                        );
                    }
                    self.cpu.topology = Some((
                        field("sockets"),
                        field("cores") * dies * clusters,
                        field("threads"),
                    ));
                }
                "feature" => {
                    let Some(name) = item.attribute("name") else {
                        continue;
                    };
                    match item.attribute("policy").unwrap_or("require") {
                        "require" | "force" => features.push(format!("+{name}")),
                        "disable" | "forbid" => features.push(format!("-{name}")),
                        _ => self.untranslated(item, "QEMU has no optional CPU features"),
                    }
                }
                "cache" => match (item.attribute("mode"), item.attribute("level")) {
                    (Some("passthrough"), _) => features.push("+host-cache-info".into()),
                    (Some("emulate"), Some("3")) => features.push("+l3-cache".into()),
                    (Some("disable"), _) => features.push("-l3-cache".into()),
                    _ => self.untranslated(item, "no QEMU CPU property matches this cache mode"),
                },
                _ => self.untranslated(item, "vmrun has no key for this CPU setting"),
            }
        }
    }

    /// A `-cpu` from `<qemu:commandline>`: QEMU takes the last `-cpu`, so it overrides `<cpu>`.
    pub(super) fn qemu_cpu(&mut self, parts: &[String]) {
        let Some((model, properties)) = parts.split_first() else {
            return;
        };
        section(&mut self.profile.cpu).model = text(model.clone());
        for property in properties {
            let (name, value) = match property.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => match property.split_at_checked(1) {
                    Some(("+", name)) => (name.to_string(), Some("on".into())),
                    Some(("-", name)) => (name.to_string(), Some("off".into())),
                    _ => (property.clone(), None),
                },
            };
            let on = !matches!(value.as_deref(), Some("off" | "false" | "no"));
            let hv = name
                .strip_prefix("hv_")
                .or_else(|| name.strip_prefix("hv-"))
                .map(hyperv_name);
            match (name.as_str(), hv) {
                ("kvm", _) => section(&mut self.profile.cpu).hide_hypervisor = flag(!on),
                (_, Some(hv)) if hv == "vendor-id" => {
                    self.cpu.hyperv_seen = true;
                    let vendor = value.unwrap_or_default();
                    let cleaned = vendor_id(&vendor);
                    if cleaned != vendor {
                        self.note(
                            "<qemu:arg value='-cpu'>",
                            NoteKind::Changed,
                            format!("hv_vendor_id `{vendor}`: vmrun takes `{cleaned}`"),
                        );
                    }
                    section(&mut self.profile.cpu).hv_vendor_id =
                        Some(cleaned).filter(|c| !c.is_empty()).and_then(text);
                }
                (_, Some(hv)) if hv == "passthrough" => {
                    self.cpu.hyperv_seen = true;
                    self.cpu.hyperv_passthrough = on;
                }
                (_, Some(hv)) if HYPERV_KNOWN.contains(&hv.as_str()) => {
                    self.cpu.hyperv_seen = true;
                    if on {
                        self.cpu.hyperv.insert(hv);
                    } else {
                        self.cpu.hyperv.remove(&hv);
                    }
                }
                (_, Some(hv)) => self.note(
                    "<qemu:arg value='-cpu'>",
                    NoteKind::Untranslated,
                    format!("vmrun does not know the enlightenment `{hv}`"),
                ),
                _ => self
                    .cpu
                    .features
                    .push(format!("{}{name}", if on { '+' } else { '-' })),
            }
        }
    }

    /// `[cpu]` from what was read: the vCPUs online at start in the domain's topology, the
    /// model, one entry per CPU property, the enlightenments.
    pub(super) fn finish_cpu(&mut self) {
        let online = self.cpu.online();
        let started = online.len() as u32;
        let declared = self.cpu.vcpus;
        let mut topology = self.cpu.topology;
        if let Some((sockets, cores, threads)) = topology {
            if sockets * cores * threads != declared {
                self.note(
                    "<cpu><topology>",
                    NoteKind::Changed,
                    format!(
                        "{sockets} sockets × {cores} cores × {threads} threads is not the {declared} vCPUs of <vcpu>; \
                         the profile has {started} sockets of one core"
                    ),
                );
                topology = None;
            }
        }
        if started < declared {
            // The same shape with fewer cores, or fewer sockets of the same cores.
            let fitted = topology.and_then(|(sockets, _, threads)| {
                if started % (sockets * threads) == 0 {
                    Some((sockets, started / (sockets * threads), threads))
                } else if started % threads == 0 {
                    Some((1, started / threads, threads))
                } else {
                    None
                }
            });
            let shape = match fitted {
                Some((s, c, t)) => format!("{s} × {c} × {t} (sockets × cores × threads)"),
                None => format!("{started} sockets of one core"),
            };
            self.note(
                format!("<vcpu current='{started}'>"),
                NoteKind::Changed,
                format!(
                    "{started} of {declared} vCPUs were online at start (libvirt's vCPUs {online:?}) and \
                     vmrun has no vCPU hot-plug: the profile starts those {started} as {shape}, each \
                     pinned as libvirt pinned it; raise the topology to start all {declared}"
                ),
            );
            topology = fitted;
        }
        let (sockets, cores, threads) = topology.unwrap_or((started, 1, 1));
        let threads_from_host = self.pinning.auto && self.pinning.threads_from_host;
        let cpu = section(&mut self.profile.cpu);
        cpu.sockets = int(sockets);
        cpu.cores = int(cores);
        // With vcpus = "auto" and no threads in the profile, the host's cores decide them.
        if !threads_from_host {
            cpu.threads = int(threads);
        }
        if cpu.model.is_none() {
            // libvirt's CPU when the domain names none.
            cpu.model = text("qemu64");
        }
        if self.cpu.tcg && value_of(&cpu.model) == Some("host") {
            cpu.model = text("max");
            self.note(
                "<domain type='qemu'>",
                NoteKind::Changed,
                "the host CPU cannot be passed through under TCG; the profile uses \"max\"",
            );
        }
        self.finish_features();
        self.finish_hyperv();
    }

    fn finish_features(&mut self) {
        let mut features = std::mem::take(&mut self.cpu.features);
        features.dedup();
        let (valid, invalid): (Vec<String>, Vec<String>) =
            features.into_iter().partition(|feature| {
                let name = &feature[1..];
                name.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
        if !invalid.is_empty() {
            self.note(
                "<cpu><feature>",
                NoteKind::Untranslated,
                format!(
                    "not CPU property names QEMU could take: {}",
                    invalid.join(", ")
                ),
            );
        }
        // Keep one entry per property: the last one wins, as on QEMU's command line.
        let mut seen = BTreeSet::new();
        let mut kept: Vec<String> = Vec::new();
        for feature in valid.iter().rev() {
            if seen.insert(feature[1..].to_string()) {
                kept.push(feature.clone());
            }
        }
        kept.reverse();
        if !kept.is_empty() {
            section(&mut self.profile.cpu).features = text_list(kept);
        }
    }

    fn finish_hyperv(&mut self) {
        if self.cpu.hyperv_passthrough {
            if self.cpu.tcg {
                self.note(
                    "<hyperv mode='passthrough'>",
                    NoteKind::Changed,
                    "left out under TCG: QEMU's hv-passthrough needs KVM",
                );
            } else {
                section(&mut self.profile.cpu).hyperv =
                    Some(spanned(RawHyperv::Word("passthrough".into())));
                return;
            }
        }
        let hyperv = &mut self.cpu.hyperv;
        if hyperv.is_empty() || self.cpu.hyperv_passthrough {
            let cpu = section(&mut self.profile.cpu);
            if cpu.hv_vendor_id.take().is_some() && !self.cpu.hyperv_seen {
                self.note(
                    "<hyperv><vendor_id>",
                    NoteKind::Untranslated,
                    "a vendor id without enlightenments has no effect",
                );
            }
            return;
        }
        if self.cpu.tcg {
            let refused: Vec<String> = [
                "vpindex",
                "synic",
                "stimer",
                "stimer-direct",
                "tlbflush",
                "ipi",
            ]
            .iter()
            .filter(|name| hyperv.remove(**name))
            .map(|name| name.to_string())
            .collect();
            if !refused.is_empty() {
                self.note(
                    "<hyperv>",
                    NoteKind::Changed,
                    format!(
                        "left out under TCG, where QEMU refuses them (they need VP_INDEX): {}",
                        refused.join(", ")
                    ),
                );
            }
        }
        loop {
            let mut added = Vec::new();
            for (feature, required) in HYPERV_REQUIRES {
                if self.cpu.hyperv.contains(*feature) {
                    for need in *required {
                        if !self.cpu.hyperv.contains(*need) {
                            added.push((*feature, *need));
                        }
                    }
                }
            }
            if added.is_empty() {
                break;
            }
            for (feature, need) in added {
                self.cpu.hyperv.insert(need.to_string());
                self.note(
                    "<hyperv>",
                    NoteKind::Changed,
                    format!("added `{need}`: QEMU refuses `{feature}` without it"),
                );
            }
        }
        let ordered: Vec<String> = HYPERV_KNOWN
            .iter()
            .filter(|name| self.cpu.hyperv.contains(**name))
            .map(|name| name.to_string())
            .collect();
        let value = if !self.cpu.tcg && ordered == HYPERV_KVM_DEFAULT {
            RawHyperv::Enabled(true)
        } else {
            RawHyperv::List(ordered)
        };
        section(&mut self.profile.cpu).hyperv = Some(spanned(value));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{domain, import_ok, noted};
    use super::*;

    #[test]
    fn vendor_ids_keep_spaces_and_lose_what_cpuid_cannot_hold() {
        assert_eq!(vendor_id("Microsoft Hv"), "Microsoft Hv");
        assert_eq!(vendor_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(vendor_id("a\tb"), "a_b");
    }

    #[test]
    fn hyperv_passthrough_is_kept_with_its_vendor_id() {
        let imported = import_ok(&domain(
            "<features><hyperv mode='passthrough'><vendor_id state='on' value='AMD is best'/>\
             </hyperv></features><cpu mode='host-passthrough'/>",
        ));
        assert!(
            imported
                .profile
                .contains("hv_vendor_id = \"AMD is best\"\nhyperv = \"passthrough\"\n"),
            "{}",
            imported.profile
        );
        assert!(imported.notes.is_empty(), "{:?}", imported.notes);
        let imported = import_ok(
            "<domain type='qemu'><name>t</name><memory unit='MiB'>1024</memory>\
             <features><hyperv mode='passthrough'/></features></domain>",
        );
        assert!(
            !imported.profile.contains("hyperv ="),
            "{}",
            imported.profile
        );
        assert!(noted(&imported, "passthrough", "needs KVM"));
    }

    #[test]
    fn the_usual_enlightenments_become_hyperv_true_and_requirements_are_added() {
        let all: String = HYPERV_KVM_DEFAULT
            .iter()
            .filter(|n| **n != "time")
            .map(|n| format!("<{} state='on'/>", n.replace('-', "_")))
            .collect();
        let imported = import_ok(&domain(&format!(
            "<features><hyperv>{all}</hyperv></features><clock><timer name='hypervclock'/></clock>"
        )));
        assert!(
            imported.profile.contains("hyperv = true"),
            "{}",
            imported.profile
        );
        let imported = import_ok(&domain(
            "<features><hyperv><synic state='on'/></hyperv></features>",
        ));
        assert!(imported
            .profile
            .contains("hyperv = [\"vpindex\", \"synic\"]"));
        assert!(noted(&imported, "<hyperv>", "added `vpindex`"));
    }

    #[test]
    fn features_keep_the_last_setting_of_each_property() {
        let imported = import_ok(&domain(
            "<cpu mode='host-passthrough' migratable='off'><feature policy='require' name='topoext'/>\
             <feature policy='disable' name='topoext'/><cache mode='passthrough'/></cpu>",
        ));
        assert!(
            imported
                .profile
                .contains("features = [\"-migratable\", \"-topoext\", \"+host-cache-info\"]"),
            "{}",
            imported.profile
        );
    }

    #[test]
    fn offline_vcpus_are_not_started_and_the_topology_keeps_its_shape() {
        let imported = import_ok(&domain(
            "<vcpu current='20'>26</vcpu>\
             <cpu mode='host-passthrough'><topology sockets='1' cores='13' threads='2'/></cpu>",
        ));
        assert!(
            imported
                .profile
                .contains("[cpu]\nsockets = 1\ncores = 10\nthreads = 2\n"),
            "{}",
            imported.profile
        );
        assert!(noted(&imported, "<vcpu current='20'>", "20 of 26 vCPUs"));
        // Which ones were online comes from <vcpus>.
        let mut reading = CpuReading {
            vcpus: 4,
            current: Some(2),
            ..CpuReading::default()
        };
        reading.enabled = BTreeMap::from([(0, true), (1, false), (2, false), (3, true)]);
        assert_eq!(reading.online(), vec![0, 3]);
        reading.enabled.insert(1, true);
        assert_eq!(reading.online(), vec![0, 1]);
    }

    #[test]
    fn a_qemu_cpu_argument_overrides_the_cpu_element() {
        let imported = import_ok(&domain("<cpu mode='host-passthrough'/>"));
        assert!(imported.profile.contains("model = \"host\""));
        let mut importer = Importer::default();
        importer.qemu_cpu(&[
            "host".into(),
            "kvm=off".into(),
            "hv_vendor_id=whatever".into(),
            "hv-passthrough".into(),
            "+invtsc".into(),
        ]);
        let cpu = importer.profile.cpu.as_ref().unwrap().get_ref();
        assert_eq!(
            cpu.hide_hypervisor.as_ref().map(|f| *f.get_ref()),
            Some(true)
        );
        assert_eq!(value_of(&cpu.hv_vendor_id), Some("whatever"));
        assert!(importer.cpu.hyperv_passthrough);
        assert_eq!(importer.cpu.features, vec!["+invtsc".to_string()]);
    }
}
