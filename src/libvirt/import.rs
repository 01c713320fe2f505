//! libvirt domain XML → vmrun profile. Every element of the domain is looked at: it becomes a
//! profile key, or a note that says what was changed or left out. Nothing is dropped silently.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use roxmltree::Node;

use super::{Note, NoteKind, QEMU_NAMESPACE, VMRUN_NAMESPACE};
use crate::model::cpu::{HYPERV_KNOWN, HYPERV_KVM_DEFAULT, HYPERV_REQUIRES};
use crate::model::smbios::{smbios_problem, SMBIOS_FIELDS};
use crate::model::{ByteSize, CpuSet, PciAddress, VmName};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the XML cannot be read: {0}")]
    Xml(#[from] roxmltree::Error),
    #[error("this is not a libvirt domain: the document's root is <{0}>, not <domain>")]
    NotADomain(String),
    #[error("the domain has no <{0}>; libvirt itself requires it")]
    Missing(&'static str),
    #[error("<{element}>: {message}")]
    Invalid {
        element: &'static str,
        message: String,
    },
}

/// The profile text and what it does not carry as the domain had it.
#[derive(Clone, Debug)]
pub struct Imported {
    pub name: String,
    pub profile: String,
    pub notes: Vec<Note>,
}

/// Translates a libvirt domain (the text `virsh dumpxml` prints) into a profile.
pub fn import(xml_text: &str) -> Result<Imported, ImportError> {
    let document = roxmltree::Document::parse(xml_text)?;
    let domain = document.root_element();
    if domain.tag_name().name() != "domain" {
        return Err(ImportError::NotADomain(
            domain.tag_name().name().to_string(),
        ));
    }
    let mut importer = Importer::default();
    importer.domain(domain)?;
    let name = importer.draft.name.clone();
    let profile = importer.draft.render(&importer.notes);
    Ok(Imported {
        name,
        profile,
        notes: importer.notes,
    })
}

#[derive(Default)]
struct Importer {
    draft: Draft,
    notes: Vec<Note>,
    /// `<vmrun:profile>` said the firmware files were chosen by QEMU's descriptors.
    firmware_from_descriptors: bool,
    /// Enlightenments in the order found; put in vmrun's order at the end.
    hyperv: BTreeSet<String>,
    hyperv_seen: bool,
    /// `-object` values from `<qemu:commandline>`, by id, for the `-device` that names them.
    qemu_objects: BTreeMap<String, BTreeMap<String, String>>,
    qemu_drives: BTreeMap<String, BTreeMap<String, String>>,
    smbios_enabled: bool,
    /// `<smbios mode='host'/>`: vmrun's `smbios.from_host`.
    smbios_host: bool,
    /// `<sysinfo>` tables: SMBIOS type, the table's element, its entries (name, value).
    sysinfo: Option<Vec<SysinfoTable>>,
    boot_devs: Vec<String>,
    vcpus_current: Option<u32>,
}

struct SysinfoTable {
    kind: u8,
    element: String,
    entries: Vec<(String, String)>,
}

/// `[clock]` as read from `<clock>`'s timers.
struct ClockDraft {
    localtime: bool,
    rtc_driftfix: bool,
    hpet: bool,
    pit_lost_ticks: &'static str,
}

/// `[display] remote`, from `<graphics type='spice'|'vnc'>`.
struct RemoteDraft {
    protocol: &'static str,
    /// "unix" or ADDRESS:PORT.
    listen: String,
}

/// The profile being built: the keys vmrun has, as they will be written.
#[derive(Default)]
struct Draft {
    name: String,
    memory: u64,
    hugepages: Option<&'static str>,
    machine_type: String,
    tcg: bool,
    iothreads: u32,
    vcpus: u32,
    topology: Option<(u32, u32, u32)>,
    model: Option<String>,
    hide_hypervisor: bool,
    hv_vendor_id: Option<String>,
    hyperv: Vec<String>,
    hyperv_default: bool,
    features: Vec<String>,
    vcpupin: BTreeMap<u32, BTreeSet<usize>>,
    emulatorpin: Option<String>,
    iothreadpin: BTreeSet<usize>,
    scheduler: Option<(String, u8)>,
    seabios: bool,
    secure_boot: bool,
    firmware_files: Option<(String, String)>,
    disks: Vec<DiskDraft>,
    network: Option<NetworkDraft>,
    pci: Vec<PciDraft>,
    /// `(key, value)`: `device` (vendor:product) or `port` (bus-port path).
    usb: Vec<(&'static str, String)>,
    evdev: Vec<String>,
    grab_toggle: Option<String>,
    vga: Option<&'static str>,
    gui: Option<String>,
    serial_log: bool,
    looking_glass: Option<LookingGlassDraft>,
    single_gpu: Option<(Option<String>, Vec<String>)>,
    hooks: Vec<(String, Vec<String>)>,
    shutdown_timeout: Option<u64>,
    binary: Option<String>,
    extra_args: Vec<String>,
    suspend_off: bool,
    clock: Option<ClockDraft>,
    tpm: bool,
    smbios_fields: BTreeMap<&'static str, String>,
    smbios_from_host: bool,
    /// backend, device, server socket.
    audio: Option<(&'static str, &'static str, Option<String>)>,
    audio_user: Option<String>,
    audio_cookie: Option<String>,
    remote: Option<RemoteDraft>,
    password_file: Option<String>,
    pinning_auto: bool,
    threads_from_host: bool,
    /// host_cpus, governor.
    isolation: Option<(String, String)>,
    /// Host addresses of `[[pci]]` entries with `rescan = true`.
    rescan: BTreeSet<String>,
    sandbox_off: bool,
}

#[derive(Default, Clone)]
struct DiskDraft {
    path: String,
    format: Option<&'static str>,
    bus: &'static str,
    cdrom: bool,
    readonly: bool,
    cache: Option<&'static str>,
    discard: bool,
    boot_order: Option<u32>,
}

struct NetworkDraft {
    mode: &'static str,
    bridge: Option<String>,
    tap: Option<String>,
    mac: Option<String>,
    model: Option<&'static str>,
}

struct PciDraft {
    address: PciAddress,
    romfile: Option<String>,
    rombar: Option<bool>,
    boot_order: Option<u32>,
}

#[derive(Default)]
struct LookingGlassDraft {
    size: u64,
    path: String,
    owner: Option<String>,
    group: Option<String>,
    mode: Option<String>,
}

/// `<name attr='value' ...>` as the element appears, for notes.
fn describe(node: Node) -> String {
    let mut text = format!("<{}", qualified_name(node));
    for attribute in node.attributes().take(3) {
        let _ = write!(text, " {}='{}'", attribute.name(), attribute.value());
    }
    text.push('>');
    text
}

fn qualified_name(node: Node) -> String {
    match node.tag_name().namespace() {
        Some(QEMU_NAMESPACE) => format!("qemu:{}", node.tag_name().name()),
        _ => node.tag_name().name().to_string(),
    }
}

fn elements<'a, 'input>(node: Node<'a, 'input>) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children().filter(|child| child.is_element())
}

fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    elements(node).find(|child| child.tag_name().name() == name)
}

fn text_of(node: Node) -> String {
    node.text().unwrap_or("").trim().to_string()
}

fn is_on(node: Node, attribute: &str) -> bool {
    matches!(node.attribute(attribute), Some("on" | "yes"))
}

/// libvirt's size units (`KiB` when none is given).
fn size_in_bytes(value: &str, unit: Option<&str>) -> Option<u64> {
    let number: u64 = value.trim().parse().ok()?;
    let multiplier: u64 = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "K" | "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1000 * 1000 * 1000 * 1000,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// libvirt's cpuset syntax: `0-3,8,^2`.
fn parse_cpuset(text: &str) -> Option<BTreeSet<usize>> {
    let mut cpus = BTreeSet::new();
    let mut excluded = BTreeSet::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (target, item) = match item.strip_prefix('^') {
            Some(rest) => (&mut excluded, rest),
            None => (&mut cpus, item),
        };
        match item.split_once('-') {
            Some((first, last)) => {
                let (first, last): (usize, usize) =
                    (first.trim().parse().ok()?, last.trim().parse().ok()?);
                target.extend(first..=last);
            }
            None => {
                target.insert(item.parse().ok()?);
            }
        }
    }
    Some(cpus.difference(&excluded).copied().collect())
}

fn hex_field(node: Node, attribute: &str) -> Option<u32> {
    let value = node.attribute(attribute)?;
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .unwrap_or(value);
    u32::from_str_radix(digits, 16).ok()
}

/// Splits a QEMU option value at `,`; `,,` is a literal comma.
fn split_qemu_opts(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ',' {
            current.push(c);
        } else if chars.peek() == Some(&',') {
            chars.next();
            current.push(',');
        } else {
            parts.push(std::mem::take(&mut current));
        }
    }
    parts.push(current);
    parts
}

fn qemu_props(parts: &[String]) -> BTreeMap<String, String> {
    parts
        .iter()
        .filter_map(|part| part.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// The enlightenment a libvirt `<hyperv>` child or a QEMU `hv-`/`hv_` property stands for.
fn hyperv_name(libvirt_or_qemu: &str) -> String {
    libvirt_or_qemu.replace('_', "-")
}

impl Importer {
    fn note(&mut self, element: impl Into<String>, kind: NoteKind, message: impl Into<String>) {
        self.notes.push(Note {
            element: element.into(),
            message: message.into(),
            kind,
        });
    }

    fn untranslated(&mut self, node: Node, message: impl Into<String>) {
        self.note(describe(node), NoteKind::Untranslated, message);
    }

    fn changed(&mut self, node: Node, message: impl Into<String>) {
        self.note(describe(node), NoteKind::Changed, message);
    }

    fn domain(&mut self, domain: Node) -> Result<(), ImportError> {
        self.draft.tcg = domain.attribute("type") == Some("qemu");
        if let Some(kind) = domain
            .attribute("type")
            .filter(|t| !matches!(*t, "kvm" | "qemu"))
        {
            return Err(ImportError::Invalid {
                element: "domain",
                message: format!("type `{kind}` is not a QEMU domain (only kvm and qemu are)"),
            });
        }
        self.draft.machine_type = "q35".to_string();
        self.draft.vcpus = 1;
        // Metadata first: it says how to read the rest.
        if let Some(metadata) = child(domain, "metadata") {
            self.metadata(metadata);
        }
        for node in elements(domain) {
            let namespace = node.tag_name().namespace();
            match (namespace, node.tag_name().name()) {
                (Some(QEMU_NAMESPACE), "commandline") => self.qemu_commandline(node),
                (Some(QEMU_NAMESPACE), _) => {
                    self.untranslated(node, "a QEMU driver setting vmrun has no key for")
                }
                (_, "name") => self.name(node),
                (_, "uuid") => {
                    // Windows ties its activation to the SMBIOS UUID, which is this.
                    self.draft
                        .extra_args
                        .extend(["-uuid".to_string(), text_of(node)]);
                }
                (_, "title" | "description" | "metadata") => {}
                (_, "memory") => self.memory(node)?,
                (_, "currentMemory") => {
                    let current = size_in_bytes(&text_of(node), node.attribute("unit"));
                    let maximum = child(domain, "memory")
                        .and_then(|m| size_in_bytes(&text_of(m), m.attribute("unit")));
                    if current.is_some() && maximum.is_some() && current < maximum {
                        self.untranslated(
                            node,
                            "the guest starts with all of <memory>; vmrun has no balloon",
                        );
                    }
                }
                (_, "memoryBacking") => self.memory_backing(node),
                (_, "vcpu") => self.vcpu(node)?,
                (_, "vcpus") => self.untranslated(
                    node,
                    "every vCPU is present from the start; vmrun has no vCPU hot-plug",
                ),
                (_, "iothreads") => {
                    self.draft.iothreads = text_of(node).parse().unwrap_or(0);
                }
                (_, "cputune") => self.cputune(node),
                (_, "sysinfo") => self.sysinfo(node),
                (_, "os") => self.os(node),
                (_, "features") => self.features(node),
                (_, "cpu") => self.cpu(node),
                (_, "clock") => self.clock(node),
                (_, "on_poweroff" | "on_reboot") => {
                    let expected = if node.tag_name().name() == "on_poweroff" {
                        "destroy"
                    } else {
                        "restart"
                    };
                    if text_of(node) != expected {
                        self.untranslated(node, format!("vmrun always does `{expected}`"));
                    }
                }
                (_, "on_crash") => {
                    if text_of(node) != "destroy" {
                        self.untranslated(node, "vmrun stops when the guest crashes");
                    }
                }
                (_, "pm") => self.pm(node),
                (_, "devices") => self.devices(node)?,
                (_, _) => self.untranslated(node, "vmrun has no key for this"),
            }
        }
        if self.draft.name.is_empty() {
            return Err(ImportError::Missing("name"));
        }
        if self.draft.memory == 0 {
            return Err(ImportError::Missing("memory"));
        }
        self.apply_sysinfo();
        self.apply_boot_devs();
        self.finish_cpu();
        self.finish_pinning();
        Ok(())
    }

    fn name(&mut self, node: Node) {
        let written = text_of(node);
        let mut name: String = written
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        while name.starts_with(['.', '-']) {
            name.remove(0);
        }
        name.truncate(64);
        if name.is_empty() {
            name = "imported".to_string();
        }
        if name != written {
            self.changed(
                node,
                format!("`{written}` is not a valid vmrun name; the profile uses `{name}`"),
            );
        }
        debug_assert!(name.parse::<VmName>().is_ok());
        self.draft.name = name;
    }

    fn memory(&mut self, node: Node) -> Result<(), ImportError> {
        let bytes = size_in_bytes(&text_of(node), node.attribute("unit")).ok_or_else(|| {
            ImportError::Invalid {
                element: "memory",
                message: format!(
                    "`{}` with unit `{}` is not a size",
                    text_of(node),
                    node.attribute("unit").unwrap_or("KiB")
                ),
            }
        })?;
        // libvirt rounds guest RAM up to whole MiB on x86, so the guest gets the same.
        let rounded = bytes.div_ceil(ByteSize::MIB).max(64) * ByteSize::MIB;
        if rounded != bytes {
            self.changed(
                node,
                format!(
                    "{bytes} bytes rounded up to {} (libvirt rounds to whole MiB too; vmrun needs at least 64M)",
                    ByteSize(rounded)
                ),
            );
        }
        self.draft.memory = rounded;
        Ok(())
    }

    fn memory_backing(&mut self, node: Node) {
        for item in elements(node) {
            match item.tag_name().name() {
                "hugepages" => {
                    let page = child(item, "page").and_then(|page| {
                        size_in_bytes(page.attribute("size")?, page.attribute("unit"))
                    });
                    self.draft.hugepages = match page {
                        Some(bytes) if bytes == ByteSize::GIB => Some("1G"),
                        Some(bytes) if bytes == 2 * ByteSize::MIB => Some("2M"),
                        Some(bytes) => {
                            self.changed(
                                item,
                                format!("{bytes}-byte pages are not 2M or 1G; the profile uses 2M"),
                            );
                            Some("2M")
                        }
                        None => {
                            self.changed(
                                item,
                                "no page size given (the host's default): the profile uses 2M, \
                                 the x86 default; write \"1G\" if the host's default is 1G",
                            );
                            Some("2M")
                        }
                    };
                }
                "source" if item.attribute("type") == Some("memfd") => {}
                "nosharepages" => self.untranslated(
                    item,
                    "vmrun leaves KSM alone (passed-through guests have their memory pinned anyway)",
                ),
                "locked" => self.untranslated(
                    item,
                    "vmrun does not mlock guest RAM (VFIO pins it when a device is passed)",
                ),
                _ => self.untranslated(item, "vmrun has no key for this memory backing"),
            }
        }
    }

    fn vcpu(&mut self, node: Node) -> Result<(), ImportError> {
        let count: u32 = text_of(node).parse().map_err(|_| ImportError::Invalid {
            element: "vcpu",
            message: format!("`{}` is not a number of vCPUs", text_of(node)),
        })?;
        if count == 0 || count > 255 {
            return Err(ImportError::Invalid {
                element: "vcpu",
                message: format!("{count} vCPUs; vmrun takes 1 to 255"),
            });
        }
        self.draft.vcpus = count;
        if let Some(current) = node
            .attribute("current")
            .and_then(|c| c.parse::<u32>().ok())
        {
            if current < count {
                self.vcpus_current = Some(current);
                self.changed(
                    node,
                    format!(
                        "{current} of {count} vCPUs were online at start; vmrun starts all {count}"
                    ),
                );
            }
        }
        if node.attribute("cpuset").is_some() && node.attribute("placement") != Some("auto") {
            self.changed(
                node,
                "the cpuset of unpinned vCPUs is not a vmrun key; see [pinning]",
            );
        }
        Ok(())
    }

    fn cputune(&mut self, node: Node) {
        let mut schedulers: BTreeMap<u32, (String, u8)> = BTreeMap::new();
        for item in elements(node) {
            match item.tag_name().name() {
                "vcpupin" => {
                    let vcpu = item.attribute("vcpu").and_then(|v| v.parse::<u32>().ok());
                    let cpus = item.attribute("cpuset").and_then(parse_cpuset);
                    match (vcpu, cpus) {
                        (Some(vcpu), Some(cpus)) if !cpus.is_empty() => {
                            self.draft.vcpupin.insert(vcpu, cpus);
                        }
                        _ => self.untranslated(item, "cannot read its vcpu or cpuset"),
                    }
                }
                "emulatorpin" => match item.attribute("cpuset").and_then(parse_cpuset) {
                    Some(cpus) if !cpus.is_empty() => {
                        self.draft.emulatorpin = Some(CpuSet::from_cpus(cpus).to_list_string());
                    }
                    _ => self.untranslated(item, "cannot read its cpuset"),
                },
                "iothreadpin" => match item.attribute("cpuset").and_then(parse_cpuset) {
                    Some(cpus) => {
                        if !self.draft.iothreadpin.is_empty() && self.draft.iothreadpin != cpus {
                            self.changed(
                                item,
                                "vmrun has one CPU set for all iothreads: the union of every iothreadpin",
                            );
                        }
                        self.draft.iothreadpin.extend(cpus);
                    }
                    None => self.untranslated(item, "cannot read its cpuset"),
                },
                "vcpusched" => {
                    let vcpus = item.attribute("vcpus").and_then(parse_cpuset);
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
                        schedulers.insert(vcpu as u32, scheduler.clone());
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
        self.draft.scheduler = chosen;
    }

    fn sysinfo(&mut self, node: Node) {
        if node.attribute("type") != Some("smbios") {
            self.untranslated(node, "only SMBIOS sysinfo has a QEMU equivalent");
            return;
        }
        let mut tables = Vec::new();
        for table in elements(node) {
            let kind = match table.tag_name().name() {
                "bios" => 0,
                "system" => 1,
                "baseBoard" => 2,
                "chassis" => 3,
                "oemStrings" => 11,
                _ => {
                    self.untranslated(table, "no QEMU -smbios type for it");
                    continue;
                }
            };
            let entries = elements(table)
                .filter(|e| e.tag_name().name() == "entry")
                .map(|entry| {
                    (
                        entry.attribute("name").unwrap_or("value").to_string(),
                        text_of(entry),
                    )
                })
                .collect();
            tables.push(SysinfoTable {
                kind,
                element: describe(table),
                entries,
            });
        }
        self.sysinfo = Some(tables);
    }

    /// Tables whose every entry is a `[smbios]` key become those keys; a table with an entry
    /// vmrun has no key for (baseBoard's location, OEM strings) stays whole as `-smbios`.
    fn apply_sysinfo(&mut self) {
        self.draft.smbios_from_host = self.smbios_host;
        let Some(tables) = self.sysinfo.take() else {
            return;
        };
        if !self.smbios_enabled && !self.smbios_host {
            self.note(
                "<sysinfo type='smbios'>",
                NoteKind::Untranslated,
                "not used by the domain either: its <os> has no <smbios mode='sysinfo'/>",
            );
            return;
        }
        if self.smbios_host {
            self.note(
                "<sysinfo type='smbios'>",
                NoteKind::Changed,
                "libvirt ignores it under <smbios mode='host'/>; vmrun writes its fields over the host's \
                 (smbios.from_host with explicit fields)",
            );
        }
        let mut as_args = Vec::new();
        for table in tables {
            let keys: Option<Vec<(&'static str, String)>> = table
                .entries
                .iter()
                .map(|(name, value)| {
                    let field = SMBIOS_FIELDS
                        .iter()
                        .find(|f| f.table == table.kind && f.qemu == name)?;
                    smbios_problem(field.key, value)
                        .is_none()
                        .then(|| (field.key, value.clone()))
                })
                .collect();
            match keys {
                Some(keys) if table.kind <= 3 => self.draft.smbios_fields.extend(keys),
                _ => {
                    let mut value = format!("type={}", table.kind);
                    for (key, text) in &table.entries {
                        let _ = write!(value, ",{key}={}", text.replace(',', ",,"));
                    }
                    as_args.push(table.element);
                    self.draft.extra_args.extend(["-smbios".to_string(), value]);
                }
            }
        }
        if !as_args.is_empty() {
            self.note(
                as_args.join(" "),
                NoteKind::Changed,
                "has entries [smbios] has no key for: written as QEMU -smbios arguments in qemu.extra_args",
            );
        }
    }

    fn os(&mut self, node: Node) {
        let mut loader: Option<(String, bool)> = None;
        let mut nvram: Option<(Option<String>, Option<String>)> = None;
        let firmware_attribute = node.attribute("firmware");
        let mut secure_boot_feature = None;
        for item in elements(node) {
            match item.tag_name().name() {
                "type" => {
                    if item.attribute("arch").is_some_and(|a| a != "x86_64") {
                        self.changed(item, "vmrun runs x86_64 guests; the profile is x86_64");
                    }
                    let machine = item.attribute("machine").unwrap_or("q35");
                    if machine == "q35" || machine.starts_with("pc-q35-") {
                        self.draft.machine_type = machine.to_string();
                    } else {
                        self.changed(
                            item,
                            format!(
                                "`{machine}` became q35: passthrough needs PCIe root ports, which \
                                 i440fx has not; Windows sees new hardware once and installs its drivers"
                            ),
                        );
                    }
                }
                "loader" => {
                    if item.attribute("type").is_some_and(|t| t != "pflash") {
                        self.untranslated(item, "only pflash firmware has a vmrun equivalent");
                        continue;
                    }
                    loader = Some((text_of(item), is_on(item, "secure")));
                }
                "nvram" => {
                    let path = Some(text_of(item)).filter(|p| !p.is_empty());
                    nvram = Some((path, item.attribute("template").map(str::to_string)));
                }
                "firmware" => {
                    for feature in elements(item) {
                        if feature.attribute("name") == Some("secure-boot") {
                            secure_boot_feature = Some(is_on(feature, "enabled"));
                        }
                    }
                }
                "boot" => {
                    if let Some(dev) = item.attribute("dev") {
                        self.boot_devs.push(dev.to_string());
                    }
                }
                "bootmenu" => {
                    if is_on(item, "enable") {
                        self.draft
                            .extra_args
                            .extend(["-boot".to_string(), "menu=on".to_string()]);
                    }
                }
                "smbios" => match item.attribute("mode") {
                    Some("sysinfo") => self.smbios_enabled = true,
                    Some("host") => self.smbios_host = true,
                    _ => {}
                },
                _ => self.untranslated(item, "vmrun has no key for this boot setting"),
            }
        }
        let uefi = loader.is_some() || firmware_attribute == Some("efi");
        self.draft.seabios = !uefi;
        self.draft.secure_boot =
            loader.as_ref().is_some_and(|(_, secure)| *secure) || secure_boot_feature == Some(true);
        let Some((code, _)) = loader.filter(|(code, _)| !code.is_empty()) else {
            return;
        };
        if self.firmware_from_descriptors {
            return;
        }
        let (nvram_path, template) = nvram.unwrap_or((None, None));
        if let Some(path) = &nvram_path {
            self.note(
                format!("<nvram>{path}</nvram>"),
                NoteKind::Changed,
                format!(
                    "vmrun keeps its own VARS copy: to keep this VM's boot entries and keys, copy \
                     {path} to the file `vmrun show {} --json` names as `vars` before the first run",
                    self.draft.name
                ),
            );
        }
        let template = match (template, nvram_path) {
            (Some(template), _) => template,
            (None, Some(path)) => path,
            (None, None) => {
                let file_name = code.rsplit('/').next().unwrap_or(&code);
                let guessed = file_name.replace("CODE", "VARS").replace("code", "vars");
                if guessed == file_name {
                    self.note(
                        format!("<loader>{code}</loader>"),
                        NoteKind::Changed,
                        "no VARS template is named and none can be guessed from the file name: \
                         the profile lets vmrun pick OVMF through QEMU's firmware descriptors",
                    );
                    return;
                }
                let guessed_path = format!("{}{guessed}", &code[..code.len() - file_name.len()]);
                self.note(
                    format!("<loader>{code}</loader>"),
                    NoteKind::Changed,
                    format!("no VARS template is named (libvirt takes it from qemu.conf): the profile guesses {guessed_path}"),
                );
                guessed_path
            }
        };
        self.draft.firmware_files = Some((code, template));
    }

    fn apply_boot_devs(&mut self) {
        let any_order = self.draft.disks.iter().any(|d| d.boot_order.is_some())
            || self.draft.pci.iter().any(|p| p.boot_order.is_some());
        let boot_devs = std::mem::take(&mut self.boot_devs);
        if any_order || boot_devs.is_empty() {
            return;
        }
        let mut order = 1;
        for dev in boot_devs {
            let wanted_cdrom = match dev.as_str() {
                "hd" => false,
                "cdrom" => true,
                other => {
                    self.note(
                        format!("<boot dev='{other}'>"),
                        NoteKind::Untranslated,
                        "vmrun boots from disks and passed-through devices only",
                    );
                    continue;
                }
            };
            if let Some(disk) = self
                .draft
                .disks
                .iter_mut()
                .find(|d| d.cdrom == wanted_cdrom && d.boot_order.is_none())
            {
                disk.boot_order = Some(order);
                order += 1;
            }
        }
    }

    fn features(&mut self, node: Node) {
        for feature in elements(node) {
            match feature.tag_name().name() {
                // QEMU gives a q35 guest all three without being asked.
                "acpi" | "apic" | "pae" => {}
                "hyperv" => self.hyperv_features(feature),
                "kvm" => {
                    for item in elements(feature) {
                        let on = is_on(item, "state");
                        match (item.tag_name().name(), on) {
                            ("hidden", true) => self.draft.hide_hypervisor = true,
                            ("hint-dedicated", true) => {
                                self.draft.features.push("+kvm-hint-dedicated".into())
                            }
                            ("poll-control", true) => {
                                self.draft.features.push("+kvm-poll-control".into())
                            }
                            ("pv-ipi", false) => self.draft.features.push("-kvm-pv-ipi".into()),
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
                        self.draft
                            .extra_args
                            .extend(["-machine".to_string(), "vmport=off".to_string()]);
                    }
                }
                _ => self.untranslated(feature, "vmrun has no key for this feature"),
            }
        }
    }

    fn hyperv_features(&mut self, node: Node) {
        if node.attribute("mode") == Some("passthrough") {
            self.untranslated(
                node,
                "vmrun lists enlightenments explicitly; write cpu.hyperv = true for the usual set",
            );
            return;
        }
        self.hyperv_seen = true;
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
                "spinlocks" => {
                    let retries = item
                        .attribute("retries")
                        .and_then(|r| r.parse::<u32>().ok());
                    if retries.is_some_and(|r| r != 0x1fff) {
                        self.changed(item, "vmrun always sets 8191 retries (0x1fff)");
                    }
                    self.hyperv.insert("spinlocks".into());
                }
                "stimer" => {
                    self.hyperv.insert("stimer".into());
                    if child(item, "direct").is_some_and(|d| is_on(d, "state")) {
                        self.hyperv.insert("stimer-direct".into());
                    }
                }
                "tlbflush" => {
                    self.hyperv.insert("tlbflush".into());
                    if elements(item).next().is_some() {
                        self.changed(item, "vmrun has no extended or direct TLB flush");
                    }
                }
                name if HYPERV_KNOWN.contains(&hyperv_name(name).as_str()) => {
                    self.hyperv.insert(hyperv_name(name));
                }
                _ => self.untranslated(item, "vmrun does not know this enlightenment"),
            }
        }
    }

    fn set_vendor_id(&mut self, node: Node, value: String) {
        let cleaned: String = value
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .take(12)
            .collect();
        if cleaned.is_empty() {
            self.untranslated(node, "an empty vendor id");
            return;
        }
        if cleaned != value {
            self.changed(
                node,
                format!("`{value}` has spaces or is too long; vmrun takes `{cleaned}`"),
            );
        }
        self.draft.hv_vendor_id = Some(cleaned);
    }

    fn cpu(&mut self, node: Node) {
        match node.attribute("mode").unwrap_or("custom") {
            "host-passthrough" => self.draft.model = Some("host".into()),
            "host-model" => {
                self.changed(
                    node,
                    "the profile passes the host CPU through (\"host\"); libvirt computed a named model close to it",
                );
                self.draft.model = Some("host".into());
            }
            "maximum" => self.draft.model = Some("max".into()),
            _ => {
                let model = child(node, "model").map(text_of).filter(|m| !m.is_empty());
                self.draft.model = Some(model.unwrap_or_else(|| "qemu64".into()));
            }
        }
        if node.attribute("migratable") == Some("off") {
            self.draft.features.push("-migratable".into());
        }
        for item in elements(node) {
            match item.tag_name().name() {
                "model" => {}
                "topology" => {
                    let field = |name: &str| {
                        item.attribute(name)
                            .and_then(|v| v.parse::<u32>().ok())
                            .unwrap_or(1)
                    };
                    let (dies, clusters) = (field("dies"), field("clusters"));
                    if dies * clusters != 1 {
                        self.changed(
                            item,
                            "vmrun has no dies or clusters; their cores are counted as more cores",
                        );
                    }
                    self.draft.topology = Some((
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
                        "require" | "force" => self.draft.features.push(format!("+{name}")),
                        "disable" | "forbid" => self.draft.features.push(format!("-{name}")),
                        _ => self.untranslated(item, "QEMU has no optional CPU features"),
                    }
                }
                "cache" => match (item.attribute("mode"), item.attribute("level")) {
                    (Some("passthrough"), _) => self.draft.features.push("+host-cache-info".into()),
                    (Some("emulate"), Some("3")) => self.draft.features.push("+l3-cache".into()),
                    (Some("disable"), _) => self.draft.features.push("-l3-cache".into()),
                    _ => self.untranslated(item, "no QEMU CPU property matches this cache mode"),
                },
                _ => self.untranslated(item, "vmrun has no key for this CPU setting"),
            }
        }
    }

    fn finish_cpu(&mut self) {
        let vcpus = self.draft.vcpus;
        if let Some((sockets, cores, threads)) = self.draft.topology {
            if sockets * cores * threads != vcpus {
                self.note(
                    "<cpu><topology>",
                    NoteKind::Changed,
                    format!(
                        "{sockets} sockets × {cores} cores × {threads} threads is not the {vcpus} vCPUs of <vcpu>; \
                         the profile has {vcpus} sockets of one core"
                    ),
                );
                self.draft.topology = None;
            }
        }
        if self.draft.model.is_none() {
            // libvirt's CPU when the domain names none.
            self.draft.model = Some("qemu64".into());
        }
        if self.draft.tcg && self.draft.model.as_deref() == Some("host") {
            self.note(
                "<domain type='qemu'>",
                NoteKind::Changed,
                "the host CPU cannot be passed through under TCG; the profile uses \"max\"",
            );
            self.draft.model = Some("max".into());
        }
        self.draft.features.dedup();
        // Keep one entry per property: the last one wins, as on QEMU's command line.
        let mut seen = BTreeSet::new();
        let mut features: Vec<String> = Vec::new();
        let (valid, invalid): (Vec<String>, Vec<String>) = std::mem::take(&mut self.draft.features)
            .into_iter()
            .partition(|feature| {
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
        for feature in valid.iter().rev() {
            if seen.insert(feature[1..].to_string()) {
                features.push(feature.clone());
            }
        }
        features.reverse();
        self.draft.features = features;
        self.finish_hyperv();
    }

    fn finish_hyperv(&mut self) {
        if self.hyperv.is_empty() {
            if self.draft.hv_vendor_id.is_some() && !self.hyperv_seen {
                self.note(
                    "<hyperv><vendor_id>",
                    NoteKind::Untranslated,
                    "a vendor id without enlightenments has no effect",
                );
            }
            return;
        }
        if self.draft.tcg {
            let refused: Vec<String> = [
                "vpindex",
                "synic",
                "stimer",
                "stimer-direct",
                "tlbflush",
                "ipi",
            ]
            .iter()
            .filter(|name| self.hyperv.remove(**name))
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
                if self.hyperv.contains(*feature) {
                    for need in *required {
                        if !self.hyperv.contains(*need) {
                            added.push((*feature, *need));
                        }
                    }
                }
            }
            if added.is_empty() {
                break;
            }
            for (feature, need) in added {
                self.hyperv.insert(need.to_string());
                self.note(
                    "<hyperv>",
                    NoteKind::Changed,
                    format!("added `{need}`: QEMU refuses `{feature}` without it"),
                );
            }
        }
        let ordered: Vec<String> = HYPERV_KNOWN
            .iter()
            .filter(|name| self.hyperv.contains(**name))
            .map(|name| name.to_string())
            .collect();
        self.draft.hyperv_default = !self.draft.tcg && ordered == HYPERV_KVM_DEFAULT;
        self.draft.hyperv = ordered;
    }

    fn finish_pinning(&mut self) {
        let vcpus = self.draft.vcpus;
        if self.draft.vcpupin.is_empty() {
            if self.draft.emulatorpin.is_some() || !self.draft.iothreadpin.is_empty() {
                self.note(
                    "<cputune>",
                    NoteKind::Untranslated,
                    "emulatorpin and iothreadpin without vcpupin: vmrun pins QEMU's threads only \
                     together with every vCPU",
                );
            }
            return;
        }
        let fallback = self
            .draft
            .emulatorpin
            .as_deref()
            .and_then(parse_cpuset)
            .and_then(|cpus| cpus.first().copied());
        let mut unpinned = Vec::new();
        for vcpu in 0..vcpus {
            if !self.draft.vcpupin.contains_key(&vcpu) {
                unpinned.push(vcpu);
            }
        }
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
                self.draft.vcpupin.clear();
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
            for vcpu in unpinned {
                self.draft.vcpupin.insert(vcpu, BTreeSet::from([cpu]));
            }
        }
        let wide: Vec<u32> = self
            .draft
            .vcpupin
            .iter()
            .filter(|(_, cpus)| cpus.len() > 1)
            .map(|(vcpu, _)| *vcpu)
            .collect();
        if !wide.is_empty() {
            self.note(
                "<vcpupin>",
                NoteKind::Changed,
                format!("vCPUs {wide:?} may run on several host CPUs; vmrun pins each to the first of them"),
            );
        }
        let beyond: Vec<u32> = self
            .draft
            .vcpupin
            .keys()
            .copied()
            .filter(|v| *v >= vcpus)
            .collect();
        for vcpu in beyond {
            self.draft.vcpupin.remove(&vcpu);
        }
    }

    /// Without rtc, pit or hpet timers the offset alone is `-rtc base=localtime` (QEMU's other
    /// defaults stay, as libvirt leaves them); with any of them it is `[clock]`, whose every
    /// key is then written out.
    fn clock(&mut self, node: Node) {
        let localtime = match node.attribute("offset").unwrap_or("utc") {
            "utc" => false,
            "localtime" => true,
            _ => {
                self.untranslated(node, "vmrun keeps the guest clock in UTC or local time");
                false
            }
        };
        // QEMU's defaults, which libvirt keeps unless a timer says otherwise.
        let mut clock = ClockDraft {
            localtime,
            rtc_driftfix: false,
            hpet: true,
            pit_lost_ticks: "delay",
        };
        let mut timers = false;
        for timer in elements(node) {
            let present = timer.attribute("present");
            let policy = timer.attribute("tickpolicy");
            match (timer.attribute("name"), present, policy) {
                (Some("hypervclock"), Some("yes") | None, _) => {
                    self.hyperv.insert("time".into());
                }
                (Some("rtc"), Some("yes") | None, Some("catchup")) => {
                    clock.rtc_driftfix = true;
                    timers = true;
                }
                (Some("rtc"), Some("yes") | None, None | Some("delay")) => timers = true,
                (Some("pit"), Some("yes") | None, Some(policy @ ("discard" | "delay"))) => {
                    clock.pit_lost_ticks = if policy == "discard" {
                        "discard"
                    } else {
                        "delay"
                    };
                    timers = true;
                }
                (Some("pit"), Some("yes") | None, None) => timers = true,
                (Some("hpet"), Some(present), None) => {
                    clock.hpet = present == "yes";
                    timers = true;
                }
                (Some("kvmclock" | "tsc"), Some("yes") | None, None) => {}
                _ => self.untranslated(
                    timer,
                    "vmrun's [clock] has the RTC drift fix, the PIT's lost-tick policy and the HPET",
                ),
            }
        }
        if timers {
            self.draft.clock = Some(clock);
        } else if localtime {
            self.draft
                .extra_args
                .extend(["-rtc".to_string(), "base=localtime".to_string()]);
        }
    }

    /// Both suspend states off is `machine.suspend = false`; one alone stays QEMU's global.
    fn pm(&mut self, node: Node) {
        let mut disabled = BTreeMap::new();
        for item in elements(node) {
            let state = match item.tag_name().name() {
                "suspend-to-mem" => "disable_s3",
                "suspend-to-disk" => "disable_s4",
                _ => {
                    self.untranslated(item, "vmrun has no key for this");
                    continue;
                }
            };
            disabled.insert(state, item.attribute("enabled") == Some("no"));
        }
        if disabled.get("disable_s3") == Some(&true) && disabled.get("disable_s4") == Some(&true) {
            self.draft.suspend_off = true;
            return;
        }
        for (state, off) in disabled {
            self.draft.extra_args.extend([
                "-global".to_string(),
                format!("ICH9-LPC.{state}={}", u8::from(off)),
            ]);
        }
    }

    fn metadata(&mut self, node: Node) {
        for item in elements(node) {
            if item.tag_name().namespace() != Some(VMRUN_NAMESPACE) {
                self.untranslated(item, "metadata of another program");
                continue;
            }
            for setting in elements(item) {
                let attribute = |name: &str| setting.attribute(name).map(str::to_string);
                match setting.tag_name().name() {
                    "firmware" => {
                        self.firmware_from_descriptors =
                            setting.attribute("selection") == Some("descriptors")
                    }
                    "display" => {
                        self.draft.gui = attribute("gui");
                        self.draft.password_file = attribute("password-file");
                    }
                    "pinning" => {
                        self.draft.pinning_auto = setting.attribute("vcpus") == Some("auto");
                        self.draft.threads_from_host = setting.attribute("threads") == Some("host");
                    }
                    "isolation" => {
                        self.draft.isolation = Some((
                            attribute("host-cpus").unwrap_or_else(|| "auto".into()),
                            attribute("governor").unwrap_or_else(|| "performance".into()),
                        ))
                    }
                    "pci" => {
                        if let (Some(address), Some("yes")) =
                            (attribute("address"), setting.attribute("rescan"))
                        {
                            self.draft.rescan.insert(address);
                        }
                    }
                    "qemu" => {
                        self.draft.sandbox_off = setting.attribute("sandbox") == Some("no");
                    }
                    "audio" => {
                        self.draft.audio_user = attribute("user");
                        self.draft.audio_cookie = attribute("cookie");
                    }
                    "looking-glass" => {
                        let lg = self
                            .draft
                            .looking_glass
                            .get_or_insert_with(Default::default);
                        lg.owner = attribute("owner");
                        lg.group = attribute("group");
                        lg.mode = attribute("mode");
                    }
                    "single-gpu" => {
                        let modules = elements(setting)
                            .filter_map(|m| m.attribute("name").map(str::to_string))
                            .collect();
                        self.draft.single_gpu = Some((attribute("display-manager"), modules));
                    }
                    "hook" => {
                        let argv = elements(setting).map(text_of).collect();
                        let phase = attribute("phase").unwrap_or_default();
                        self.draft.hooks.push((phase, argv));
                    }
                    "shutdown" => {
                        self.draft.shutdown_timeout =
                            setting.attribute("timeout").and_then(|t| t.parse().ok())
                    }
                    _ => self.untranslated(setting, "a vmrun setting this version does not know"),
                }
            }
        }
    }

    fn qemu_commandline(&mut self, node: Node) {
        let mut args: Vec<String> = Vec::new();
        for item in elements(node) {
            match item.tag_name().name() {
                "arg" => args.push(item.attribute("value").unwrap_or("").to_string()),
                _ => self.untranslated(item, "vmrun passes no environment to QEMU"),
            }
        }
        let mut index = 0;
        let mut passed_on = Vec::new();
        while index < args.len() {
            let option = args[index].clone();
            let value = args
                .get(index + 1)
                .filter(|v| !v.starts_with('-') && option.starts_with('-'))
                .cloned();
            index += if value.is_some() { 2 } else { 1 };
            let parts = value.as_deref().map(split_qemu_opts).unwrap_or_default();
            let props = qemu_props(&parts);
            let head = parts.first().map(String::as_str).unwrap_or("");
            match (option.as_str(), head) {
                ("-cpu", _) => self.qemu_cpu(&parts),
                ("-object", "input-linux") => {
                    if let Some(path) = props.get("evdev") {
                        self.draft.evdev.push(path.clone());
                        if let Some(toggle) = props.get("grab-toggle") {
                            self.draft.grab_toggle = Some(toggle.clone());
                        }
                    }
                }
                ("-object", "memory-backend-file") => {
                    if let Some(id) = props.get("id") {
                        self.qemu_objects.insert(id.clone(), props.clone());
                    }
                }
                ("-device", "ivshmem-plain") => {
                    let object = props.get("memdev").and_then(|id| self.qemu_objects.get(id));
                    let size = object
                        .and_then(|o| o.get("size"))
                        .and_then(|s| ByteSize::parse_lenient(s));
                    match (object.and_then(|o| o.get("mem-path")), size) {
                        (Some(path), Some(size)) if self.draft.looking_glass.as_ref().is_none_or(|lg| lg.path.is_empty()) => {
                            let lg = self.draft.looking_glass.get_or_insert_with(Default::default);
                            lg.path = path.clone();
                            lg.size = size.bytes();
                        }
                        _ => self.note(
                            format!("<qemu:arg value='{}'>", value.unwrap_or_default()),
                            NoteKind::Untranslated,
                            "an ivshmem device vmrun cannot match to a shared-memory file (vmrun has one)",
                        ),
                    }
                }
                ("-drive", _) if props.get("if").map(String::as_str) == Some("none") => {
                    if let Some(id) = props.get("id") {
                        self.qemu_drives.insert(id.clone(), props.clone());
                    }
                }
                ("-device", "nvme") => {
                    let drive = props.get("drive").and_then(|id| self.qemu_drives.get(id));
                    match drive.and_then(|d| d.get("file").map(|f| (d, f))) {
                        Some((drive, file)) => {
                            let disk = DiskDraft {
                                path: file.clone(),
                                format: match drive.get("format").map(String::as_str) {
                                    Some("qcow2") => Some("qcow2"),
                                    _ => Some("raw"),
                                },
                                bus: "nvme",
                                readonly: drive.get("readonly").map(String::as_str) == Some("on"),
                                cache: match drive.get("cache.direct").map(String::as_str) {
                                    Some("on") => Some("none"),
                                    _ if drive.get("cache.no-flush").map(String::as_str)
                                        == Some("on") =>
                                    {
                                        Some("unsafe")
                                    }
                                    _ => None,
                                },
                                discard: drive.get("discard").map(String::as_str) == Some("unmap"),
                                boot_order: props.get("bootindex").and_then(|b| b.parse().ok()),
                                cdrom: false,
                            };
                            // vmrun's export names the disk's place in the profile.
                            let position = props
                                .get("serial")
                                .and_then(|s| s.strip_prefix("vmrun"))
                                .and_then(|n| n.parse::<usize>().ok())
                                .unwrap_or(usize::MAX)
                                .min(self.draft.disks.len());
                            self.draft.disks.insert(position, disk);
                        }
                        None => passed_on.extend([option.clone()].into_iter().chain(value.clone())),
                    }
                }
                // vmrun's export of a `[[usb]] port`: libvirt names USB devices by
                // vendor:product or by bus and device number, never by port.
                ("-device", "usb-host")
                    if props.contains_key("hostbus") && props.contains_key("hostport") =>
                {
                    let port = format!("{}-{}", props["hostbus"], props["hostport"]);
                    let position = props
                        .get("id")
                        .and_then(|id| id.strip_prefix("ua-vmrun-usb"))
                        .and_then(|n| n.parse::<usize>().ok())
                        .unwrap_or(usize::MAX)
                        .min(self.draft.usb.len());
                    self.draft.usb.insert(position, ("port", port));
                }
                ("-set", _) => self.note(
                    format!(
                        "<qemu:arg value='-set'> <qemu:arg value='{}'>",
                        value.unwrap_or_default()
                    ),
                    NoteKind::Untranslated,
                    "it names a device by libvirt's id, which the vmrun VM does not have",
                ),
                _ => passed_on.extend([option.clone()].into_iter().chain(value.clone())),
            }
        }
        if !passed_on.is_empty() {
            self.note(
                "<qemu:commandline>",
                NoteKind::Changed,
                format!(
                    "passed to QEMU unchanged as qemu.extra_args: {}",
                    passed_on.join(" ")
                ),
            );
            self.draft.extra_args.extend(passed_on);
        }
    }

    /// A `-cpu` from `<qemu:commandline>`: QEMU takes the last `-cpu`, so it overrides `<cpu>`.
    fn qemu_cpu(&mut self, parts: &[String]) {
        let Some((model, properties)) = parts.split_first() else {
            return;
        };
        self.draft.model = Some(model.clone());
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
                ("kvm", _) => self.draft.hide_hypervisor = !on,
                (_, Some(hv)) if hv == "vendor-id" => {
                    self.hyperv_seen = true;
                    let vendor = value.unwrap_or_default();
                    let cleaned: String = vendor
                        .chars()
                        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
                        .take(12)
                        .collect();
                    if cleaned != vendor {
                        self.note(
                            "<qemu:arg value='-cpu'>",
                            NoteKind::Changed,
                            format!("hv_vendor_id `{vendor}`: vmrun takes `{cleaned}`"),
                        );
                    }
                    self.draft.hv_vendor_id = Some(cleaned).filter(|c| !c.is_empty());
                }
                (_, Some(hv)) if HYPERV_KNOWN.contains(&hv.as_str()) => {
                    self.hyperv_seen = true;
                    if on {
                        self.hyperv.insert(hv);
                    } else {
                        self.hyperv.remove(&hv);
                    }
                }
                (_, Some(hv)) => self.note(
                    "<qemu:arg value='-cpu'>",
                    NoteKind::Untranslated,
                    format!("vmrun does not know the enlightenment `{hv}`"),
                ),
                _ => self
                    .draft
                    .features
                    .push(format!("{}{name}", if on { '+' } else { '-' })),
            }
        }
    }

    fn devices(&mut self, node: Node) -> Result<(), ImportError> {
        let mut controllers_noted = false;
        let remote = |kind: &str| {
            elements(node)
                .any(|d| d.tag_name().name() == "graphics" && d.attribute("type") == Some(kind))
        };
        let remote_spice = remote("spice");
        let remote_display = remote_spice || remote("vnc");
        let mut videos = 0;
        let mut graphics_seen = false;
        let mut serial_seen = false;
        let mut guest_addresses_noted = false;
        for device in elements(node) {
            match device.tag_name().name() {
                "emulator" => {
                    let path = text_of(device);
                    if !path.ends_with("/qemu-system-x86_64") && path != "qemu-system-x86_64" {
                        self.draft.binary = Some(path);
                    }
                }
                "disk" => self.disk(device),
                "controller" => {
                    let model = device.attribute("model").unwrap_or("");
                    let infrastructure = matches!(model, "pci-root" | "pcie-root")
                        || device.attribute("type") == Some("usb")
                            && matches!(model, "none" | "qemu-xhci")
                        // The SPICE agent's port, which vmrun adds with SPICE.
                        || device.attribute("type") == Some("virtio-serial") && remote_spice;
                    if !infrastructure && !controllers_noted {
                        controllers_noted = true;
                        self.changed(
                            device,
                            "vmrun builds the controllers its devices need (a root port per \
                             passed slot, AHCI, virtio-scsi, xHCI) itself; <controller> elements are not copied",
                        );
                    }
                }
                "interface" => self.interface(device),
                "hostdev" => {
                    if child(device, "address").is_some() && !guest_addresses_noted {
                        guest_addresses_noted = true;
                        self.changed(
                            device,
                            "vmrun chooses guest addresses itself: each host slot gets its own \
                             root port and keeps its functions together (a GPU and its audio \
                             become functions 0 and 1 of one device)",
                        );
                    }
                    self.hostdev(device);
                }
                "input" => match (device.attribute("type"), device.attribute("bus")) {
                    (Some("evdev"), _) => self.evdev(device),
                    (Some("mouse" | "keyboard"), Some("ps2") | None) => {}
                    // vmrun gives a remote display with an emulated adapter a USB tablet.
                    (Some("tablet"), Some("usb")) if remote_display => {}
                    _ => self.untranslated(
                        device,
                        "vmrun has PS/2 keyboard and mouse, evdev devices and USB passthrough",
                    ),
                },
                "graphics" => {
                    graphics_seen = true;
                    match device.attribute("type") {
                        Some("sdl") => self.draft.gui = Some("sdl".into()),
                        Some("spice") if self.draft.remote.is_none() => {
                            self.graphics(device, "spice")
                        }
                        Some("vnc") if self.draft.remote.is_none() => self.graphics(device, "vnc"),
                        _ => self.untranslated(
                            device,
                            "vmrun has a local window (display.gui) and one remote display (SPICE or VNC)",
                        ),
                    }
                }
                "channel" => {
                    let agent = device.attribute("type") == Some("spicevmc")
                        && child(device, "target").is_none_or(|t| {
                            t.attribute("name")
                                .is_none_or(|n| n == "com.redhat.spice.0")
                        });
                    if !agent || !remote_spice {
                        self.untranslated(
                            device,
                            "vmrun's one channel is the SPICE agent's, which comes with display.remote = \"spice\"",
                        );
                    }
                }
                "video" => {
                    videos += 1;
                    let model = child(device, "model").and_then(|m| m.attribute("type"));
                    let vga = match model {
                        Some("vga") => "std",
                        Some("virtio") => "virtio",
                        Some("qxl") => "qxl",
                        Some("none") => "none",
                        other => {
                            self.changed(
                                device,
                                format!(
                                    "vmrun has no `{}` adapter; the profile uses the standard VGA",
                                    other.unwrap_or("default")
                                ),
                            );
                            "std"
                        }
                    };
                    if videos == 1 {
                        self.draft.vga = Some(vga);
                    } else {
                        self.untranslated(device, "vmrun has one emulated display adapter");
                    }
                }
                "serial" => {
                    if serial_seen {
                        self.untranslated(device, "vmrun has one serial port");
                        continue;
                    }
                    serial_seen = true;
                    if device.attribute("type") == Some("file") {
                        self.draft.serial_log = true;
                        self.changed(
                            device,
                            "the serial port is written to console.log in vmrun's state directory",
                        );
                    } else {
                        self.untranslated(
                            device,
                            "vmrun's serial console is a log file (console.serial = \"log\")",
                        );
                    }
                }
                "console" => {
                    let mirrors_serial = child(device, "target")
                        .is_none_or(|t| t.attribute("type").is_none_or(|ty| ty == "serial"));
                    if !mirrors_serial {
                        self.untranslated(device, "vmrun has no virtio console");
                    }
                }
                // vmrun gives every VM an ISA pvpanic device; other models are not kept.
                "panic" => {
                    if device.attribute("model").is_some_and(|m| m != "isa") {
                        self.changed(device, "vmrun's panic device is the ISA pvpanic");
                    }
                }
                "memballoon" => {
                    if device.attribute("model") != Some("none") {
                        self.untranslated(device, "vmrun adds no memory balloon");
                    }
                }
                // Read with the <sound> that plays through it.
                "audio" => {}
                "shmem" => self.shmem(device),
                "sound" => self.sound(node, device),
                "tpm" => self.tpm(device),
                _ => self.untranslated(device, "vmrun has no device of this kind"),
            }
        }
        if videos == 0 {
            self.draft.vga = Some(if graphics_seen { "std" } else { "none" });
        }
        Ok(())
    }

    /// `<graphics type='spice'|'vnc'>`: a socket listen is vmrun's `listen = "unix"` (in
    /// vmrun's runtime directory), an address with a fixed port is `ADDRESS:PORT`.
    fn graphics(&mut self, node: Node, protocol: &'static str) {
        let listen_node = child(node, "listen");
        let kind = listen_node.and_then(|l| l.attribute("type"));
        let address = listen_node
            .and_then(|l| l.attribute("address"))
            .or_else(|| node.attribute("listen"));
        let port = node
            .attribute("port")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0 && node.attribute("autoport") != Some("yes"));
        let listen = match (kind, address, port) {
            (Some("socket"), _, _) => {
                if listen_node.and_then(|l| l.attribute("socket")).is_some() {
                    self.changed(
                        node,
                        "vmrun puts the socket in the VM's runtime directory; `vmrun status` names it",
                    );
                }
                "unix".to_string()
            }
            (_, Some(address), Some(port)) => {
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address.to_string()
                };
                format!("{host}:{port}")
            }
            _ => {
                self.changed(
                    node,
                    "no fixed address and port (autoport, or listening on a network): vmrun listens on a \
                     Unix socket in the VM's runtime directory; set display.listen = \"ADDRESS:PORT\" for TCP",
                );
                "unix".to_string()
            }
        };
        if node.attribute("passwd").is_some() {
            self.untranslated(
                node,
                "vmrun reads the password from a file (display.password_file); it is not copied into the profile",
            );
        }
        for item in elements(node) {
            match item.tag_name().name() {
                "listen" => {}
                _ => {
                    self.untranslated(item, "vmrun keeps QEMU's defaults for this display setting")
                }
            }
        }
        self.draft.remote = Some(RemoteDraft { protocol, listen });
    }

    /// `<sound>` and the `<audio>` backend it names (or the first one).
    fn sound<'a, 'input>(&mut self, devices: Node<'a, 'input>, node: Node<'a, 'input>) {
        if self.draft.audio.is_some() {
            self.untranslated(node, "vmrun has one sound card");
            return;
        }
        let device = match node.attribute("model") {
            Some("ich9") => "ich9",
            Some("usb") => "usb",
            Some(model @ ("ich6" | "ich7" | "hda")) => {
                self.changed(
                    node,
                    format!("vmrun's HD Audio controller is ich9, not `{model}`: the same drivers"),
                );
                "ich9"
            }
            _ => {
                self.untranslated(
                    node,
                    "vmrun's sound cards are Intel HD Audio (ich9) and USB audio",
                );
                return;
            }
        };
        for item in elements(node) {
            match item.tag_name().name() {
                "audio" | "address" | "alias" => {}
                "codec" if item.attribute("type") == Some("duplex") => {}
                _ => self.untranslated(item, "vmrun's HD Audio has the one duplex codec"),
            }
        }
        let id = child(node, "audio").and_then(|a| a.attribute("id"));
        let backend_node = elements(devices)
            .find(|d| d.tag_name().name() == "audio" && (id.is_none() || d.attribute("id") == id));
        let (backend, server) = match backend_node.and_then(|b| b.attribute("type").map(|t| (b, t)))
        {
            Some((b, "pulseaudio")) => {
                let server = b
                    .attribute("serverName")
                    .map(|s| s.strip_prefix("unix:").unwrap_or(s).to_string());
                if let Some(name) = server.as_ref().filter(|s| !s.starts_with('/')) {
                    self.changed(
                        b,
                        format!("vmrun reaches PulseAudio on a Unix socket, not `{name}`: the desktop user's server"),
                    );
                    ("pulseaudio", None)
                } else {
                    ("pulseaudio", server)
                }
            }
            Some((_, "none")) | None => ("none", None),
            Some((b, other)) => {
                self.changed(
                    b,
                    format!("vmrun plays through PulseAudio (PipeWire too) or nowhere, not `{other}`: the profile says none"),
                );
                ("none", None)
            }
        };
        self.draft.audio = Some((backend, device, server));
    }

    fn tpm(&mut self, node: Node) {
        let backend = child(node, "backend");
        let emulator = backend.and_then(|b| b.attribute("type")) == Some("emulator");
        let version = backend
            .and_then(|b| b.attribute("version"))
            .unwrap_or("2.0");
        if !emulator || version != "2.0" {
            self.untranslated(
                node,
                "vmrun's TPM is a TPM 2.0 emulated by swtpm (a host TPM is not passed through)",
            );
            return;
        }
        if node.attribute("model").is_some_and(|m| m != "tpm-crb") {
            self.changed(node, "vmrun's TPM is tpm-crb (what Windows 11 expects)");
        }
        self.note(
            describe(node),
            NoteKind::Changed,
            "vmrun keeps the TPM state in the VM's state directory: to keep BitLocker's keys, copy \
             libvirt's /var/lib/libvirt/swtpm/<uuid>/tpm2 there (the `tpm` directory) before the first run",
        );
        self.draft.tpm = true;
    }

    fn disk(&mut self, node: Node) {
        let kind = node.attribute("type").unwrap_or("file");
        let device = node.attribute("device").unwrap_or("disk");
        if !matches!(device, "disk" | "cdrom") {
            self.untranslated(node, format!("vmrun has no `{device}` drives"));
            return;
        }
        let source = child(node, "source");
        let path = match kind {
            "file" => source.and_then(|s| s.attribute("file")),
            "block" => source.and_then(|s| s.attribute("dev")),
            _ => {
                self.untranslated(
                    node,
                    format!("vmrun opens files and block devices, not `{kind}` disks"),
                );
                return;
            }
        };
        let Some(path) = path.filter(|p| !p.is_empty()) else {
            self.untranslated(node, "an empty drive: vmrun needs a file to put in it");
            return;
        };
        let cdrom = device == "cdrom";
        let mut disk = DiskDraft {
            path: path.to_string(),
            cdrom,
            readonly: cdrom,
            ..DiskDraft::default()
        };
        let bus = child(node, "target")
            .and_then(|t| t.attribute("bus"))
            .unwrap_or("virtio");
        disk.bus = match (bus, cdrom) {
            ("virtio", false) => "virtio",
            ("sata", _) => "sata",
            ("scsi", _) => "scsi",
            ("nvme", false) => "nvme",
            ("ide", _) => {
                self.changed(node, "IDE became SATA: q35 has AHCI, not IDE");
                "sata"
            }
            (other, _) => {
                self.changed(node, format!("bus `{other}` became SATA"));
                "sata"
            }
        };
        for item in elements(node) {
            match item.tag_name().name() {
                "source" | "target" | "address" | "alias" => {}
                "readonly" => disk.readonly = true,
                "boot" => disk.boot_order = item.attribute("order").and_then(|o| o.parse().ok()),
                "driver" => {
                    disk.format = match item.attribute("type") {
                        Some("qcow2") => Some("qcow2"),
                        Some("raw") | None => Some("raw"),
                        Some(other) => {
                            self.untranslated(
                                node,
                                format!("vmrun opens qcow2 and raw images, not `{other}`"),
                            );
                            return;
                        }
                    };
                    disk.cache = match item.attribute("cache") {
                        None | Some("writeback") => None,
                        Some("none") => Some("none"),
                        Some("unsafe") => Some("unsafe"),
                        Some(other) => {
                            self.changed(
                                item,
                                format!("vmrun has no cache mode `{other}`; it uses writeback"),
                            );
                            None
                        }
                    };
                    disk.discard = item.attribute("discard") == Some("unmap");
                    let others: Vec<String> = item
                        .attributes()
                        .filter(|a| {
                            !matches!(a.name(), "name" | "type" | "cache" | "discard" | "iothread")
                        })
                        .map(|a| format!("{}='{}'", a.name(), a.value()))
                        .collect();
                    if !others.is_empty() {
                        self.untranslated(
                            item,
                            format!("vmrun keeps QEMU's defaults for {}", others.join(" ")),
                        );
                    }
                }
                _ => self.untranslated(item, "vmrun has no key for this disk setting"),
            }
        }
        if disk.bus == "sata" && disk.readonly && !cdrom {
            self.changed(
                node,
                "QEMU's SATA disks cannot be read-only: it is on virtio instead",
            );
            disk.bus = "virtio";
        }
        if disk.bus == "virtio" && cdrom {
            disk.bus = "sata";
        }
        self.draft.disks.push(disk);
    }

    fn interface(&mut self, node: Node) {
        if self.draft.network.is_some() {
            self.untranslated(node, "vmrun has one network interface");
            return;
        }
        let source = child(node, "source");
        let kind = node.attribute("type").unwrap_or("");
        let (mode, bridge, tap) = match kind {
            "bridge" => (
                "bridge",
                source
                    .and_then(|s| s.attribute("bridge"))
                    .map(str::to_string),
                None,
            ),
            "ethernet" => {
                let target = child(node, "target").and_then(|t| t.attribute("dev"));
                match target {
                    Some(dev) => ("tap", None, Some(dev.to_string())),
                    None => {
                        self.changed(node, "a tap device libvirt would create: vmrun needs an existing one; the profile uses user networking");
                        ("user", None, None)
                    }
                }
            }
            "user" => ("user", None, None),
            "network" => {
                let network = source
                    .and_then(|s| s.attribute("network"))
                    .unwrap_or("default");
                self.changed(
                    node,
                    format!(
                        "libvirt's network `{network}` became QEMU's user networking (NAT); for the \
                         same network use mode = \"bridge\" with its bridge (virbr0 for `default`)"
                    ),
                );
                ("user", None, None)
            }
            other => {
                self.changed(
                    node,
                    format!("vmrun has no `{other}` interfaces; the profile uses user networking"),
                );
                ("user", None, None)
            }
        };
        let mac = child(node, "mac")
            .and_then(|m| m.attribute("address"))
            .map(str::to_string);
        let model = match child(node, "model").and_then(|m| m.attribute("type")) {
            None
            | Some("virtio" | "virtio-net" | "virtio-transitional" | "virtio-non-transitional") => {
                None
            }
            Some("e1000e") => Some("e1000e"),
            Some("rtl8139") => Some("rtl8139"),
            Some(other) => {
                self.changed(node, format!("vmrun has no `{other}` NIC; the profile uses e1000e, which the same guests drive"));
                Some("e1000e")
            }
        };
        for item in elements(node) {
            match item.tag_name().name() {
                "mac" | "source" | "model" | "address" | "target" | "alias" => {}
                _ => self.untranslated(item, "vmrun has no key for this interface setting"),
            }
        }
        self.draft.network = Some(NetworkDraft {
            mode,
            bridge,
            tap,
            mac,
            model,
        });
    }

    fn hostdev(&mut self, node: Node) {
        if node.attribute("mode").unwrap_or("subsystem") != "subsystem" {
            self.untranslated(node, "vmrun passes PCI and USB devices only");
            return;
        }
        match node.attribute("type") {
            Some("pci") => self.pci_hostdev(node),
            Some("usb") => {
                let source = child(node, "source");
                let id = |name: &str| {
                    source
                        .and_then(|s| child(s, name))
                        .and_then(|n| hex_field(n, "id"))
                };
                match (id("vendor"), id("product")) {
                    (Some(vendor), Some(product)) => {
                        self.draft
                            .usb
                            .push(("device", format!("{vendor:04x}:{product:04x}")));
                    }
                    _ => self.untranslated(
                        node,
                        "a USB device given by bus and port: vmrun needs its vendor:product",
                    ),
                }
            }
            _ => self.untranslated(node, "vmrun passes PCI and USB devices only"),
        }
    }

    fn pci_hostdev(&mut self, node: Node) {
        let Some(address) = child(node, "source").and_then(|s| child(s, "address")) else {
            self.untranslated(node, "no source address");
            return;
        };
        let field = |name: &str| hex_field(address, name);
        let (Some(bus), Some(slot), Some(function)) =
            (field("bus"), field("slot"), field("function"))
        else {
            self.untranslated(node, "cannot read its source address");
            return;
        };
        let pci_address = PciAddress {
            domain: field("domain").unwrap_or(0) as u16,
            bus: bus as u8,
            slot: slot as u8,
            function: function as u8,
        };
        if node.attribute("managed") == Some("no") {
            self.changed(
                node,
                "libvirt expected it already on vfio-pci (managed='no'); vmrun moves it there itself \
                 and leaves a device already on vfio-pci alone",
            );
        }
        let mut device = PciDraft {
            address: pci_address,
            romfile: None,
            rombar: None,
            boot_order: None,
        };
        for item in elements(node) {
            match item.tag_name().name() {
                "source" | "address" | "alias" => {}
                "driver" => {
                    if item.attribute("name").is_some_and(|n| n != "vfio") {
                        self.changed(item, "vmrun passes devices with vfio-pci");
                    }
                    if item.attribute("model").is_some() {
                        self.untranslated(item, "vmrun uses the plain vfio-pci driver");
                    }
                }
                "rom" => {
                    device.romfile = item.attribute("file").map(str::to_string);
                    match item.attribute("bar") {
                        Some("on") => device.rombar = Some(true),
                        Some("off") => device.rombar = Some(false),
                        _ => {}
                    }
                    if item.attribute("enabled") == Some("no") {
                        self.untranslated(item, "vmrun cannot switch a device's ROM off entirely; rombar = false hides it");
                    }
                }
                "boot" => device.boot_order = item.attribute("order").and_then(|o| o.parse().ok()),
                _ => self.untranslated(item, "vmrun has no key for this hostdev setting"),
            }
        }
        if self.draft.pci.iter().any(|d| d.address == pci_address) {
            self.untranslated(node, "the same host device twice");
            return;
        }
        self.draft.pci.push(device);
    }

    fn evdev(&mut self, node: Node) {
        let Some(source) = child(node, "source") else {
            self.untranslated(node, "no source device");
            return;
        };
        let Some(path) = source.attribute("dev") else {
            self.untranslated(node, "no source device");
            return;
        };
        let keyboard = path.ends_with("event-kbd");
        if source.attribute("grab") == Some("all") && !keyboard {
            self.changed(
                node,
                "vmrun grabs all devices with the one whose path ends in event-kbd; this one does not",
            );
        }
        if let Some(toggle) = source.attribute("grabToggle") {
            self.draft.grab_toggle = Some(toggle.to_string());
        }
        self.draft.evdev.push(path.to_string());
    }

    fn shmem(&mut self, node: Node) {
        let model = child(node, "model").and_then(|m| m.attribute("type"));
        if model != Some("ivshmem-plain") {
            self.untranslated(
                node,
                "vmrun's shared memory is Looking Glass' plain ivshmem",
            );
            return;
        }
        if self
            .draft
            .looking_glass
            .as_ref()
            .is_some_and(|lg| !lg.path.is_empty())
        {
            self.untranslated(node, "vmrun has one shared-memory device (Looking Glass)");
            return;
        }
        let name = node.attribute("name").unwrap_or("looking-glass");
        let size = child(node, "size")
            .and_then(|s| size_in_bytes(&text_of(s), Some(s.attribute("unit").unwrap_or("b"))))
            // libvirt's default size.
            .unwrap_or(4 * ByteSize::MIB);
        if node.attribute("role").is_some() {
            self.untranslated(node, "vmrun has no migration roles");
        }
        let lg = self
            .draft
            .looking_glass
            .get_or_insert_with(Default::default);
        lg.path = format!("/dev/shm/{name}");
        lg.size = size;
    }
}

/// TOML string quoting.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn quote_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(i.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

impl Draft {
    fn render(&self, notes: &[Note]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Imported from the libvirt domain `{}` by `vmrun import libvirt`.",
            self.name
        );
        for kind in [NoteKind::Untranslated, NoteKind::Changed] {
            let of_kind: Vec<&Note> = notes.iter().filter(|n| n.kind == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "#\n# {}",
                match kind {
                    NoteKind::Untranslated => "Not translated (vmrun has no equivalent):",
                    NoteKind::Changed => "Changed in translation:",
                }
            );
            for note in of_kind {
                let text = format!("{}: {}", note.element, note.message);
                for (index, line) in text.lines().enumerate() {
                    let _ = writeln!(out, "#   {}{line}", if index == 0 { "" } else { "  " });
                }
            }
        }
        let _ = writeln!(out, "\nname = {}", quote(&self.name));

        let _ = writeln!(out, "\n[machine]");
        let _ = writeln!(
            out,
            "memory = {}",
            quote(&ByteSize(self.memory).qemu_spelling())
        );
        if let Some(pages) = self.hugepages {
            let _ = writeln!(out, "hugepages = {}", quote(pages));
        }
        if self.machine_type != "q35" {
            let _ = writeln!(out, "type = {}", quote(&self.machine_type));
        }
        if self.tcg {
            let _ = writeln!(out, "accel = \"tcg\"");
        }
        if self.iothreads > 0 {
            let _ = writeln!(out, "iothreads = {}", self.iothreads);
        }
        if self.suspend_off {
            let _ = writeln!(out, "suspend = false");
        }

        let (sockets, cores, threads) = self.topology.unwrap_or((self.vcpus, 1, 1));
        let _ = writeln!(out, "\n[cpu]");
        let _ = writeln!(out, "sockets = {sockets}\ncores = {cores}");
        // With vcpus = "auto" and no threads in the profile, the host's cores decide them.
        if !(self.pinning_auto && self.threads_from_host) {
            let _ = writeln!(out, "threads = {threads}");
        }
        if let Some(model) = &self.model {
            let _ = writeln!(out, "model = {}", quote(model));
        }
        if self.hide_hypervisor {
            let _ = writeln!(out, "hide_hypervisor = true");
        }
        if !self.hyperv.is_empty() {
            if let Some(vendor) = &self.hv_vendor_id {
                let _ = writeln!(out, "hv_vendor_id = {}", quote(vendor));
            }
            if self.hyperv_default {
                let _ = writeln!(out, "hyperv = true");
            } else {
                let _ = writeln!(out, "hyperv = {}", quote_list(&self.hyperv));
            }
        }
        if !self.features.is_empty() {
            let _ = writeln!(out, "features = {}", quote_list(&self.features));
        }

        if !self.vcpupin.is_empty() {
            let vcpus: Vec<String> = self
                .vcpupin
                .values()
                .filter_map(|cpus| cpus.first().map(ToString::to_string))
                .collect();
            let _ = writeln!(out, "\n[pinning]");
            if self.pinning_auto {
                // The <vcpupin> entries are one host's answer to "auto"; the profile asks again.
                let _ = writeln!(out, "vcpus = \"auto\"");
            } else {
                let _ = writeln!(out, "vcpus = [{}]", vcpus.join(", "));
            }
            if let Some(emulator) = &self.emulatorpin {
                let _ = writeln!(out, "emulator = {}", quote(emulator));
            }
            if !self.iothreadpin.is_empty() {
                let set = CpuSet::from_cpus(self.iothreadpin.iter().copied());
                let _ = writeln!(out, "iothreads = {}", quote(&set.to_list_string()));
            }
            match &self.scheduler {
                Some((policy, priority)) if policy != "other" => {
                    let _ = writeln!(out, "scheduler = {}\npriority = {priority}", quote(policy));
                }
                // libvirt leaves vCPUs under the normal policy unless vcpusched says otherwise.
                _ => {
                    let _ = writeln!(out, "scheduler = \"other\"");
                }
            }
        }

        if let Some((host_cpus, governor)) = &self.isolation {
            let _ = writeln!(
                out,
                "\n[isolation]\nhost_cpus = {}\ngovernor = {}",
                quote(host_cpus),
                quote(governor)
            );
        }

        let _ = writeln!(out, "\n[firmware]");
        if self.seabios {
            let _ = writeln!(out, "type = \"seabios\"");
        } else {
            let _ = writeln!(out, "type = \"ovmf\"");
            if self.secure_boot {
                let _ = writeln!(out, "secure_boot = true");
            }
            if let Some((code, vars)) = &self.firmware_files {
                let _ = writeln!(
                    out,
                    "code = {}\nvars_template = {}",
                    quote(code),
                    quote(vars)
                );
            }
        }

        for disk in &self.disks {
            let _ = writeln!(out, "\n[[disk]]\npath = {}", quote(&disk.path));
            if let Some(format) = disk.format {
                let _ = writeln!(out, "format = {}", quote(format));
            }
            let _ = writeln!(out, "bus = {}", quote(disk.bus));
            if disk.cdrom {
                let _ = writeln!(out, "media = \"cdrom\"");
            } else if disk.readonly {
                let _ = writeln!(out, "readonly = true");
            }
            if let Some(cache) = disk.cache {
                let _ = writeln!(out, "cache = {}", quote(cache));
            }
            if disk.discard {
                let _ = writeln!(out, "discard = true");
            }
            if let Some(order) = disk.boot_order {
                let _ = writeln!(out, "boot_order = {order}");
            }
        }

        let _ = writeln!(out, "\n[network]");
        match &self.network {
            None => {
                let _ = writeln!(out, "mode = \"none\"");
            }
            Some(network) => {
                let _ = writeln!(out, "mode = {}", quote(network.mode));
                if let Some(bridge) = &network.bridge {
                    let _ = writeln!(out, "bridge = {}", quote(bridge));
                }
                if let Some(tap) = &network.tap {
                    let _ = writeln!(out, "tap = {}", quote(tap));
                }
                if let Some(mac) = &network.mac {
                    let _ = writeln!(out, "mac = {}", quote(mac));
                }
                if let Some(model) = network.model {
                    let _ = writeln!(out, "model = {}", quote(model));
                }
            }
        }

        for device in &self.pci {
            let _ = writeln!(
                out,
                "\n[[pci]]\naddress = {}",
                quote(&device.address.to_string())
            );
            if let Some(rom) = &device.romfile {
                let _ = writeln!(out, "romfile = {}", quote(rom));
            }
            if let Some(rombar) = device.rombar {
                let _ = writeln!(out, "rombar = {rombar}");
            }
            if let Some(order) = device.boot_order {
                let _ = writeln!(out, "boot_order = {order}");
            }
            if self.rescan.contains(&device.address.to_string()) {
                let _ = writeln!(out, "rescan = true");
            }
        }
        for (key, value) in &self.usb {
            let _ = writeln!(out, "\n[[usb]]\n{key} = {}", quote(value));
        }

        if !self.evdev.is_empty() {
            let _ = writeln!(out, "\n[input]\nevdev = {}", quote_list(&self.evdev));
            if let Some(toggle) = &self.grab_toggle {
                let _ = writeln!(out, "grab_toggle = {}", quote(toggle));
            }
        }

        let _ = writeln!(out, "\n[display]");
        let _ = writeln!(out, "vga = {}", quote(self.vga.unwrap_or("none")));
        if let Some(gui) = &self.gui {
            let _ = writeln!(out, "gui = {}", quote(gui));
        }
        if let Some(remote) = &self.remote {
            let _ = writeln!(out, "remote = {}", quote(remote.protocol));
            let _ = writeln!(out, "listen = {}", quote(&remote.listen));
            if let Some(file) = &self.password_file {
                let _ = writeln!(out, "password_file = {}", quote(file));
            }
        }
        if let Some((backend, device, server)) = &self.audio {
            let _ = writeln!(
                out,
                "\n[audio]\nbackend = {}\ndevice = {}",
                quote(backend),
                quote(device)
            );
            if *backend == "pulseaudio" {
                for (key, value) in [
                    ("server", server),
                    ("cookie", &self.audio_cookie),
                    ("user", &self.audio_user),
                ] {
                    if let Some(value) = value {
                        let _ = writeln!(out, "{key} = {}", quote(value));
                    }
                }
            }
        }
        if self.tpm {
            let _ = writeln!(out, "\n[tpm]\nversion = \"2.0\"");
        }
        if self.smbios_from_host || !self.smbios_fields.is_empty() {
            let _ = writeln!(out, "\n[smbios]");
            if self.smbios_from_host {
                let _ = writeln!(out, "from_host = true");
            }
            for field in SMBIOS_FIELDS {
                if let Some(value) = self.smbios_fields.get(field.key) {
                    let _ = writeln!(out, "{} = {}", field.key, quote(value));
                }
            }
        }
        if let Some(clock) = &self.clock {
            let _ = writeln!(
                out,
                "\n[clock]\nbase = {}\nrtc_driftfix = {}\nhpet = {}\npit_lost_ticks = {}",
                quote(if clock.localtime { "localtime" } else { "utc" }),
                clock.rtc_driftfix,
                clock.hpet,
                quote(clock.pit_lost_ticks)
            );
        }
        if self.serial_log {
            let _ = writeln!(out, "\n[console]\nserial = \"log\"");
        }

        if let Some(lg) = self.looking_glass.as_ref().filter(|lg| !lg.path.is_empty()) {
            let _ = writeln!(out, "\n[looking_glass]");
            let _ = writeln!(out, "size = {}", quote(&ByteSize(lg.size).qemu_spelling()));
            let _ = writeln!(out, "path = {}", quote(&lg.path));
            for (key, value) in [
                ("owner", &lg.owner),
                ("group", &lg.group),
                ("mode", &lg.mode),
            ] {
                if let Some(value) = value {
                    let _ = writeln!(out, "{key} = {}", quote(value));
                }
            }
        }

        if let Some((display_manager, modules)) = &self.single_gpu {
            let _ = writeln!(out, "\n[single_gpu]");
            if let Some(dm) = display_manager {
                let _ = writeln!(out, "display_manager = {}", quote(dm));
            }
            if !modules.is_empty() {
                let _ = writeln!(out, "modules = {}", quote_list(modules));
            }
        }
        if !self.hooks.is_empty() {
            let _ = writeln!(out, "\n[hooks]");
            for phase in ["pre_start", "started", "post_stop"] {
                let hooks: Vec<String> = self
                    .hooks
                    .iter()
                    .filter(|(p, _)| p == phase)
                    .map(|(_, argv)| quote_list(argv))
                    .collect();
                if !hooks.is_empty() {
                    let _ = writeln!(out, "{phase} = [{}]", hooks.join(", "));
                }
            }
        }
        if let Some(timeout) = self.shutdown_timeout {
            let _ = writeln!(out, "\n[shutdown]\ntimeout = {timeout}");
        }
        if self.binary.is_some() || !self.extra_args.is_empty() || self.sandbox_off {
            let _ = writeln!(out, "\n[qemu]");
            if let Some(binary) = &self.binary {
                let _ = writeln!(out, "binary = {}", quote(binary));
            }
            if self.sandbox_off {
                let _ = writeln!(out, "sandbox = false");
            }
            if !self.extra_args.is_empty() {
                let _ = writeln!(out, "extra_args = {}", quote_list(&self.extra_args));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_units_and_cpusets_read_as_libvirt_means_them() {
        assert_eq!(size_in_bytes("219100", None), Some(219100 * 1024));
        assert_eq!(size_in_bytes("8", Some("GiB")), Some(8 << 30));
        assert_eq!(size_in_bytes("1", Some("GB")), Some(1_000_000_000));
        assert_eq!(size_in_bytes("32", Some("M")), Some(32 << 20));
        assert_eq!(size_in_bytes("1", Some("parsec")), None);
        assert_eq!(
            parse_cpuset("1-3,^2,8")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![1, 3, 8]
        );
        assert!(parse_cpuset("a-b").is_none());
    }

    #[test]
    fn qemu_option_values_split_at_single_commas_only() {
        assert_eq!(
            split_qemu_opts("file=/a,,b,format=raw"),
            vec!["file=/a,b".to_string(), "format=raw".to_string()]
        );
        assert_eq!(split_qemu_opts("host"), vec!["host".to_string()]);
    }

    #[test]
    fn a_domain_without_memory_or_not_a_domain_is_refused() {
        let error = import("<domain type='kvm'><name>x</name></domain>").unwrap_err();
        assert!(matches!(error, ImportError::Missing("memory")), "{error}");
        let error = import("<network><name>x</name></network>").unwrap_err();
        assert!(error.to_string().contains("<network>"), "{error}");
        let error = import("<domain type='xen'><name>x</name></domain>").unwrap_err();
        assert!(error.to_string().contains("xen"), "{error}");
    }

    #[test]
    fn i440fx_becomes_q35_with_a_note_and_names_are_made_valid() {
        let imported = import(
            "<domain type='kvm'><name>my vm</name><memory unit='MiB'>100</memory>\
             <os><type arch='x86_64' machine='pc-i440fx-8.2'>hvm</type></os></domain>",
        )
        .unwrap();
        assert_eq!(imported.name, "my-vm");
        assert!(!imported.profile.contains("\ntype = \"pc-i440fx"));
        assert!(imported
            .notes
            .iter()
            .any(|n| n.element.contains("pc-i440fx-8.2") && n.kind == NoteKind::Changed));
        assert!(imported.profile.contains("memory = \"100M\""));
        assert!(imported.profile.contains("type = \"seabios\""));
    }
}
