//! `RawProfile` → `VmConfig`. Every rule reports into one list, so a user sees all problems of a
//! profile at once, each with its line, its key and what would be valid.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use super::*;
use crate::firmware::{self, FirmwareImage, ImageFormat};
use crate::profile::raw::*;
use crate::profile::{Diagnostic, Diagnostics, Kind, ProfileSource, Severity};

/// Validates a parsed profile. `Ok` carries the model and its warnings. Files the profile
/// names but this host lacks are reported as `Kind::MissingFile` warnings: the profile itself is
/// fine (and `show` works), while `check` and `run` fail on them.
pub fn validate(
    source: &ProfileSource,
    raw: &RawProfile,
) -> Result<(VmConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut v = Validator {
        diags: Diagnostics::new(&source.path, &source.text),
        base_dir: source.base_dir(),
    };
    let config = v.profile(source, raw);
    if v.diags.has_errors() {
        Err(v.diags.into_vec())
    } else {
        Ok((config, v.diags.into_vec()))
    }
}

struct Validator {
    diags: Diagnostics,
    base_dir: PathBuf,
}

/// A section's fields, or all-`None` defaults when the section is absent.
fn section<T: Default + Clone>(raw: &Option<Spanned<T>>) -> (T, Option<Range<usize>>) {
    match raw {
        Some(spanned) => (spanned.get_ref().clone(), Some(spanned.span())),
        None => (T::default(), None),
    }
}

fn choice_list<T>(options: &[(&str, T)]) -> String {
    options
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

const HYPERV_KVM_DEFAULT: &[&str] = &[
    "relaxed",
    "vapic",
    "spinlocks",
    "vpindex",
    "runtime",
    "synic",
    "stimer",
    "reset",
    "frequencies",
    "time",
    "tlbflush",
    "ipi",
];
/// Measured with QEMU 7.2: under TCG every enlightenment that needs VP_INDEX is refused.
const HYPERV_NEEDS_VPINDEX: &[&str] = &["vpindex", "synic", "stimer", "tlbflush", "ipi"];
/// Every enlightenment vmrun knows, in the order it writes them.
pub const HYPERV_KNOWN: &[&str] = &[
    "relaxed",
    "vapic",
    "spinlocks",
    "vpindex",
    "runtime",
    "synic",
    "stimer",
    "stimer-direct",
    "reset",
    "frequencies",
    "reenlightenment",
    "time",
    "tlbflush",
    "ipi",
    "evmcs",
    "avic",
];

impl Validator {
    fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.diags.error(span, key, message);
    }

    fn warning(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.diags.warning(span, key, message);
    }

    fn parse<T: FromStr<Err = String>>(&mut self, raw: &Text, key: &str) -> Option<T> {
        match raw.get_ref().parse() {
            Ok(value) => Some(value),
            Err(message) => {
                self.error(raw.span(), key, message);
                None
            }
        }
    }

    fn pick<T: Copy>(&mut self, raw: &Text, key: &str, options: &[(&str, T)]) -> Option<T> {
        let found = options
            .iter()
            .find(|(name, _)| *name == raw.get_ref().as_str())
            .map(|(_, value)| *value);
        if found.is_none() {
            self.error(
                raw.span(),
                key,
                format!("`{}` is not one of {}", raw.get_ref(), choice_list(options)),
            );
        }
        found
    }

    /// An optional choice: its value from `options`, or `default` when the key is absent (or
    /// invalid, which is reported).
    fn choose<T: Copy>(
        &mut self,
        raw: &Option<Text>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        raw.as_ref()
            .and_then(|text| self.pick(text, key, options))
            .unwrap_or(default)
    }

    fn int_in(
        &mut self,
        raw: &Int,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let value = *raw.get_ref();
        if range.contains(&value) {
            Some(value)
        } else {
            self.error(
                raw.span(),
                key,
                format!(
                    "{value} is out of range; use {} to {}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }

    fn resolve_path(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    fn missing_file(&mut self, span: Range<usize>, key: &str, path: &Path, what: &str) {
        self.diags.push_kind(
            Severity::Warning,
            Kind::MissingFile,
            Some(span),
            key,
            format!("{what} {} does not exist", path.display()),
        );
    }

    fn profile(&mut self, source: &ProfileSource, raw: &RawProfile) -> VmConfig {
        let name = self.name(source, raw);
        let machine = self.machine(raw);
        let cpu = self.cpu(raw, machine.accel);
        let pinning = self.pinning(raw, &cpu, &machine);
        let firmware = self.firmware(raw);
        let disks = self.disks(raw);
        let network = self.network(raw, &name);
        let pci = self.pci(raw, &firmware, &disks);
        let usb = self.usb(raw);
        let input = self.input(raw);
        let display = self.display(raw, &pci);
        let serial = self.console(raw);
        let looking_glass = self.looking_glass(raw);
        let single_gpu = self.single_gpu(raw, &pci);
        let hooks = self.hooks(raw);
        let shutdown = self.shutdown(raw);
        let qemu = self.qemu(raw);
        VmConfig {
            name,
            profile_path: source.path.clone(),
            machine,
            cpu,
            pinning,
            firmware,
            disks,
            network,
            pci,
            usb,
            input,
            display,
            serial,
            looking_glass,
            single_gpu,
            hooks,
            shutdown,
            qemu,
        }
    }

    fn name(&mut self, source: &ProfileSource, raw: &RawProfile) -> VmName {
        let fallback = VmName::placeholder;
        match &raw.name {
            Some(name) => self.parse(name, "name").unwrap_or_else(fallback),
            None => match source.stem().parse() {
                Ok(name) => name,
                Err(message) => {
                    self.diags.push(
                        Severity::Error,
                        Some(0..0),
                        "name",
                        format!("the file name gives no valid VM name ({message}); set `name`"),
                    );
                    fallback()
                }
            },
        }
    }

    fn machine(&mut self, raw: &RawProfile) -> Machine {
        let (m, _) = section(&raw.machine);
        let memory = match &m.memory {
            Some(text) => self.parse::<ByteSize>(text, "machine.memory"),
            None => Some(ByteSize(2 * ByteSize::GIB)),
        };
        if let (Some(size), Some(text)) = (memory, &m.memory) {
            if size.bytes() < 64 * ByteSize::MIB {
                self.error(
                    text.span(),
                    "machine.memory",
                    format!("{size} is too little for any guest; use at least 64M"),
                );
            }
        }
        let hugepages = m.hugepages.as_ref().and_then(|text| {
            self.pick(
                text,
                "machine.hugepages",
                &[("2M", HugePageSize::TwoMiB), ("1G", HugePageSize::OneGiB)],
            )
        });
        if let (Some(pages), Some(size), Some(text)) = (hugepages, memory, &m.hugepages) {
            if size.bytes() % pages.bytes() != 0 {
                self.error(
                    text.span(),
                    "machine.hugepages",
                    format!(
                        "machine.memory {size} is not a whole number of {} pages; \
                         round the memory to a multiple of the page size",
                        ByteSize(pages.bytes())
                    ),
                );
            }
        }
        let machine_type = match &m.machine_type {
            Some(text) => {
                let value = text.get_ref();
                if value == "q35" || value.starts_with("pc-q35-") {
                    value.clone()
                } else {
                    self.error(
                        text.span(),
                        "machine.type",
                        format!(
                            "`{value}` is not supported; passthrough needs PCIe root ports: \
                             use \"q35\" (or a versioned \"pc-q35-X.Y\")"
                        ),
                    );
                    "q35".to_string()
                }
            }
            None => "q35".to_string(),
        };
        let accel = m
            .accel
            .as_ref()
            .and_then(|text| {
                self.pick(
                    text,
                    "machine.accel",
                    &[("kvm", Accel::Kvm), ("tcg", Accel::Tcg)],
                )
            })
            .unwrap_or(Accel::Kvm);
        let iothreads = m
            .iothreads
            .as_ref()
            .and_then(|raw| self.int_in(raw, "machine.iothreads", 0..=16))
            .map(|n| n as u32);
        let pinned_iothreads = raw
            .pinning
            .as_ref()
            .is_some_and(|p| p.get_ref().iothreads.is_some());
        Machine {
            memory: memory.unwrap_or(ByteSize(2 * ByteSize::GIB)),
            hugepages,
            machine_type,
            accel,
            iothreads: iothreads.unwrap_or(u32::from(pinned_iothreads)),
        }
    }

    fn cpu(&mut self, raw: &RawProfile, accel: Accel) -> Cpu {
        let (c, _) = section(&raw.cpu);
        let mut count = |value: &Option<Int>, key: &str, default: u32| -> u32 {
            value
                .as_ref()
                .and_then(|raw| self.int_in(raw, key, 1..=255))
                .map(|n| n as u32)
                .unwrap_or(default)
        };
        let topology = Topology {
            sockets: count(&c.sockets, "cpu.sockets", 1),
            cores: count(&c.cores, "cpu.cores", 2),
            threads: count(&c.threads, "cpu.threads", 1),
        };
        if topology.vcpus() > 255 {
            let span = c.sockets.as_ref().map(|s| s.span()).unwrap_or(0..0);
            self.error(
                span,
                "cpu",
                format!(
                    "sockets * cores * threads = {} vCPUs; q35 takes at most 255",
                    topology.vcpus()
                ),
            );
        }
        let model = match (&c.model, accel) {
            (Some(text), Accel::Tcg) if text.get_ref() == "host" => {
                self.error(
                    text.span(),
                    "cpu.model",
                    "\"host\" needs KVM; under machine.accel = \"tcg\" use \"max\" (or leave model out)",
                );
                "max".to_string()
            }
            (Some(text), _) if text.get_ref().is_empty() || text.get_ref().contains(',') => {
                self.error(
                    text.span(),
                    "cpu.model",
                    "give one QEMU CPU model name, e.g. \"host\"",
                );
                "host".to_string()
            }
            (Some(text), _) => text.get_ref().clone(),
            (None, Accel::Kvm) => "host".to_string(),
            (None, Accel::Tcg) => "max".to_string(),
        };
        let hide_hypervisor = c.hide_hypervisor.as_ref().is_some_and(|f| *f.get_ref());
        let hyperv = self.hyperv(c.hyperv.as_ref(), accel);
        let hv_vendor_id = c.hv_vendor_id.as_ref().and_then(|text| {
            let value = text.get_ref();
            if value.is_empty()
                || value.len() > 12
                || !value.chars().all(|ch| ch.is_ascii_graphic())
            {
                self.error(
                    text.span(),
                    "cpu.hv_vendor_id",
                    format!(
                        "`{value}` is {} characters; use 1 to 12 printable ASCII characters \
                         without spaces (the Hyper-V vendor id is 12 bytes of CPUID)",
                        value.chars().count()
                    ),
                );
                return None;
            }
            if hyperv.is_empty() {
                self.warning(
                    text.span(),
                    "cpu.hv_vendor_id",
                    "has no effect without Hyper-V enlightenments; set cpu.hyperv = true",
                );
            }
            Some(value.clone())
        });
        let features = self.cpu_features(c.features.as_ref());
        Cpu {
            topology,
            model,
            hide_hypervisor,
            hv_vendor_id,
            hyperv,
            features,
        }
    }

    /// `"+topoext"` / `"-hypervisor"`: one CPU property on or off each.
    fn cpu_features(&mut self, raw: Option<&TextList>) -> Vec<String> {
        let Some(list) = raw else { return Vec::new() };
        let mut features: Vec<String> = Vec::new();
        for text in list.get_ref() {
            let entry = text.get_ref();
            let (state, name) = match entry.split_at_checked(1) {
                Some(("+", name)) => ("on", name),
                Some(("-", name)) => ("off", name),
                _ => ("", ""),
            };
            let well_formed = name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if state.is_empty() || !well_formed {
                self.error(
                    text.span(),
                    "cpu.features",
                    format!(
                        "`{entry}` is not `+name` or `-name`; write e.g. \"+topoext\" to turn a \
                         CPU property on or \"-hypervisor\" to turn it off"
                    ),
                );
                continue;
            }
            if let Some(earlier) = features
                .iter()
                .find(|f| f.split_once('=').map(|(n, _)| n) == Some(name))
            {
                self.error(
                    text.span(),
                    "cpu.features",
                    format!("`{name}` is already set (`{earlier}`); give each property once"),
                );
                continue;
            }
            features.push(format!("{name}={state}"));
        }
        features
    }

    fn hyperv(&mut self, raw: Option<&Spanned<RawHyperv>>, accel: Accel) -> Vec<String> {
        let Some(raw) = raw else { return Vec::new() };
        let span = raw.span();
        let names: Vec<String> = match raw.get_ref() {
            RawHyperv::Enabled(false) => return Vec::new(),
            RawHyperv::Enabled(true) => HYPERV_KVM_DEFAULT
                .iter()
                .filter(|name| accel == Accel::Kvm || !HYPERV_NEEDS_VPINDEX.contains(name))
                .map(|name| name.to_string())
                .collect(),
            RawHyperv::List(list) => list.clone(),
        };
        for name in &names {
            if !HYPERV_KNOWN.contains(&name.as_str()) {
                self.error(
                    span.clone(),
                    "cpu.hyperv",
                    format!(
                        "unknown enlightenment `{name}`; known: {}",
                        HYPERV_KNOWN.join(", ")
                    ),
                );
            } else if accel == Accel::Tcg && HYPERV_NEEDS_VPINDEX.contains(&name.as_str()) {
                self.error(
                    span.clone(),
                    "cpu.hyperv",
                    format!("`{name}` needs KVM (QEMU refuses VP_INDEX under TCG); remove it or use accel = \"kvm\""),
                );
            }
        }
        let requires: &[(&str, &[&str])] = &[
            ("synic", &["vpindex"]),
            ("stimer", &["synic", "time"]),
            ("stimer-direct", &["stimer"]),
            ("tlbflush", &["vpindex"]),
            ("ipi", &["vpindex"]),
            ("evmcs", &["vapic"]),
        ];
        for (feature, needs) in requires {
            if names.iter().any(|n| n == feature) {
                for need in *needs {
                    if !names.iter().any(|n| n == need) {
                        self.error(
                            span.clone(),
                            "cpu.hyperv",
                            format!("`{feature}` needs `{need}` in the list too"),
                        );
                    }
                }
            }
        }
        names
            .iter()
            .map(|name| match name.as_str() {
                "spinlocks" => "hv-spinlocks=0x1fff".to_string(),
                other => format!("hv-{other}"),
            })
            .collect()
    }

    fn pinning(&mut self, raw: &RawProfile, cpu: &Cpu, machine: &Machine) -> Option<Pinning> {
        let section_raw = raw.pinning.as_ref()?;
        let p = section_raw.get_ref();
        let vcpu_count = cpu.topology.vcpus() as usize;
        let vcpus: Vec<usize> = match &p.vcpus {
            Some(list) => {
                let entries = list.get_ref();
                if entries.len() != vcpu_count {
                    self.error(
                        list.span(),
                        "pinning.vcpus",
                        format!(
                            "has {} entries but the VM has {vcpu_count} vCPUs (cpu.sockets * cpu.cores * \
                             cpu.threads = {} * {} * {}); give one host CPU per vCPU",
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
                        "[pinning] needs `vcpus`, one host CPU per vCPU ({vcpu_count} entries)"
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
            emulator,
            iothreads,
            scheduler,
            priority,
        })
    }

    fn firmware(&mut self, raw: &RawProfile) -> Firmware {
        let (f, section_span) = section(&raw.firmware);
        let kind = self.choose(
            &f.firmware_type,
            "firmware.type",
            &[("ovmf", true), ("seabios", false)],
            true,
        );
        let secure_boot = f.secure_boot.as_ref().is_some_and(|b| *b.get_ref());
        if !kind {
            if let Some(flag) = f.secure_boot.as_ref().filter(|b| *b.get_ref()) {
                self.error(
                    flag.span(),
                    "firmware.secure_boot",
                    "SeaBIOS has no secure boot; use type = \"ovmf\"",
                );
            }
            for (value, key) in [
                (&f.code, "firmware.code"),
                (&f.vars_template, "firmware.vars_template"),
            ] {
                if let Some(text) = value {
                    self.error(
                        text.span(),
                        key,
                        "SeaBIOS uses no pflash files; remove this key or use type = \"ovmf\"",
                    );
                }
            }
            return Firmware::SeaBios;
        }
        let files = match (&f.code, &f.vars_template) {
            (None, None) => None,
            (Some(code), Some(vars)) => {
                let code_path = self.resolve_path(code.get_ref());
                let vars_path = self.resolve_path(vars.get_ref());
                let mut present = true;
                for (text, path, key, what) in [
                    (code, &code_path, "firmware.code", "firmware CODE"),
                    (vars, &vars_path, "firmware.vars_template", "VARS template"),
                ] {
                    if !path.is_file() {
                        self.missing_file(text.span(), key, path, what);
                        present = false;
                    }
                }
                if present {
                    let image = |path: &PathBuf| FirmwareImage {
                        path: path.clone(),
                        format: ImageFormat::from_extension(path),
                    };
                    if let Err(error) =
                        firmware::check_pairing(&image(&code_path), &image(&vars_path))
                    {
                        self.error(vars.span(), "firmware.vars_template", error.to_string());
                    }
                }
                Some(FirmwareFiles {
                    code: code_path,
                    vars_template: vars_path,
                })
            }
            (Some(one), None) | (None, Some(one)) => {
                let missing = if f.code.is_none() {
                    "code"
                } else {
                    "vars_template"
                };
                self.error(
                    one.span(),
                    &format!("firmware.{missing}"),
                    "firmware.code and firmware.vars_template go together: give both (from the same OVMF build) or neither",
                );
                None
            }
        };
        let _ = section_span;
        Firmware::Ovmf { secure_boot, files }
    }

    fn disks(&mut self, raw: &RawProfile) -> Vec<Disk> {
        let mut disks = Vec::new();
        let mut boot_orders: BTreeMap<i64, usize> = BTreeMap::new();
        let mut sata_ports = 0;
        for (index, spanned) in raw.disk.iter().enumerate() {
            let d = spanned.get_ref();
            let key = |field: &str| format!("disk[{index}].{field}");
            let Some(path_text) = &d.path else {
                self.error(spanned.span(), &key("path"), "every [[disk]] needs `path`");
                continue;
            };
            let path = self.resolve_path(path_text.get_ref());
            if !path.exists() {
                self.missing_file(path_text.span(), &key("path"), &path, "disk image");
            }
            let media = self.choose(
                &d.media,
                &key("media"),
                &[("disk", Media::Disk), ("cdrom", Media::Cdrom)],
                Media::Disk,
            );
            let format = match &d.format {
                Some(text) => self
                    .pick(
                        text,
                        &key("format"),
                        &[("qcow2", DiskFormat::Qcow2), ("raw", DiskFormat::Raw)],
                    )
                    .unwrap_or(DiskFormat::Raw),
                None if path.extension().is_some_and(|e| e == "qcow2") => DiskFormat::Qcow2,
                None => DiskFormat::Raw,
            };
            let bus_options = [
                ("virtio", DiskBus::Virtio),
                ("sata", DiskBus::Sata),
                ("nvme", DiskBus::Nvme),
                ("scsi", DiskBus::Scsi),
            ];
            let bus = match &d.bus {
                Some(text) => self
                    .pick(text, &key("bus"), &bus_options)
                    .unwrap_or(DiskBus::Virtio),
                None if media == Media::Cdrom => DiskBus::Sata,
                None => DiskBus::Virtio,
            };
            if media == Media::Cdrom && matches!(bus, DiskBus::Virtio | DiskBus::Nvme) {
                let span = d.bus.as_ref().map(|b| b.span()).unwrap_or(spanned.span());
                self.error(
                    span,
                    &key("bus"),
                    "a cdrom needs bus \"sata\" or \"scsi\" (virtio-blk and NVMe have no CD-ROM)",
                );
            }
            if media == Media::Disk && bus == DiskBus::Sata {
                if let Some(flag) = d.readonly.as_ref().filter(|f| *f.get_ref()) {
                    // Measured with QEMU 7.2: ide-hd refuses a read-only block node.
                    self.error(
                        flag.span(),
                        &key("readonly"),
                        "QEMU's SATA disks cannot be read-only; use bus \"virtio\", \"scsi\" or \"nvme\"",
                    );
                }
            }
            if bus == DiskBus::Sata {
                sata_ports += 1;
                if sata_ports > 6 {
                    let span = d.bus.as_ref().map(|b| b.span()).unwrap_or(spanned.span());
                    self.error(span, &key("bus"), "q35's AHCI controller has 6 SATA ports, all taken; use \"virtio\", \"scsi\" or \"nvme\"");
                }
            }
            let cache = self.choose(
                &d.cache,
                &key("cache"),
                &[
                    ("writeback", CacheMode::Writeback),
                    ("none", CacheMode::None),
                    ("unsafe", CacheMode::Unsafe),
                ],
                CacheMode::Writeback,
            );
            let boot_order = d.boot_order.as_ref().and_then(|raw| {
                let order = self.int_in(raw, &key("boot_order"), 1..=99)?;
                if let Some(other) = boot_orders.insert(order, index) {
                    self.error(
                        raw.span(),
                        &key("boot_order"),
                        format!("disk[{other}] has boot_order {order} too; use distinct numbers"),
                    );
                }
                Some(order as u32)
            });
            disks.push(Disk {
                path,
                format,
                bus,
                media,
                readonly: media == Media::Cdrom
                    || d.readonly.as_ref().is_some_and(|f| *f.get_ref()),
                cache,
                discard: d.discard.as_ref().is_some_and(|f| *f.get_ref()),
                boot_order,
            });
        }
        disks
    }

    fn network(&mut self, raw: &RawProfile, name: &VmName) -> Network {
        let (n, section_span) = section(&raw.network);
        let section_span = section_span.unwrap_or(0..0);
        let mode_name = self.choose(
            &n.mode,
            "network.mode",
            &[
                ("user", "user"),
                ("bridge", "bridge"),
                ("tap", "tap"),
                ("none", "none"),
            ],
            "user",
        );
        let mut required = |value: &Option<Text>, key: &str, what: &str| -> String {
            match value {
                Some(text)
                    if !text.get_ref().is_empty() && !text.get_ref().contains([',', '/']) =>
                {
                    text.get_ref().clone()
                }
                Some(text) => {
                    self.error(
                        text.span(),
                        key,
                        format!("`{}` is not a {what} name", text.get_ref()),
                    );
                    String::new()
                }
                None => {
                    self.error(
                        section_span.clone(),
                        key,
                        format!(
                            "network.mode = \"{mode_name}\" needs `{}` (the host {what})",
                            &key[8..]
                        ),
                    );
                    String::new()
                }
            }
        };
        let mode = match mode_name {
            "bridge" => NetworkMode::Bridge(required(&n.bridge, "network.bridge", "bridge")),
            "tap" => NetworkMode::Tap(required(&n.tap, "network.tap", "tap device")),
            "none" => NetworkMode::None,
            _ => NetworkMode::User,
        };
        for (value, key, owner) in [
            (&n.bridge, "network.bridge", "bridge"),
            (&n.tap, "network.tap", "tap"),
        ] {
            if let Some(text) = value {
                if mode_name != owner {
                    self.warning(
                        text.span(),
                        key,
                        format!("is ignored with network.mode = \"{mode_name}\""),
                    );
                }
            }
        }
        let mac = n
            .mac
            .as_ref()
            .and_then(|t| self.parse::<MacAddress>(t, "network.mac"))
            .unwrap_or_else(|| MacAddress::derived_from_name(name.as_str()));
        let model = self.choose(
            &n.model,
            "network.model",
            &[
                ("virtio", NicModel::Virtio),
                ("e1000e", NicModel::E1000e),
                ("rtl8139", NicModel::Rtl8139),
            ],
            NicModel::Virtio,
        );
        Network { mode, mac, model }
    }

    fn pci(&mut self, raw: &RawProfile, firmware: &Firmware, disks: &[Disk]) -> Vec<PciDevice> {
        let mut devices = Vec::new();
        let mut seen: HashMap<PciAddress, (usize, String)> = HashMap::new();
        let mut vga_seen: Option<usize> = None;
        for (index, spanned) in raw.pci.iter().enumerate() {
            let p = spanned.get_ref();
            let key = |field: &str| format!("pci[{index}].{field}");
            let Some(address_text) = &p.address else {
                self.error(
                    spanned.span(),
                    &key("address"),
                    "every [[pci]] needs `address`, e.g. \"0000:01:00.0\"",
                );
                continue;
            };
            let Some(address) = self.parse::<PciAddress>(address_text, &key("address")) else {
                continue;
            };
            if let Some((first, written)) = seen.get(&address) {
                self.error(
                    address_text.span(),
                    &key("address"),
                    format!(
                        "`{}` is the same device as pci[{first}] (`{written}`): both mean {address}; \
                         remove one",
                        address_text.get_ref()
                    ),
                );
                continue;
            }
            seen.insert(address, (index, address_text.get_ref().clone()));
            let romfile = p.romfile.as_ref().map(|text| {
                let path = self.resolve_path(text.get_ref());
                if !path.is_file() {
                    self.missing_file(text.span(), &key("romfile"), &path, "ROM file");
                }
                path
            });
            let vga = p.vga.as_ref().is_some_and(|f| *f.get_ref());
            if let (true, Some(flag)) = (vga, &p.vga) {
                if let Some(first) = vga_seen {
                    self.error(
                        flag.span(),
                        &key("vga"),
                        format!("pci[{first}] is already the guest's primary VGA; only one can be"),
                    );
                }
                vga_seen = Some(index);
                if matches!(firmware, Firmware::SeaBios) && address.function != 0 {
                    self.error(
                        flag.span(),
                        &key("vga"),
                        "a VGA device is function 0 of its slot",
                    );
                }
            }
            let boot_order = p.boot_order.as_ref().and_then(|raw| {
                let order = self.int_in(raw, &key("boot_order"), 1..=99)? as u32;
                // QEMU refuses two devices with one bootindex.
                let taken_by = disks
                    .iter()
                    .position(|d| d.boot_order == Some(order))
                    .map(|i| format!("disk[{i}]"))
                    .or_else(|| {
                        devices
                            .iter()
                            .position(|d: &PciDevice| d.boot_order == Some(order))
                            .map(|i| format!("pci[{i}]"))
                    });
                if let Some(other) = taken_by {
                    self.error(
                        raw.span(),
                        &key("boot_order"),
                        format!("{other} has boot_order {order} too; use distinct numbers"),
                    );
                }
                Some(order)
            });
            devices.push(PciDevice {
                address,
                romfile,
                vga,
                rombar: p.rombar.as_ref().map(|f| *f.get_ref()),
                boot_order,
            });
        }
        devices
    }

    fn usb(&mut self, raw: &RawProfile) -> Vec<UsbId> {
        let mut ids: Vec<UsbId> = Vec::new();
        for (index, spanned) in raw.usb.iter().enumerate() {
            let key = format!("usb[{index}].device");
            let Some(text) = &spanned.get_ref().device else {
                self.error(
                    spanned.span(),
                    &key,
                    "every [[usb]] needs `device = \"vendor:product\"`",
                );
                continue;
            };
            if let Some(id) = self.parse::<UsbId>(text, &key) {
                if let Some(first) = ids.iter().position(|other| *other == id) {
                    self.error(text.span(), &key, format!("{id} is already usb[{first}]"));
                    continue;
                }
                ids.push(id);
            }
        }
        ids
    }

    fn input(&mut self, raw: &RawProfile) -> Input {
        let (i, _) = section(&raw.input);
        let mut evdev = Vec::new();
        if let Some(list) = &i.evdev {
            for (index, text) in list.get_ref().iter().enumerate() {
                let path = PathBuf::from(text.get_ref());
                if !path.is_absolute() {
                    self.error(
                        text.span(),
                        &format!("input.evdev[{index}]"),
                        "use an absolute path, preferably /dev/input/by-id/... (event numbers change between boots)",
                    );
                    continue;
                }
                evdev.push(path);
            }
        }
        let toggles = [
            ("ctrl-ctrl", "ctrl-ctrl"),
            ("alt-alt", "alt-alt"),
            ("shift-shift", "shift-shift"),
            ("meta-meta", "meta-meta"),
            ("scrolllock", "scrolllock"),
            ("ctrl-scrolllock", "ctrl-scrolllock"),
        ];
        let grab_toggle = i
            .grab_toggle
            .as_ref()
            .and_then(|t| self.pick(t, "input.grab_toggle", &toggles))
            .map(str::to_string);
        Input { evdev, grab_toggle }
    }

    fn display(&mut self, raw: &RawProfile, pci: &[PciDevice]) -> Display {
        let (d, _) = section(&raw.display);
        let default_vga = if pci.is_empty() {
            VgaModel::Std
        } else {
            VgaModel::None
        };
        let vga = self.choose(
            &d.vga,
            "display.vga",
            &[
                ("none", VgaModel::None),
                ("std", VgaModel::Std),
                ("virtio", VgaModel::Virtio),
                ("qxl", VgaModel::Qxl),
            ],
            default_vga,
        );
        let gui = self.choose(
            &d.gui,
            "display.gui",
            &[("none", Gui::None), ("gtk", Gui::Gtk), ("sdl", Gui::Sdl)],
            Gui::None,
        );
        Display { vga, gui }
    }

    fn console(&mut self, raw: &RawProfile) -> SerialConsole {
        let (c, _) = section(&raw.console);
        self.choose(
            &c.serial,
            "console.serial",
            &[("none", SerialConsole::None), ("log", SerialConsole::Log)],
            SerialConsole::None,
        )
    }

    fn looking_glass(&mut self, raw: &RawProfile) -> Option<LookingGlass> {
        let spanned = raw.looking_glass.as_ref()?;
        let l = spanned.get_ref();
        let size = match (&l.size, &l.resolution) {
            (Some(size), Some(resolution)) => {
                self.error(
                    resolution.span(),
                    "looking_glass.resolution",
                    format!("give `size` or `resolution`, not both (size is {})", size.get_ref()),
                );
                None
            }
            (Some(text), None) => self.parse::<ByteSize>(text, "looking_glass.size").and_then(|size| {
                if size.bytes().is_power_of_two() && size.bytes() >= ByteSize::MIB {
                    Some(size)
                } else {
                    let up = ByteSize(size.bytes().max(ByteSize::MIB).next_power_of_two());
                    self.error(
                        text.span(),
                        "looking_glass.size",
                        format!("{size} is not a power of two of at least 1M (an ivshmem BAR must be); use {up}"),
                    );
                    None
                }
            }),
            (None, Some(text)) => self
                .parse::<Resolution>(text, "looking_glass.resolution")
                .map(Resolution::looking_glass_size),
            (None, None) => Some(Resolution { width: 1920, height: 1080 }.looking_glass_size()),
        };
        let path = match &l.path {
            Some(text) if Path::new(text.get_ref()).is_absolute() => PathBuf::from(text.get_ref()),
            Some(text) => {
                self.error(
                    text.span(),
                    "looking_glass.path",
                    "use an absolute path such as /dev/shm/looking-glass or /dev/kvmfr0",
                );
                PathBuf::new()
            }
            None => PathBuf::from("/dev/shm/looking-glass"),
        };
        let mode = match &l.mode {
            Some(text) => match u32::from_str_radix(text.get_ref().trim_start_matches("0o"), 8) {
                Ok(mode) if mode <= 0o777 => mode,
                _ => {
                    self.error(
                        text.span(),
                        "looking_glass.mode",
                        format!(
                            "`{}` is not an octal file mode such as \"0660\"",
                            text.get_ref()
                        ),
                    );
                    0o660
                }
            },
            None => 0o660,
        };
        let name_of = |value: &Option<Text>| value.as_ref().map(|t| t.get_ref().clone());
        Some(LookingGlass {
            size: size.unwrap_or(ByteSize(32 * ByteSize::MIB)),
            path,
            owner: name_of(&l.owner),
            group: name_of(&l.group),
            mode,
        })
    }

    fn single_gpu(&mut self, raw: &RawProfile, pci: &[PciDevice]) -> Option<SingleGpu> {
        let spanned = raw.single_gpu.as_ref()?;
        let s = spanned.get_ref();
        if pci.is_empty() {
            self.error(
                spanned.span(),
                "single_gpu",
                "a single-GPU session passes a GPU: add the GPU's functions as [[pci]]",
            );
        }
        let display_manager = match &s.display_manager {
            Some(text) if !text.get_ref().is_empty() && !text.get_ref().contains('/') => {
                text.get_ref().clone()
            }
            Some(text) => {
                self.error(
                    text.span(),
                    "single_gpu.display_manager",
                    "give a systemd unit name such as \"display-manager.service\"",
                );
                String::new()
            }
            None => "display-manager.service".to_string(),
        };
        let mut modules = Vec::new();
        if let Some(list) = &s.modules {
            for (index, text) in list.get_ref().iter().enumerate() {
                let name = text.get_ref();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    self.error(
                        text.span(),
                        &format!("single_gpu.modules[{index}]"),
                        format!("`{name}` is not a kernel module name"),
                    );
                    continue;
                }
                modules.push(name.clone());
            }
        }
        Some(SingleGpu {
            display_manager,
            modules,
        })
    }

    fn hook(&mut self, raw: &Option<Spanned<RawHook>>, key: &str) -> Vec<Vec<String>> {
        let Some(spanned) = raw else {
            return Vec::new();
        };
        let commands = match spanned.get_ref() {
            RawHook::One(argv) if argv.is_empty() => Vec::new(),
            RawHook::One(argv) => vec![argv.clone()],
            RawHook::Many(list) => list.clone(),
        };
        for argv in &commands {
            if argv.first().is_none_or(|program| program.is_empty()) {
                self.error(
                    spanned.span(),
                    key,
                    "a hook command needs a program: [\"/path/to/program\", \"arg\"...]",
                );
            }
        }
        commands
    }

    fn hooks(&mut self, raw: &RawProfile) -> Hooks {
        let (h, _) = section(&raw.hooks);
        Hooks {
            pre_start: self.hook(&h.pre_start, "hooks.pre_start"),
            post_stop: self.hook(&h.post_stop, "hooks.post_stop"),
        }
    }

    fn shutdown(&mut self, raw: &RawProfile) -> Shutdown {
        let (s, _) = section(&raw.shutdown);
        let seconds = s
            .timeout
            .as_ref()
            .and_then(|raw| self.int_in(raw, "shutdown.timeout", 0..=86400))
            .unwrap_or(120);
        Shutdown {
            timeout: Duration::from_secs(seconds as u64),
        }
    }

    fn qemu(&mut self, raw: &RawProfile) -> Qemu {
        let (q, _) = section(&raw.qemu);
        let binary = match &q.binary {
            Some(text) if !text.get_ref().is_empty() => text.get_ref().clone(),
            Some(text) => {
                self.error(
                    text.span(),
                    "qemu.binary",
                    "give a program name or an absolute path",
                );
                String::new()
            }
            None => "qemu-system-x86_64".to_string(),
        };
        let extra_args = q
            .extra_args
            .as_ref()
            .map(|list| list.get_ref().iter().map(|t| t.get_ref().clone()).collect())
            .unwrap_or_default();
        Qemu { binary, extra_args }
    }
}
