//! The machine as libvirt describes it: `<cputune>`, `<sysinfo>`, `<os>`, `<features>`,
//! `<cpu>` and `<clock>`.

use super::*;

impl Exporter<'_> {
    pub(super) fn cputune(&mut self, domain: &mut Element) -> Option<Element> {
        let pinning = self.config.pinning.as_ref()?;
        if pinning.auto {
            domain.comment(
                "vmrun picks the vCPUs' host CPUs (whole cores) from the host's topology at every start \
                 (pinning.vcpus = \"auto\"); the <vcpupin> entries below are this host's choice at export",
            );
            self.metadata
                .push(Element::new("vmrun:pinning").attr("vcpus", "auto").attr_if(
                    !self.input.vm.written().cpu.threads_given,
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
    pub(super) fn sysinfo(&mut self) -> Option<Element> {
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

    pub(super) fn os(&mut self, extra: &KnownExtraArgs) -> Element {
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

    pub(super) fn features(&mut self, extra: &KnownExtraArgs) -> Element {
        let cpu = &self.config.cpu;
        let mut features = Element::new("features")
            .child(Element::new("acpi"))
            .child(Element::new("apic"));
        if !cpu.hyperv.is_empty() {
            // `hyperv = "passthrough"` is libvirt's passthrough mode.
            let passthrough = cpu
                .hyperv
                .iter()
                .any(|p| p == crate::model::cpu::HYPERV_PASSTHROUGH);
            let mode = if passthrough { "passthrough" } else { "custom" };
            let mut hyperv = Element::new("hyperv").attr("mode", mode);
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
                    "time" | "stimer-direct" | "passthrough" => {}
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
            if passthrough {
                // libvirt's schema (9.0) allows no child in passthrough mode: the vendor id
                // travels in vmrun's metadata, and libvirt's VM goes without it.
                if let Some(vendor) = &cpu.hv_vendor_id {
                    features.comment(format!(
                        "cpu.hv_vendor_id = \"{vendor}\": libvirt takes no <vendor_id> in \
                         <hyperv mode='passthrough'>; kept in <metadata> for vmrun"
                    ));
                    self.metadata
                        .push(Element::new("vmrun:hyperv").attr("vendor-id", vendor.clone()));
                }
            } else if !names.contains(&"reset") {
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

    pub(super) fn cpu(&mut self) -> Element {
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

    pub(super) fn clock(&mut self, extra: &KnownExtraArgs) -> Element {
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
}
