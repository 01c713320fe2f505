//! Validated VM → libvirt domain XML. Devices keep the guest addresses QEMU gives them under
//! vmrun (every PCI device on pcie.0 in the order of vmrun's argv, which is how QEMU assigns
//! free slots), CPU flags, topology, pinning and firmware files stay the same. Host steps that
//! libvirt has no element for become comments naming the hook each needs, and the vmrun keys
//! libvirt cannot hold travel in `<metadata>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::xml::Element;
use super::{QEMU_NAMESPACE, VMRUN_NAMESPACE};
use crate::model::smbios::SMBIOS_FIELDS;
use crate::model::*;
use crate::plan::argv::escape;
use crate::plan::{BootFirmware, VmPaths};

/// What `export` needs besides the model: what `vmrun show` resolves.
pub struct ExportInput<'a> {
    /// The VM with the host's choices made (`pinning.vcpus = "auto"` resolved).
    pub config: &'a VmConfig,
    /// The VM as the profile wrote it: what travels in `<metadata>` keeps the profile's words
    /// ("auto") rather than this host's answer.
    pub profile: &'a VmConfig,
    pub firmware: &'a BootFirmware,
    pub paths: &'a VmPaths,
    /// The QEMU binary as an absolute path (libvirt wants one), found on PATH by the caller.
    pub emulator: PathBuf,
}

/// The domain XML for the VM.
pub fn export(input: &ExportInput) -> String {
    let mut exporter = Exporter {
        input,
        config: input.config,
        next_slot: 1,
        commandline: Vec::new(),
        metadata: Element::new("vmrun:profile").attr("xmlns:vmrun", VMRUN_NAMESPACE),
    };
    exporter.domain().to_document()
}

struct Exporter<'a> {
    input: &'a ExportInput<'a>,
    config: &'a VmConfig,
    /// The next free slot on pcie.0, as QEMU hands them out in argv order.
    next_slot: u8,
    commandline: Vec<String>,
    metadata: Element,
}

fn pci_address(bus: u8, slot: u8, function: u8) -> Element {
    Element::new("address")
        .attr("type", "pci")
        .attr("domain", "0x0000")
        .attr("bus", format!("0x{bus:02x}"))
        .attr("slot", format!("0x{slot:02x}"))
        .attr("function", format!("0x{function:x}"))
}

fn state_on(name: &str) -> Element {
    Element::new(name).attr("state", "on")
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// vmrun's arguments that libvirt has an element for, recognised so they become that element.
#[derive(Default)]
struct KnownExtraArgs {
    uuid: Option<String>,
    localtime: bool,
    vmport_off: bool,
    boot_menu: bool,
    disable_s3: Option<bool>,
    disable_s4: Option<bool>,
    rest: Vec<String>,
}

fn known_extra_args(args: &[String]) -> KnownExtraArgs {
    let mut known = KnownExtraArgs::default();
    let mut index = 0;
    while index < args.len() {
        let pair = (
            args[index].as_str(),
            args.get(index + 1).map(String::as_str),
        );
        let recognised = match pair {
            ("-uuid", Some(uuid)) => {
                known.uuid = Some(uuid.to_string());
                true
            }
            ("-rtc", Some("base=localtime")) => {
                known.localtime = true;
                true
            }
            ("-machine", Some("vmport=off")) => {
                known.vmport_off = true;
                true
            }
            ("-boot", Some("menu=on")) => {
                known.boot_menu = true;
                true
            }
            ("-global", Some(global)) => match global.strip_prefix("ICH9-LPC.") {
                Some("disable_s3=1") => {
                    known.disable_s3 = Some(true);
                    true
                }
                Some("disable_s3=0") => {
                    known.disable_s3 = Some(false);
                    true
                }
                Some("disable_s4=1") => {
                    known.disable_s4 = Some(true);
                    true
                }
                Some("disable_s4=0") => {
                    known.disable_s4 = Some(false);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if recognised {
            index += 2;
        } else {
            known.rest.push(args[index].clone());
            index += 1;
        }
    }
    known
}

impl Exporter<'_> {
    fn take_slot(&mut self) -> u8 {
        let slot = self.next_slot;
        self.next_slot += 1;
        slot
    }

    fn domain(&mut self) -> Element {
        let config = self.config;
        let extra = known_extra_args(&config.qemu.extra_args);
        let mut domain = Element::new("domain")
            .attr(
                "type",
                match config.machine.accel {
                    Accel::Kvm => "kvm",
                    Accel::Tcg => "qemu",
                },
            )
            .attr("xmlns:qemu", QEMU_NAMESPACE);
        domain.comment(format!(
            "Exported by `vmrun export libvirt` from {}.",
            config.profile_path.display()
        ));
        domain.push(Element::new("name").text(config.name.as_str()));
        if let Some(uuid) = &extra.uuid {
            domain.push(Element::new("uuid").text(uuid.clone()));
        }
        let kib = config.machine.memory.bytes() / 1024;
        domain.push(
            Element::new("memory")
                .attr("unit", "KiB")
                .text(kib.to_string()),
        );
        domain.push(
            Element::new("currentMemory")
                .attr("unit", "KiB")
                .text(kib.to_string()),
        );
        if let Some(pages) = config.machine.hugepages {
            domain.push(
                Element::new("memoryBacking")
                    .child(
                        Element::new("hugepages").child(
                            Element::new("page")
                                .attr("size", (pages.bytes() / 1024).to_string())
                                .attr("unit", "KiB"),
                        ),
                    )
                    // vmrun's backend: memfd with hugetlb pages, no hugetlbfs mount needed.
                    .child(Element::new("source").attr("type", "memfd")),
            );
        }
        domain.push(
            Element::new("vcpu")
                .attr("placement", "static")
                .text(config.vcpu_count().to_string()),
        );
        if config.machine.iothreads > 0 {
            domain.push(Element::new("iothreads").text(config.machine.iothreads.to_string()));
        }
        if let Some(cputune) = self.cputune(&mut domain) {
            domain.push(cputune);
        }
        if let Some(sysinfo) = self.sysinfo() {
            domain.push(sysinfo);
        }
        domain.push(self.os(&extra));
        domain.push(self.features(&extra));
        domain.push(self.cpu());
        domain.push(self.clock(&extra));
        domain.push(Element::new("on_poweroff").text("destroy"));
        domain.push(Element::new("on_reboot").text("restart"));
        domain.push(Element::new("on_crash").text("destroy"));
        // machine.suspend = false is vmrun's disable_s3/disable_s4; extra_args come later on
        // vmrun's command line, so theirs win.
        let suspend_off = (!config.machine.suspend).then_some(true);
        let disable_s3 = extra.disable_s3.or(suspend_off);
        let disable_s4 = extra.disable_s4.or(suspend_off);
        if disable_s3.is_some() || disable_s4.is_some() {
            let mut pm = Element::new("pm");
            let enabled = |disabled: bool| if disabled { "no" } else { "yes" };
            if let Some(disabled) = disable_s3 {
                pm.push(Element::new("suspend-to-mem").attr("enabled", enabled(disabled)));
            }
            if let Some(disabled) = disable_s4 {
                pm.push(Element::new("suspend-to-disk").attr("enabled", enabled(disabled)));
            }
            domain.push(pm);
        }
        let devices = self.devices();
        self.host_steps(&mut domain);
        domain.push(devices);
        self.commandline.extend(extra.rest.iter().cloned());
        if !self.commandline.is_empty() {
            let mut commandline = Element::new("qemu:commandline");
            for arg in &self.commandline {
                commandline.push(Element::new("qemu:arg").attr("value", arg.clone()));
            }
            domain.push(commandline);
        }
        if self.metadata.has_children() {
            let metadata = std::mem::replace(&mut self.metadata, Element::new("vmrun:profile"));
            // libvirt keeps <metadata> where it likes it: right after the name.
            let position = domain
                .children
                .iter()
                .position(|n| matches!(n, super::xml::Node::Element(e) if e.name == "name"))
                .map(|p| p + 1)
                .unwrap_or(0);
            domain.children.insert(
                position,
                super::xml::Node::Element(Element::new("metadata").child(metadata)),
            );
        }
        domain
    }

    fn cputune(&mut self, domain: &mut Element) -> Option<Element> {
        let pinning = self.config.pinning.as_ref()?;
        if pinning.auto {
            domain.comment(
                "vmrun picks the vCPUs' host CPUs (whole cores) from the host's topology at every start \
                 (pinning.vcpus = \"auto\"); the <vcpupin> entries below are this host's choice at export",
            );
            self.metadata
                .push(Element::new("vmrun:pinning").attr("vcpus", "auto").attr_if(
                    !self.input.profile.cpu.threads_given,
                    "threads",
                    "host",
                ));
        }
        let mut cputune = Element::new("cputune");
        for (vcpu, cpu) in pinning.vcpus.iter().enumerate() {
            cputune.push(
                Element::new("vcpupin")
                    .attr("vcpu", vcpu.to_string())
                    .attr("cpuset", cpu.to_string()),
            );
        }
        match &pinning.emulator {
            Some(cpus) => {
                cputune.push(Element::new("emulatorpin").attr("cpuset", cpus.to_list_string()))
            }
            None => domain.comment(
                "vmrun runs QEMU's other threads on every online host CPU that no vCPU is pinned \
                 to; libvirt needs that set written as <emulatorpin cpuset='...'/>",
            ),
        }
        if let Some(cpus) = &pinning.iothreads {
            for id in 1..=self.config.machine.iothreads {
                cputune.push(
                    Element::new("iothreadpin")
                        .attr("iothread", id.to_string())
                        .attr("cpuset", cpus.to_list_string()),
                );
            }
        }
        if pinning.scheduler.is_realtime() {
            let last = pinning.vcpus.len().saturating_sub(1);
            cputune.push(
                Element::new("vcpusched")
                    .attr(
                        "vcpus",
                        if last == 0 {
                            "0".to_string()
                        } else {
                            format!("0-{last}")
                        },
                    )
                    .attr("scheduler", pinning.scheduler.as_str())
                    .attr("priority", pinning.priority.to_string()),
            );
        }
        Some(cputune)
    }

    /// `[smbios]` fields as libvirt's `<sysinfo>`: its entry names are QEMU's.
    fn sysinfo(&mut self) -> Option<Element> {
        let smbios = self
            .config
            .smbios
            .as_ref()
            .filter(|s| !s.fields.is_empty())?;
        let mut sysinfo = Element::new("sysinfo").attr("type", "smbios");
        for (table, name) in [(0, "bios"), (1, "system"), (2, "baseBoard"), (3, "chassis")] {
            let mut element = Element::new(name);
            for field in SMBIOS_FIELDS.iter().filter(|f| f.table == table) {
                if let Some(value) = smbios.fields.get(field.key) {
                    element.push(
                        Element::new("entry")
                            .attr("name", field.qemu)
                            .text(value.clone()),
                    );
                }
            }
            if element.has_children() {
                sysinfo.push(element);
            }
        }
        Some(sysinfo)
    }

    fn os(&mut self, extra: &KnownExtraArgs) -> Element {
        let mut os = Element::new("os").child(
            Element::new("type")
                .attr("arch", "x86_64")
                .attr("machine", self.config.machine.machine_type.clone())
                .text("hvm"),
        );
        if let BootFirmware::Ovmf(resolved) = self.input.firmware {
            os.push(
                Element::new("loader")
                    .attr("readonly", "yes")
                    .attr_if(resolved.secure_boot, "secure", "yes")
                    .attr("type", "pflash")
                    .text(path_text(&resolved.code.path)),
            );
            // The VARS file vmrun uses: libvirt then boots with the same entries and keys.
            os.push(
                Element::new("nvram")
                    .attr("template", path_text(&resolved.vars_template.path))
                    .text(path_text(
                        &self.input.paths.vars(resolved.vars_template.format),
                    )),
            );
            if matches!(self.config.firmware, Firmware::Ovmf { files: None, .. }) {
                self.metadata
                    .push(Element::new("vmrun:firmware").attr("selection", "descriptors"));
            }
        }
        if extra.boot_menu {
            os.push(Element::new("bootmenu").attr("enable", "yes"));
        }
        match &self.config.smbios {
            Some(smbios) if smbios.from_host => {
                os.push(Element::new("smbios").attr("mode", "host"));
                if !smbios.fields.is_empty() {
                    // libvirt's host mode copies the host's BIOS and system tables and
                    // ignores <sysinfo>; vmrun lays the profile's fields over the host's.
                    os.comment(
                        "vmrun writes the <sysinfo> fields over the host's values; libvirt's mode='host' \
                         ignores <sysinfo>: for both, write the host's values into <sysinfo> and use mode='sysinfo'",
                    );
                }
            }
            Some(smbios) if !smbios.fields.is_empty() => {
                os.push(Element::new("smbios").attr("mode", "sysinfo"));
            }
            _ => {}
        }
        if extra
            .rest
            .iter()
            .any(|arg| arg == "-smbios" || arg.starts_with("-smbios"))
        {
            // vmrun's -smbios arguments follow libvirt's own: the guest sees the same tables.
            os.comment("SMBIOS tables come from the -smbios arguments in <qemu:commandline>");
        }
        os
    }

    fn features(&mut self, extra: &KnownExtraArgs) -> Element {
        let cpu = &self.config.cpu;
        let mut features = Element::new("features")
            .child(Element::new("acpi"))
            .child(Element::new("apic"));
        if !cpu.hyperv.is_empty() {
            let mut hyperv = Element::new("hyperv").attr("mode", "custom");
            let names: Vec<&str> = cpu
                .hyperv
                .iter()
                .map(|prop| {
                    let name = prop.strip_prefix("hv-").unwrap_or(prop);
                    name.split_once('=').map(|(n, _)| n).unwrap_or(name)
                })
                .collect();
            for name in &names {
                match *name {
                    "time" | "stimer-direct" => {}
                    "spinlocks" => {
                        hyperv.push(state_on("spinlocks").attr("retries", "8191"));
                    }
                    "stimer" => {
                        let mut stimer = state_on("stimer");
                        if names.contains(&"stimer-direct") {
                            stimer.push(state_on("direct"));
                        }
                        hyperv.push(stimer);
                    }
                    other => hyperv.push(state_on(other)),
                }
                if *name == "reset" {
                    if let Some(vendor) = &cpu.hv_vendor_id {
                        hyperv.push(state_on("vendor_id").attr("value", vendor.clone()));
                    }
                }
            }
            if !names.contains(&"reset") {
                if let Some(vendor) = &cpu.hv_vendor_id {
                    hyperv.push(state_on("vendor_id").attr("value", vendor.clone()));
                }
            }
            features.push(hyperv);
        }
        let mut kvm = Element::new("kvm");
        if cpu.hide_hypervisor {
            kvm.push(state_on("hidden"));
        }
        for feature in &cpu.features {
            match feature.as_str() {
                "kvm-hint-dedicated=on" => kvm.push(state_on("hint-dedicated")),
                "kvm-poll-control=on" => kvm.push(state_on("poll-control")),
                "kvm-pv-ipi=off" => kvm.push(Element::new("pv-ipi").attr("state", "off")),
                _ => {}
            }
        }
        if kvm.has_children() {
            features.push(kvm);
        }
        if extra.vmport_off {
            features.push(Element::new("vmport").attr("state", "off"));
        }
        if let BootFirmware::Ovmf(resolved) = self.input.firmware {
            if resolved.secure_boot || resolved.requires_smm {
                features.push(state_on("smm"));
            }
        }
        features
    }

    fn cpu(&mut self) -> Element {
        let cpu = &self.config.cpu;
        let migratable_off = cpu.features.iter().any(|f| f == "migratable=off");
        let mut element = match cpu.model.as_str() {
            "host" => Element::new("cpu")
                .attr("mode", "host-passthrough")
                .attr("check", "none")
                .attr_if(migratable_off, "migratable", "off"),
            "max" => Element::new("cpu")
                .attr("mode", "maximum")
                .attr("check", "none")
                .attr_if(migratable_off, "migratable", "off"),
            model => Element::new("cpu")
                .attr("mode", "custom")
                .attr("match", "exact")
                .attr("check", "none")
                .child(
                    Element::new("model")
                        .attr("fallback", "forbid")
                        .text(model.to_string()),
                ),
        };
        let topology = cpu.topology;
        element.push(
            Element::new("topology")
                .attr("sockets", topology.sockets.to_string())
                .attr("dies", "1")
                .attr("cores", topology.cores.to_string())
                .attr("threads", topology.threads.to_string()),
        );
        for feature in &cpu.features {
            let (name, state) = feature.split_once('=').unwrap_or((feature, "on"));
            match (name, state) {
                ("migratable", _) | ("kvm-hint-dedicated" | "kvm-poll-control", "on") => {}
                ("kvm-pv-ipi", "off") => {}
                ("host-cache-info", "on") => {
                    element.push(Element::new("cache").attr("mode", "passthrough"))
                }
                ("l3-cache", "on") => element.push(
                    Element::new("cache")
                        .attr("level", "3")
                        .attr("mode", "emulate"),
                ),
                ("l3-cache", "off") => element.push(Element::new("cache").attr("mode", "disable")),
                (name, state) => element.push(
                    Element::new("feature")
                        .attr("policy", if state == "off" { "disable" } else { "require" })
                        .attr("name", name),
                ),
            }
        }
        element
    }

    fn clock(&mut self, extra: &KnownExtraArgs) -> Element {
        let localtime = match &self.config.clock {
            Some(clock) => clock.base == ClockBase::Localtime || extra.localtime,
            None => extra.localtime,
        };
        let mut clock =
            Element::new("clock").attr("offset", if localtime { "localtime" } else { "utc" });
        if let Some(settings) = &self.config.clock {
            // libvirt's rtc catchup is QEMU's driftfix=slew.
            if settings.rtc_driftfix {
                clock.push(
                    Element::new("timer")
                        .attr("name", "rtc")
                        .attr("tickpolicy", "catchup"),
                );
            }
            // vmrun sets the in-kernel PIT's policy under KVM only (TCG has no kvm-pit).
            if self.config.machine.accel == Accel::Kvm {
                clock.push(
                    Element::new("timer")
                        .attr("name", "pit")
                        .attr("tickpolicy", settings.pit_lost_ticks.as_str()),
                );
            }
            clock.push(
                Element::new("timer")
                    .attr("name", "hpet")
                    .attr("present", if settings.hpet { "yes" } else { "no" }),
            );
        }
        if self.config.cpu.hyperv.iter().any(|p| p == "hv-time") {
            clock.push(
                Element::new("timer")
                    .attr("name", "hypervclock")
                    .attr("present", "yes"),
            );
        }
        clock
    }

    fn devices(&mut self) -> Element {
        let config = self.config;
        let mut devices = Element::new("devices");
        devices.push(Element::new("emulator").text(path_text(&self.input.emulator)));
        // Argv order from here on: it decides which pcie.0 slot each device gets.
        let video = match config.display.vga {
            VgaModel::None => {
                Element::new("video").child(Element::new("model").attr("type", "none"))
            }
            vga => {
                let model = match vga {
                    VgaModel::Virtio => "virtio",
                    VgaModel::Qxl => "qxl",
                    _ => "vga",
                };
                let slot = self.take_slot();
                Element::new("video")
                    .child(
                        Element::new("model")
                            .attr("type", model)
                            .attr("primary", "yes"),
                    )
                    .child(pci_address(0, slot, 0))
            }
        };
        match config.display.gui {
            Gui::Sdl => devices.push(Element::new("graphics").attr("type", "sdl")),
            Gui::Gtk | Gui::None => {}
        }
        self.remote_display(&mut devices);
        devices.push(video);
        if config
            .display
            .remote
            .as_ref()
            .is_some_and(|r| r.protocol == RemoteProtocol::Spice)
        {
            // The SPICE agent's port: vmrun's virtio-serial-pci comes right after the video.
            let slot = self.take_slot();
            devices.push(
                Element::new("controller")
                    .attr("type", "virtio-serial")
                    .attr("index", "0")
                    .child(pci_address(0, slot, 0)),
            );
            devices.push(
                Element::new("channel")
                    .attr("type", "spicevmc")
                    .child(
                        Element::new("target")
                            .attr("type", "virtio")
                            .attr("name", "com.redhat.spice.0"),
                    )
                    .child(
                        Element::new("address")
                            .attr("type", "virtio-serial")
                            .attr("controller", "0")
                            .attr("bus", "0")
                            .attr("port", "1"),
                    ),
            );
        }
        if config.tpm.is_some() {
            // vmrun's swtpm keeps its state in the VM's state directory, libvirt's in
            // /var/lib/libvirt/swtpm/<uuid>: copy it over to keep BitLocker's keys.
            devices.comment(format!(
                "vmrun's TPM state is in {}; libvirt starts its own swtpm with its state in \
                 /var/lib/libvirt/swtpm/<uuid>/tpm2: copy it there before the first start to keep BitLocker and Windows Hello",
                self.input.paths.tpm_state.display()
            ));
            devices.push(
                Element::new("tpm").attr("model", "tpm-crb").child(
                    Element::new("backend")
                        .attr("type", "emulator")
                        .attr("version", "2.0"),
                ),
            );
        }
        self.disks(&mut devices);
        self.network(&mut devices);
        self.passthrough(&mut devices);
        self.usb(&mut devices);
        if config.display.remote.is_some() && config.display.vga != VgaModel::None {
            // vmrun's absolute pointer for a remote display, on the xHCI controller.
            devices.push(
                Element::new("input")
                    .attr("type", "tablet")
                    .attr("bus", "usb"),
            );
        }
        self.sound(&mut devices);
        self.input(&mut devices);
        self.looking_glass(&mut devices);
        if config.serial == SerialConsole::Log {
            devices.push(
                Element::new("serial")
                    .attr("type", "file")
                    .child(
                        Element::new("source")
                            .attr("path", path_text(&self.input.paths.console_log)),
                    )
                    .child(
                        Element::new("target")
                            .attr("type", "isa-serial")
                            .attr("port", "0")
                            .child(Element::new("model").attr("name", "isa-serial")),
                    ),
            );
        }
        devices.push(Element::new("memballoon").attr("model", "none"));
        // vmrun gives every VM a pvpanic device, so that a guest panic ends the run.
        devices.push(Element::new("panic").attr("model", "isa"));
        devices
    }

    /// `[display] remote`: libvirt's `<graphics>`. vmrun's own socket path stays vmrun's: a
    /// socket `<listen>` without a path makes libvirt put one in its own directory.
    fn remote_display(&mut self, devices: &mut Element) {
        let display = &self.config.display;
        let mut metadata = Element::new("vmrun:display");
        if display.gui == Gui::Gtk {
            metadata = metadata.attr("gui", "gtk");
        }
        if let Some(remote) = &display.remote {
            let mut graphics = Element::new("graphics").attr("type", remote.protocol.as_str());
            match &remote.listen {
                Listen::Unix => {
                    let socket = match remote.protocol {
                        RemoteProtocol::Spice => &self.input.paths.spice_socket,
                        RemoteProtocol::Vnc => &self.input.paths.vnc_socket,
                    };
                    devices.comment(format!(
                        "vmrun's {} socket is {}; libvirt makes its own (`virsh domdisplay` names it)",
                        remote.protocol.as_str(),
                        socket.display()
                    ));
                    graphics.push(Element::new("listen").attr("type", "socket"));
                }
                Listen::Tcp { addr, port } => {
                    graphics = graphics
                        .attr("port", port.to_string())
                        .attr("autoport", "no");
                    graphics.push(
                        Element::new("listen")
                            .attr("type", "address")
                            .attr("address", addr.to_string()),
                    );
                }
            }
            if let Some(file) = &remote.password_file {
                // libvirt takes the password itself (passwd=), never a file: it is not copied
                // into a document that is shown and shared.
                devices.comment(format!(
                    "vmrun reads the {} password from {}; libvirt needs it as passwd='...' on <graphics>",
                    remote.protocol.as_str(),
                    file.display()
                ));
                metadata = metadata.attr("password-file", path_text(file));
            }
            devices.push(graphics);
        }
        if !metadata.attributes.is_empty() {
            self.metadata.push(metadata);
        }
    }

    /// `[audio]`: `<sound>` with the `<audio>` backend it plays through.
    fn sound(&mut self, devices: &mut Element) {
        let Some(audio) = &self.config.audio else {
            return;
        };
        let mut sound = Element::new("sound")
            .attr(
                "model",
                match audio.device {
                    AudioDevice::Ich9 => "ich9",
                    AudioDevice::Usb => "usb",
                },
            )
            .child(Element::new("audio").attr("id", "1"));
        // ich9-intel-hda is a PCI device, after vmrun's xHCI; usb-audio sits on the xHCI.
        if audio.device == AudioDevice::Ich9 {
            let slot = self.take_slot();
            sound.push(pci_address(0, slot, 0));
        }
        devices.push(sound);
        let backend = match &audio.backend {
            AudioBackend::PulseAudio {
                server,
                cookie,
                user,
            } => {
                let mut metadata = Element::new("vmrun:audio");
                if let Some(user) = user {
                    metadata = metadata.attr("user", user.clone());
                }
                if let Some(cookie) = cookie {
                    metadata = metadata.attr("cookie", path_text(cookie));
                }
                if !metadata.attributes.is_empty() {
                    self.metadata.push(metadata);
                }
                devices.comment(format!(
                    "vmrun plays through the PulseAudio server of {} with that user's cookie ({}); \
                     libvirt's QEMU runs as its own user and has no cookie setting: it needs serverName \
                     and qemu.conf's user set to the desktop user",
                    user.as_deref().unwrap_or("the user who ran sudo"),
                    cookie
                        .as_ref()
                        .map(|c| c.display().to_string())
                        .unwrap_or_else(|| "~/.config/pulse/cookie".to_string())
                ));
                let mut element = Element::new("audio")
                    .attr("id", "1")
                    .attr("type", "pulseaudio");
                if let Some(server) = server {
                    element = element.attr("serverName", format!("unix:{}", server.display()));
                }
                element
            }
            AudioBackend::PipeWire { server, user } => {
                if let Some(user) = user {
                    self.metadata
                        .push(Element::new("vmrun:audio").attr("user", user.clone()));
                }
                devices.comment(format!(
                    "vmrun plays through the PipeWire server of {}; <audio type='pipewire'> needs \
                     libvirt 9.10 or later, QEMU 8.1 or later, and qemu.conf's user set to the desktop user",
                    user.as_deref().unwrap_or("the user who ran sudo"),
                ));
                let mut element = Element::new("audio")
                    .attr("id", "1")
                    .attr("type", "pipewire");
                if let Some(server) = server {
                    element =
                        element.attr("runtimeDir", path_text(server.parent().unwrap_or(server)));
                }
                element
            }
            AudioBackend::None => Element::new("audio").attr("id", "1").attr("type", "none"),
        };
        devices.push(backend);
    }

    fn disks(&mut self, devices: &mut Element) {
        let config = self.config;
        let iothreads = config.machine.iothreads;
        let mut next_iothread = 0;
        let mut iothread_for = || -> Option<u32> {
            if iothreads == 0 {
                return None;
            }
            let id = next_iothread % iothreads + 1;
            next_iothread += 1;
            Some(id)
        };
        if config.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
            let slot = self.take_slot();
            let mut controller = Element::new("controller")
                .attr("type", "scsi")
                .attr("index", "0")
                .attr("model", "virtio-scsi");
            if let Some(id) = iothread_for() {
                controller.push(Element::new("driver").attr("iothread", id.to_string()));
            }
            controller.push(pci_address(0, slot, 0));
            devices.push(controller);
        }
        let (mut vd, mut sd, mut sata_port, mut scsi_target) = (0u8, 0u8, 0u8, 0u8);
        for (index, disk) in config.disks.iter().enumerate() {
            if disk.bus == DiskBus::Nvme {
                self.nvme(index, disk);
                continue;
            }
            let block = disk.path.starts_with("/dev/");
            let mut element = Element::new("disk")
                .attr("type", if block { "block" } else { "file" })
                .attr(
                    "device",
                    if disk.media == Media::Cdrom {
                        "cdrom"
                    } else {
                        "disk"
                    },
                );
            let mut driver = Element::new("driver")
                .attr("name", "qemu")
                .attr("type", disk.format.as_str());
            driver = match disk.cache {
                CacheMode::Writeback => driver,
                CacheMode::None => driver.attr("cache", "none"),
                CacheMode::Unsafe => driver.attr("cache", "unsafe"),
            };
            driver = driver.attr_if(disk.discard, "discard", "unmap");
            if disk.bus == DiskBus::Virtio {
                if let Some(id) = iothread_for() {
                    driver = driver.attr("iothread", id.to_string());
                }
            }
            element.push(driver);
            element.push(
                Element::new("source")
                    .attr(if block { "dev" } else { "file" }, path_text(&disk.path)),
            );
            let (dev, bus, address) = match disk.bus {
                DiskBus::Virtio => {
                    let dev = format!("vd{}", (b'a' + vd) as char);
                    vd += 1;
                    let slot = self.take_slot();
                    (dev, "virtio", pci_address(0, slot, 0))
                }
                DiskBus::Sata => {
                    let dev = format!("sd{}", (b'a' + sd) as char);
                    sd += 1;
                    let address = Element::new("address")
                        .attr("type", "drive")
                        .attr("controller", "0")
                        .attr("bus", "0")
                        .attr("target", "0")
                        .attr("unit", sata_port.to_string());
                    sata_port += 1;
                    (dev, "sata", address)
                }
                DiskBus::Scsi | DiskBus::Nvme => {
                    let dev = format!("sd{}", (b'a' + sd) as char);
                    sd += 1;
                    let address = Element::new("address")
                        .attr("type", "drive")
                        .attr("controller", "0")
                        .attr("bus", "0")
                        .attr("target", scsi_target.to_string())
                        .attr("unit", "0");
                    scsi_target += 1;
                    (dev, "scsi", address)
                }
            };
            element.push(Element::new("target").attr("dev", dev).attr("bus", bus));
            if disk.readonly {
                element.push(Element::new("readonly"));
            }
            if let Some(order) = disk.boot_order {
                element.push(Element::new("boot").attr("order", order.to_string()));
            }
            element.push(address);
            devices.push(element);
        }
    }

    /// libvirt 9 has no NVMe disk: the same QEMU devices go on its command line.
    fn nvme(&mut self, index: usize, disk: &Disk) {
        let id = format!("vmrun-nvme{index}");
        let mut drive = format!(
            "file={},format={},if=none,id={id}",
            escape(&path_text(&disk.path)),
            disk.format.as_str()
        );
        if disk.readonly {
            drive.push_str(",readonly=on");
        }
        match disk.cache {
            CacheMode::None => drive.push_str(",cache.direct=on"),
            CacheMode::Unsafe => drive.push_str(",cache.no-flush=on"),
            CacheMode::Writeback => {}
        }
        if disk.discard {
            drive.push_str(",discard=unmap");
        }
        let slot = self.take_slot();
        let mut device = format!("nvme,drive={id},serial=vmrun{index},bus=pcie.0,addr=0x{slot:x}");
        if let Some(order) = disk.boot_order {
            device.push_str(&format!(",bootindex={order}"));
        }
        self.commandline
            .extend(["-drive".to_string(), drive, "-device".to_string(), device]);
    }

    fn network(&mut self, devices: &mut Element) {
        let network = &self.config.network;
        let mut interface = match &network.mode {
            NetworkMode::None => return,
            NetworkMode::User => Element::new("interface").attr("type", "user"),
            NetworkMode::Bridge(bridge) => Element::new("interface")
                .attr("type", "bridge")
                .child(Element::new("source").attr("bridge", bridge.clone())),
            NetworkMode::Tap(tap) => Element::new("interface").attr("type", "ethernet").child(
                Element::new("target")
                    .attr("dev", tap.clone())
                    .attr("managed", "no"),
            ),
        };
        interface.push(Element::new("mac").attr("address", network.mac.to_string()));
        interface.push(Element::new("model").attr(
            "type",
            match network.model {
                NicModel::Virtio => "virtio",
                NicModel::E1000e => "e1000e",
                NicModel::Rtl8139 => "rtl8139",
            },
        ));
        let slot = self.take_slot();
        interface.push(pci_address(0, slot, 0));
        devices.push(interface);
    }

    fn passthrough(&mut self, devices: &mut Element) {
        let seabios = matches!(self.input.firmware, BootFirmware::SeaBios);
        let mut slots: BTreeMap<(u16, u8, u8), Vec<&PciDevice>> = BTreeMap::new();
        for device in &self.config.pci {
            slots
                .entry(device.address.slot_key())
                .or_default()
                .push(device);
        }
        for (port, functions) in slots.values_mut().enumerate() {
            functions.sort_by_key(|device| device.address.function);
            let index = port + 1;
            let slot = self.take_slot();
            devices.push(
                Element::new("controller")
                    .attr("type", "pci")
                    .attr("index", index.to_string())
                    .attr("model", "pcie-root-port")
                    .child(Element::new("model").attr("name", "pcie-root-port"))
                    .child(Element::new("target").attr("chassis", index.to_string()))
                    .child(pci_address(0, slot, 0)),
            );
            let multifunction = functions.len() > 1;
            for (guest_function, device) in functions.iter().enumerate() {
                let host = device.address;
                let mut hostdev = Element::new("hostdev")
                    .attr("mode", "subsystem")
                    .attr("type", "pci")
                    .attr("managed", "yes")
                    .child(Element::new("driver").attr("name", "vfio"))
                    .child(
                        Element::new("source").child(
                            Element::new("address")
                                .attr("domain", format!("0x{:04x}", host.domain))
                                .attr("bus", format!("0x{:02x}", host.bus))
                                .attr("slot", format!("0x{:02x}", host.slot))
                                .attr("function", format!("0x{:x}", host.function)),
                        ),
                    );
                if device.romfile.is_some() || device.rombar.is_some() {
                    let mut rom = Element::new("rom");
                    if let Some(bar) = device.rombar {
                        rom = rom.attr("bar", if bar { "on" } else { "off" });
                    }
                    if let Some(file) = &device.romfile {
                        rom = rom.attr("file", path_text(file));
                    }
                    hostdev.push(rom);
                }
                if let Some(order) = device.boot_order {
                    hostdev.push(Element::new("boot").attr("order", order.to_string()));
                }
                if device.vga {
                    hostdev.push(Element::new("alias").attr("name", "ua-vmrun-vga"));
                    if seabios {
                        self.commandline.extend([
                            "-set".to_string(),
                            "device.ua-vmrun-vga.x-vga=on".to_string(),
                        ]);
                    }
                }
                hostdev.push(pci_address(index as u8, 0, guest_function as u8).attr_if(
                    multifunction && guest_function == 0,
                    "multifunction",
                    "on",
                ));
                devices.push(hostdev);
            }
        }
    }

    fn usb(&mut self, devices: &mut Element) {
        // vmrun gives every VM its xHCI controller (for hot-plug), so it takes a slot always.
        let slot = self.take_slot();
        devices.push(
            Element::new("controller")
                .attr("type", "usb")
                .attr("index", "0")
                .attr("model", "qemu-xhci")
                .child(pci_address(0, slot, 0)),
        );
        for (index, device) in self.config.usb.iter().enumerate() {
            match device {
                UsbDevice::Id(id) => devices.push(
                    Element::new("hostdev")
                        .attr("mode", "subsystem")
                        .attr("type", "usb")
                        .attr("managed", "yes")
                        .child(
                            Element::new("source")
                                .child(
                                    Element::new("vendor")
                                        .attr("id", format!("0x{:04x}", id.vendor)),
                                )
                                .child(
                                    Element::new("product")
                                        .attr("id", format!("0x{:04x}", id.product)),
                                ),
                        ),
                ),
                // libvirt's <hostdev> names a device by bus and device number, which change
                // at every plug; the port is QEMU's own usb-host property.
                UsbDevice::Port(port) => self.commandline.extend([
                    "-device".to_string(),
                    format!(
                        "usb-host,id=ua-vmrun-usb{index},bus=usb.0,hostbus={},hostport={}",
                        port.bus,
                        port.path()
                    ),
                ]),
            }
        }
    }

    fn input(&mut self, devices: &mut Element) {
        for path in &self.config.input.evdev {
            let keyboard = path.to_string_lossy().ends_with("event-kbd");
            let mut source = Element::new("source").attr("dev", path_text(path));
            if keyboard {
                source = source.attr("grab", "all").attr("repeat", "on");
                if let Some(toggle) = &self.config.input.grab_toggle {
                    source = source.attr("grabToggle", toggle.clone());
                }
            }
            devices.push(Element::new("input").attr("type", "evdev").child(source));
        }
    }

    fn looking_glass(&mut self, devices: &mut Element) {
        let Some(lg) = &self.config.looking_glass else {
            return;
        };
        let slot = self.take_slot();
        let shm_name = lg
            .path
            .strip_prefix("/dev/shm")
            .ok()
            .and_then(|rest| rest.to_str())
            .filter(|name| !name.is_empty() && !name.contains('/'))
            .map(str::to_string);
        let size_mib = lg.size.bytes() / ByteSize::MIB;
        match shm_name {
            Some(name) => devices.push(
                Element::new("shmem")
                    .attr("name", name)
                    .child(Element::new("model").attr("type", "ivshmem-plain"))
                    .child(Element::new("size").attr("unit", "M").text(size_mib.to_string()))
                    .child(pci_address(0, slot, 0)),
            ),
            // A kvmfr device (or a file elsewhere) is not a libvirt <shmem>.
            None => self.commandline.extend([
                "-object".to_string(),
                format!(
                    "memory-backend-file,id=vmrun-looking-glass,share=on,mem-path={},size={}",
                    escape(&path_text(&lg.path)),
                    lg.size.qemu_spelling()
                ),
                "-device".to_string(),
                format!("ivshmem-plain,id=vmrun-looking-glass-dev,memdev=vmrun-looking-glass,bus=pcie.0,addr=0x{slot:x}"),
            ]),
        }
        if lg.owner.is_some() || lg.group.is_some() || lg.mode != 0o660 {
            self.metadata.push(
                Element::new("vmrun:looking-glass")
                    .attr_if(
                        lg.owner.is_some(),
                        "owner",
                        lg.owner.clone().unwrap_or_default(),
                    )
                    .attr_if(
                        lg.group.is_some(),
                        "group",
                        lg.group.clone().unwrap_or_default(),
                    )
                    .attr("mode", format!("{:04o}", lg.mode)),
            );
        }
    }

    /// What `vmrun run` does to the host that libvirt does not, as comments.
    fn host_steps(&mut self, domain: &mut Element) {
        let config = self.config;
        let name = config.name.as_str();
        let hook = |phase: &str| {
            format!("a libvirt hook, /etc/libvirt/hooks/qemu.d/vmrun-{name}, acting on `{name} {phase}`")
        };
        if !config.pci.is_empty() {
            domain.comment(
                "vmrun moves each passed device to vfio-pci and back; managed='yes' makes libvirt do the same",
            );
        }
        if let Some(single_gpu) = &config.single_gpu {
            domain.comment(format!(
                "vmrun stops {}, unbinds the vtconsoles and the EFI framebuffer and unloads [{}] before \
                 the start, and gives all of it back after: libvirt needs {} and the reverse on `{name} release end`",
                single_gpu.display_manager,
                single_gpu.modules.join(", "),
                hook("prepare begin")
            ));
            let mut element = Element::new("vmrun:single-gpu")
                .attr("display-manager", single_gpu.display_manager.clone());
            for module in &single_gpu.modules {
                element.push(Element::new("vmrun:module").attr("name", module.clone()));
            }
            self.metadata.push(element);
        }
        if let Some(pages) = config.machine.hugepages {
            let count = config.machine.memory.bytes() / pages.bytes();
            let kib = pages.bytes() / 1024;
            domain.comment(format!(
                "vmrun allocates {count} huge pages of {kib} KiB before the start and releases them after: \
                 libvirt needs them reserved (hugepages= on the kernel command line) or {} writing \
                 /sys/kernel/mm/hugepages/hugepages-{kib}kB/nr_hugepages",
                hook("prepare begin")
            ));
        }
        if let Some(lg) = &config.looking_glass {
            if !lg.is_kvmfr() {
                domain.comment(format!(
                    "vmrun creates {} with owner {}, group {}, mode {:04o}; libvirt creates the shared memory file as its \
                     own qemu user: for the Looking Glass client to read it, {} must set them",
                    lg.path.display(),
                    lg.owner.as_deref().unwrap_or("(vmrun's user)"),
                    lg.group.as_deref().unwrap_or("(vmrun's group)"),
                    lg.mode,
                    hook("started begin")
                ));
            }
        }
        for (phase, hooks, libvirt_phase) in [
            ("pre_start", &config.hooks.pre_start, "prepare begin"),
            ("started", &config.hooks.started, "started begin"),
            ("post_stop", &config.hooks.post_stop, "release end"),
        ] {
            for argv in hooks.iter() {
                domain.comment(format!(
                    "vmrun runs the {phase} hook `{}`: libvirt needs {}",
                    argv.join(" "),
                    hook(libvirt_phase)
                ));
                let mut element = Element::new("vmrun:hook").attr("phase", phase);
                for arg in argv {
                    element.push(Element::new("vmrun:arg").text(arg.clone()));
                }
                self.metadata.push(element);
            }
        }
        let timeout = config.shutdown.timeout.as_secs();
        domain.comment(format!(
            "vmrun gives the guest {timeout} s to power off after ACPI power-off, then stops it: with libvirt, \
             `virsh shutdown {name}` then `virsh destroy {name}` (libvirt-guests: SHUTDOWN_TIMEOUT={timeout})"
        ));
        self.metadata
            .push(Element::new("vmrun:shutdown").attr("timeout", timeout.to_string()));
        if config.display.gui == Gui::Gtk {
            domain.comment("vmrun opens a GTK window; libvirt has no GTK display (virt-viewer with <graphics type='spice'/> is the nearest)");
        }
        if let Some(isolation) = &self.input.profile.isolation {
            let host_cpus = match &isolation.host_cpus {
                HostCpus::Auto => "auto".to_string(),
                HostCpus::List(set) => set.to_list_string(),
            };
            let resolved = match config.isolation.as_ref().map(|i| &i.host_cpus) {
                Some(HostCpus::List(set)) => set.to_list_string(),
                _ => host_cpus.clone(),
            };
            domain.comment(format!(
                "vmrun keeps the host's own work (systemd slices, workqueues, IRQs) on CPUs {resolved} and sets the \
                 vCPUs' CPUs to the {} governor while the VM runs: libvirt needs {} (systemctl set-property \
                 system.slice user.slice init.scope AllowedCPUs={resolved}) and the reverse on `{name} release end`",
                isolation.governor.as_deref().unwrap_or("unchanged"),
                hook("prepare begin")
            ));
            self.metadata.push(
                Element::new("vmrun:isolation")
                    .attr("host-cpus", host_cpus)
                    .attr(
                        "governor",
                        isolation
                            .governor
                            .clone()
                            .unwrap_or_else(|| "keep".to_string()),
                    ),
            );
        }
        for device in config.pci.iter().filter(|d| d.rescan) {
            domain.comment(format!(
                "vmrun removes {} and rescans the PCI bus before binding it to vfio-pci: libvirt needs {} \
                 writing 1 to /sys/bus/pci/devices/{}/remove and /sys/bus/pci/rescan",
                device.address,
                hook("prepare begin"),
                device.address
            ));
            self.metadata.push(
                Element::new("vmrun:pci")
                    .attr("address", device.address.to_string())
                    .attr("rescan", "yes"),
            );
        }
        if !config.qemu.sandbox {
            // libvirt has this once for all domains, in qemu.conf, not per domain.
            domain.comment(
                "vmrun runs this VM's QEMU without its seccomp sandbox: libvirt sets that for every domain in \
                 /etc/libvirt/qemu.conf (seccomp_sandbox = 0)"
                    .to_string(),
            );
            self.metadata
                .push(Element::new("vmrun:qemu").attr("sandbox", "no"));
        }
    }
}
